"""latent-ambiguity end to end: summary keys, metrics recomputed in NumPy, languages named by grid index."""

import json
import types

import jax
import numpy as np
import pytest

from jaxlab.cli import main
from jaxlab.config import SweepConfig
from jaxlab.errors import ConfigError
from jaxlab.experiments import latent_ambiguity as la
from jaxlab.models import run_with_cache
from jaxlab.registry import get_experiment, load_run_group
from jaxlab.tasks import latent
from jaxlab.train import plan_groups
from jaxlab.train.rundir import build_summary

EXP = get_experiment("latent-ambiguity")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "latent"
    assert main(["run", "latent-ambiguity", "--preset", "smoke", "--out", str(out), "--quiet"]) == 0
    return out


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_kl(logp, logq):
    """sum_v p (log p - log q), 0 log 0 = 0."""
    p = np.exp(logp)
    with np.errstate(invalid="ignore"):  # p = 0 where log p = -inf: masked out
        return np.where(p > 0, p * (np.where(p > 0, logp, 0) - logq), 0).sum(-1)


def test_summary_has_the_issue_keys_and_metrics_match_numpy(smoke_run):
    summary = json.loads((smoke_run / "summary.json").read_text())
    cfg = EXP.preset("smoke")
    M, L = cfg.task.n_messages, cfg.task.message_len
    for run in summary["runs"]:
        final = run["final"]
        for m in range(1, M):
            for name in ("kl_bayes", "kl_truth", "bayes_kl_truth"):
                assert f"{name}_m{m}_a0" in final
        assert 0.0 <= final["posterior_probe_acc_a0"] <= 1.0
    ref = summary["reference"]
    assert {"epsilon_a0", "epsilon_m2_a0", "ambiguity_a0"} <= set(ref) and 0.0 < ref["epsilon_a0"] < 1.0
    assert ref["epsilon_m2_a0"] < ref["epsilon_a0"]
    assert "## Languages" in (smoke_run / "report.md").read_text()
    for png in ("icl_curves.png", "emergence.png", "kl_by_position.png"):
        assert (smoke_run / png).is_file()

    # recompute every KL of run 0 from the checkpointed parameters, position by position
    group = load_run_group(smoke_run, 0)
    train = group.train
    params = jax.tree_util.tree_map(lambda x: x[0], group.state.params)
    data = jax.device_get(jax.jit(train.make_eval_batch)())
    hook = f"blocks.{cfg.model.n_layers - 1}.hook_resid_post"
    logits, cache = jax.jit(lambda p, x: run_with_cache(train.model, p, x, names=[hook]))(params, data["inputs"])
    logq = np_log_softmax(np.asarray(logits, np.float64))
    kl_b = np_kl(np.asarray(data["bayes_logp"], np.float64), logq)
    kl_t = np_kl(np.asarray(data["true_logp"], np.float64), logq)
    floor = np_kl(np.asarray(data["true_logp"], np.float64), np.asarray(data["bayes_logp"], np.float64))
    final = summary["runs"][0]["final"]
    for m in range(M):
        cols = [m * (L + 1) + j for j in range(L)]  # the delimiter before message m and its letters but the last
        assert final[f"kl_bayes_m{m}_a0"] == pytest.approx(kl_b[:, cols].mean(), rel=2e-3, abs=1e-6)
        assert final[f"kl_truth_m{m}_a0"] == pytest.approx(kl_t[:, cols].mean(), rel=2e-3, abs=1e-6)
        assert final[f"bayes_kl_truth_m{m}_a0"] == pytest.approx(floor[:, cols].mean(), rel=2e-3, abs=1e-6)
    for j in range(L):
        cols = [m * (L + 1) + j for m in range(1, M)]
        assert final[f"kl_truth_pos{j}_a0"] == pytest.approx(kl_t[:, cols].mean(), rel=2e-3, abs=1e-6)

    # the posterior probe, refit with NumPy ridge (float64) on the same split
    letters = [m * (L + 1) + j for m in range(M) for j in range(L)]
    x = np.asarray(cache[hook], np.float64)[:, letters]
    y = np.asarray(data["bayes_post"], np.float64)[:, letters]
    half = x.shape[0] // 2
    xtr, ytr = x[:half].reshape(-1, x.shape[-1]), y[:half].reshape(-1, y.shape[-1])
    xte, yte = x[half:].reshape(-1, x.shape[-1]), y[half:].reshape(-1, y.shape[-1])
    xm, ym = xtr.mean(0), ytr.mean(0)
    w = np.linalg.solve(
        (xtr - xm).T @ (xtr - xm) + cfg.probe.ridge_lam * np.eye(x.shape[-1]), (xtr - xm).T @ (ytr - ym)
    )
    acc = np.mean(np.argmax((xte - xm) @ w + ym, -1) == np.argmax(yte, -1))
    assert final["posterior_probe_acc_a0"] == pytest.approx(acc, abs=3 / len(xte))


def test_languages_are_indexed_by_grid_position_and_summarized_once():
    cfg = EXP.preset("quick")
    groups = plan_groups(cfg)
    values = dict(cfg.sweep.grid)["task.ambiguity"]
    assert len(groups) == len(values) * len(dict(cfg.sweep.grid)["model.n_layers"])
    for g in groups:
        assert la.ambiguity_index(g.cfg) == values.index(g.cfg.task.ambiguity)
    # tiny languages keep after_sweep cheap; one outcome per (language, size) pair
    tiny = EXP.preset("smoke").derive("t", sweep=SweepConfig(seeds=(0,), grid=(("task.ambiguity", (0.0, 0.3)),)))
    outcomes = [types.SimpleNamespace(group=g) for g in plan_groups(tiny)]
    cross = la.after_sweep(outcomes).reference
    assert cross["epsilon_a0"] == pytest.approx(0.0, abs=1e-6) and cross["epsilon_a1"] > 0.05
    parts = [{"label": g.group.label, "runs": [], "compile_s": 0.0, "reference": {}} for g in outcomes]
    parts.append({"label": "", "runs": [], "compile_s": 0.0, "reference": cross})
    summary = build_summary(tiny, parts, 0.0, None)
    assert set(summary["reference"]) == set(cross)  # no "[label]" suffixes


def test_bad_probe_settings_name_the_field():
    cfg = EXP.preset("smoke")
    with pytest.raises(ConfigError, match="probe.probe_layer"):
        EXP.make_train(cfg.set("probe.probe_layer", 3))
    with pytest.raises(ConfigError, match="probe.eval_prompts"):
        cfg.set("probe.eval_prompts", "mixed")
    assert latent.Config().seq_len == 6 * 22  # Jiang's 21-letter messages, 6 per sequence
