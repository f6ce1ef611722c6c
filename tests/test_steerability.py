"""The steerability experiment end to end (smoke preset), and its onset/correlation summaries."""

import json
import shutil
from types import SimpleNamespace

import jax
import numpy as np
import pandas as pd
import pytest

from jaxlab import claims, results
from jaxlab.cli import main
from jaxlab.errors import ConfigError
from jaxlab.experiments import steerability as S
from jaxlab.experiments import steerability_bayes as SB
from jaxlab.experiments import steerability_claims as SC
from jaxlab.experiments import steerability_effects as SE
from jaxlab.experiments import steerability_report as SR
from jaxlab.registry import get_experiment
from jaxlab.reporting import ReportContext, finite_median_ci, fmt, spread
from jaxlab.results import metric_name
from jaxlab.tasks import concepts, concepts_bayes
from jaxlab.train import make_train
from jaxlab.train.rundir import fill_added_fields

NAMES = ("joy", "anger", "sadness", "fear")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "steer"
    assert main(["run", "steerability", "--preset", "smoke", "--out", str(out), "--quiet"]) == 0
    return out


def test_smoke_run_writes_probes_checkpoints_summary_and_report(smoke_run):
    cfg = get_experiment("steerability").preset("smoke")
    steps = cfg.train.eval_steps()
    summary = json.loads((smoke_run / "summary.json").read_text())
    L = cfg.model.n_layers
    for run in summary["runs"]:
        final = run["final"]
        for c in NAMES:
            for key in ("sep_onset_step", "steer_onset_step", "steer_effect", "id_score", "separability"):
                assert metric_name(key, concept=c) in final
            for key in ("id_score", "separability"):
                assert 0.0 <= final[metric_name(key, concept=c)] <= 1.0
                assert all(0.0 <= final[metric_name(key, concept=c, layer=l)] <= 1.0 for l in range(L))
            onset = final[metric_name("steer_onset_step", concept=c)]
            assert onset is None or onset in steps
        assert "sep_steer_corr" in final and "steer_effect[concept=joy,layer=1]" in final
        assert "cos[concept_a=joy,concept_b=anger,layer=0]" in final
    df = results.load(smoke_run)
    assert sorted(df.step.unique()) == list(steps)
    grid_steps, values = SR.history_grid(df, "steer_effect", "joy", cfg.model.n_layers)
    assert list(grid_steps) == list(steps) and values.shape == (2, len(steps), L)
    # the concept and the layer are columns of the tidy table, not parts of the metric's name
    assert not df.metric.str.contains(r"\[|_l\d+$|_(?:joy|anger|sadness|fear)$", regex=True).any()
    for m in ("eval_loss", "train_loss", "separability_gain"):
        rows = df[df.metric == m]
        assert len(rows) and rows.layer.isna().all() and rows.concept.isna().all(), m
    for m in ("sep_steer_corr", "sep_steer_diff_corr"):  # per concept, and their mean over concepts (no concept)
        rows = df[df.metric == m]
        assert rows.layer.isna().all() and rows.concept.isna().sum() == 2 and set(rows.concept.dropna()) == set(NAMES)
    for m in S.READINGS + S.STEERINGS:
        rows = df[df.metric == m]
        assert set(rows.concept) == set(NAMES), m
        assert sorted(rows.layer.dropna().unique()) == list(range(L)), m
        per_layer = rows[rows.layer.notna()]
        assert len(per_layer) == len(NAMES) * L * 2 * len(steps)  # concept x layer x run x evaluation
    assert (
        set(df[df.metric == "concept_gap"].concept) == set(NAMES) and df[df.metric == "concept_gap"].layer.isna().all()
    )
    cos = df[df.metric == "cos"]
    pairs = {(a, b) for k, a in enumerate(NAMES) for b in NAMES[k + 1 :]}
    assert set(zip(cos.concept_a, cos.concept_b)) == pairs and sorted(cos.layer.unique()) == list(range(L))
    # every (concept, layer, run, step) value where the name said it was, and the history grid is that table
    for c in NAMES:
        for l in range(L):
            got = df[(df.metric == "id_score") & (df.concept == c) & (df.layer == l)].sort_values(["run", "step"])
            want = [r["final"][metric_name("id_score", concept=c, layer=l)] for r in summary["runs"]]
            np.testing.assert_array_equal(got.value.to_numpy().reshape(2, len(steps))[:, -1], want)
            np.testing.assert_array_equal(
                SR.history_grid(df, "id_score", c, L)[1][:, :, l], got.value.to_numpy().reshape(2, len(steps))
            )
    # the final summaries are recomputed from the table exactly; in the table, the best layer's has no layer
    for run in summary["runs"]:
        sub = df[(df.run == run["run"]) & (df.metric == "steer_effect") & (df.concept == "joy")]
        best = max(sub[(sub.layer == l) & (sub.step == steps[-1])].value.item() for l in range(L))
        assert run["final"]["steer_effect[concept=joy]"] == pytest.approx(best)
        assert sub[sub.layer.isna()].value.tolist() == [pytest.approx(best)]
    # every evaluation's checkpoint is kept (log-spaced series), and re-reading it gives the same ID scores
    found = np.load(smoke_run / "checkpoint_directions.npz")
    assert list(found["steps"]) == list(steps[1:])
    assert found["v"].shape[:4] == (len(steps) - 1, 2, len(NAMES), L)
    _, ids = SR.history_grid(df, "id_score", "anger", cfg.model.n_layers)
    np.testing.assert_allclose(np.moveaxis(found["id_score"][:, :, 1], 0, 1), ids[:, 1:], atol=1e-6)
    report = (smoke_run / "report.md").read_text()
    for name in ("heatmap_id_score.png", "heatmap_steer_effect.png", "sep_vs_steer.png", "direction_stability.png"):
        assert f"![{name}]({name})" in report and (smoke_run / name).is_file()
    assert "jaxlab run steerability --preset smoke" in report
    for title in ("Onsets with confidence intervals", "Steering on generations", "Harm of steering over training"):
        assert f"## {title}" in report


def _legacy_name(metric, params):
    """The name a run directory written before metric parameters gave `metric` at `params`."""
    if "concept_a" in params:
        return f"{metric}_{params['concept_a']}_{params['concept_b']}_l{params['layer']}"
    return f"{metric}_{params['concept']}" + (f"_l{params['layer']}" if "layer" in params else "")


def test_concept_metric_names_and_the_older_forms():
    cases = {
        ("id_score_mean_diff", (("concept", "anger"), ("layer", 3))): (
            "id_score_mean_diff[concept=anger,layer=3]", "id_score_mean_diff_anger_l3"),
        ("sep_onset_step", (("concept", "joy"),)): ("sep_onset_step[concept=joy]", "sep_onset_step_joy"),
        ("sep_steer_diff_corr", (("concept", "fear"),)): ("sep_steer_diff_corr[concept=fear]", "sep_steer_diff_corr_fear"),
        ("cos", (("concept_a", "joy"), ("concept_b", "sadness"), ("layer", 0))): (
            "cos[concept_a=joy,concept_b=sadness,layer=0]", "cos_joy_sadness_l0"),
        ("replicate_steer_effect", (("concept", "sadness"), ("layer", 12))): (
            "replicate_steer_effect[concept=sadness,layer=12]", "replicate_steer_effect_sadness_l12"),
    }  # fmt: skip
    for (metric, params), (new, old) in cases.items():
        assert metric_name(metric, **dict(params)) == new
        assert _legacy_name(metric, dict(params)) == old
        for name in (new, old):
            assert SC.parse_concept_metric(name, NAMES) == (metric, dict(params)), name
    # not per concept: the means over concepts, the claims' statistics, names of other experiments
    for name in ("sep_steer_corr", "separability_gain", "close_pair_steer_onset_gap", "rare_steer_onset_gap",
                 "steer_onset_frac_at_common", "eval_loss", "ari[layer=1]", "ood_eval_loss[alpha=0.5]",
                 "id_score_mean_diff_other_l0", "id_score[concept=joy,layer=0.5]"):  # fmt: skip
        assert SC.parse_concept_metric(name, NAMES) is None, name
    assert SC.parse_concept_metric("separability_gain", ("gain",)) == ("separability", {"concept": "gain"})


def _legacy(df, summary):
    """The tidy table and summary.json of the same runs as a run directory written before metric parameters
    names them (`id_score_joy_l0`: no concept or layer columns)."""
    keys = ["concept", "layer", "concept_a", "concept_b"]

    def name(row):
        params = {k: (int(row[k]) if k == "layer" else row[k]) for k in keys if not pd.isna(row[k])}
        return _legacy_name(row.metric, params) if params else row.metric

    old = df.assign(metric=df.apply(name, axis=1)).drop(columns=keys)

    def rename(final):
        return {_legacy_name(*p) if (p := SC.parse_concept_metric(k, NAMES)) else k: v for k, v in final.items()}

    return old, {**summary, "runs": [{**r, "final": rename(r["final"])} for r in summary["runs"]]}


def test_report_reads_a_run_directory_written_before_metric_parameters(smoke_run, tmp_path):
    cfg = get_experiment("steerability").preset("smoke")
    summary = json.loads((smoke_run / "summary.json").read_text())
    df = results.load(smoke_run)
    old_df, old_summary = _legacy(df, summary)
    assert {"id_score_joy_l1", "cos_joy_anger_l0", "concept_gap_fear", "id_score_joy"} <= set(old_df.metric)
    assert "sep_onset_step_joy" in old_summary["runs"][0]["final"]
    assert "sep_onset_step[concept=joy]" not in old_summary["runs"][0]["final"]
    # the older table and summary, read in the new form
    cols = ["run", "step", "metric", "concept", "layer", "concept_a", "concept_b", "value"]
    kinds = {"concept": "string", "concept_a": "string", "concept_b": "string", "layer": "float64"}
    tidy = lambda d: d[cols].astype(kinds).sort_values(cols[:7]).reset_index(drop=True)
    pd.testing.assert_frame_equal(tidy(SR.concept_form(old_df, NAMES)), tidy(df))
    assert SR.concept_form(df, NAMES) is df
    assert SR.concept_finals(old_summary, NAMES)["runs"] == SR.concept_finals(summary, NAMES)["runs"]
    assert SR.concept_finals(summary, NAMES)["runs"] == summary["runs"]
    L = cfg.model.n_layers
    for c in NAMES:
        for m in ("id_score", "steer_effect"):
            for got, want in zip(SR.history_grid(old_df, m, c, L), SR.history_grid(df, m, c, L)):
                np.testing.assert_array_equal(got, want)
    # the report's sections: the same text and figures from either form (direction stability read from the
    # run's saved checkpoint directions)
    made = []
    for name, (d, s) in {"new": (df, summary), "old": (old_df, old_summary)}.items():
        (tmp_path / name).mkdir()
        shutil.copy(smoke_run / "checkpoint_directions.npz", tmp_path / name)
        ctx = ReportContext(tmp_path / name, cfg, s, d, experiment=get_experiment("steerability"))
        made.append([(x.title, x.body, [f.filename for f in x.figures]) for x in SR.sections(ctx)])
    assert len(made[0]) == len(made[1]) == 10
    for new, old in zip(*made):
        assert new == old, new[0]
    onsets = {title: body for title, body, _ in made[0]}["Onsets of separability and steerability"]
    assert all(f"| {c} |" in onsets for c in NAMES) and "| joy | 0.25 | 0.2 |" in onsets


def test_close_pair_control_pairs_share_nothing_and_their_gaps_match_a_loop(smoke_run):
    """The close pair's control: concepts of the same frequency and strength sharing no feature with it; the
    per-run median |onset gap| over those pairs against a loop, and the report's rows against numpy."""
    quick = get_experiment("steerability").preset("quick").task
    assert SC.distant_pairs(quick) == [(1, 0), (1, 3), (2, 0), (2, 3)]  # anger, sadness vs joy, fear
    table = concepts.feature_table(quick)
    features = [{tuple(f) for f in table[k]} for k in range(len(quick.names))]
    assert len(features[1] & features[2]) == quick.n_shared
    assert all(not features[c] & features[d] for c, d in SC.distant_pairs(quick))
    ablation = get_experiment("steerability").preset("ablation").task  # rare and weak differ from the twins
    assert SC.distant_pairs(ablation) == [(3, 0), (4, 0)]
    markers = concepts.Config(
        language="markers", names=("a", "b", "c", "d"), freqs=(0.3, 0.3, 0.3, 0.1), strengths=(0.2, 0.2, 0.2, 0.2),
        n_markers=4, close_pair=(0, 2), n_shared=2,
    )  # fmt: skip
    assert SC.distant_pairs(markers) == [(0, 1), (2, 1)]  # d is rarer
    table = concepts.marker_table(markers)
    assert len(set(table[0]) & set(table[2])) == 2
    assert all(not set(table[c]) & set(table[d]) for c, d in SC.distant_pairs(markers))
    assert (
        SC.distant_pairs(SimpleNamespace(names=("a", "b"), freqs=(0.3, 0.3), strengths=(0.2, 0.2), close_pair=())) == []
    )
    # onset steps to evaluation indices; a step off the grid is an error
    grid = (0, 250, 500, 1000)
    np.testing.assert_array_equal(SC.onset_indices(np.array([500.0, np.nan, 0.0, 1000.0]), grid), [2, np.nan, 0, 3])
    with pytest.raises(ValueError, match="evaluation grid"):
        SC.onset_indices(np.array([300.0]), grid)
    # the median over pairs of the censored |gap|, against a loop (never: one past the last evaluation)
    rng = np.random.default_rng(3)
    n_evals, pairs = 6, [(1, 0), (1, 3), (2, 0), (2, 3)]
    onsets = rng.integers(0, n_evals, size=(4, 9)).astype(float)
    onsets[rng.random(onsets.shape) < 0.3] = np.nan
    onsets[:, 0] = np.nan  # no pair counts in run 0
    got = SC.median_pair_absgap(onsets, pairs, n_evals)
    for r in range(onsets.shape[1]):
        gaps = []
        for c, d in pairs:
            a, b = onsets[c, r], onsets[d, r]
            if not (np.isnan(a) and np.isnan(b)):
                gaps.append(abs((n_evals if np.isnan(a) else a) - (n_evals if np.isnan(b) else b)))
        want = np.median(gaps) if gaps else np.nan
        np.testing.assert_equal(got[r], want)
    assert np.isnan(got[0]) and np.isnan(SC.median_pair_absgap(onsets, [], n_evals)).all()
    # the report's rows, recomputed from the summary (the smoke runs' onsets replaced by chosen ones on its grid)
    cfg = get_experiment("steerability").preset("smoke")
    summary = json.loads((smoke_run / "summary.json").read_text())
    steps = list(cfg.train.eval_steps())
    chosen = {
        "joy": (steps[3], steps[1]),
        "anger": (steps[1], None),
        "sadness": (steps[1], steps[2]),
        "fear": (None, steps[0]),
    }
    for r, run in enumerate(summary["runs"]):
        for c, onset in chosen.items():
            run["final"][metric_name("steer_onset_step", concept=c)] = onset[r]
        a, b = (np.nan if v is None else steps.index(v) for v in (chosen["anger"][r], chosen["sadness"][r]))
        run["final"]["close_pair_steer_onset_absgap"] = float(
            np.abs(SC.censored_gap(np.array([a]), np.array([b]), len(steps)))[0]
        )
    ctx = ReportContext(smoke_run, cfg, summary, results.load(smoke_run), experiment=get_experiment("steerability"))
    body = SE.onset_ci_section(ctx).body
    idx = np.array([[np.nan if v is None else steps.index(v) for v in chosen[c]] for c in cfg.task.names])
    distant = SC.median_pair_absgap(idx, SC.distant_pairs(cfg.task), len(steps))
    n = len(steps)  # never: one past the last evaluation
    np.testing.assert_array_equal(distant, [np.median([3 - 1, n - 1, 3 - 1, n - 1]), np.median([n - 1, n, 2 - 1, 2])])
    close = np.array([0.0, n - 2])
    for label, values in (("per run the median over anger-joy", distant), ("minus the control's", close - distant)):
        row = next(line for line in body.splitlines() if label in line)
        med = finite_median_ci(values)
        want = f"{fmt(med[0])} [{fmt(med[1])}, {fmt(med[2])}]"
        assert row.endswith(f"| {want} |"), (row, want)


CLAIM_FIELDS = {
    "id", "claim", "paper_ref", "paper_value", "statistic", "control", "median", "ci_low", "ci_high", "n_seeds",
    "rule", "verdict", "reason",
}  # fmt: skip


def test_smoke_summary_has_the_claims_and_deviations(smoke_run):
    cfg = get_experiment("steerability").preset("smoke")
    summary = json.loads((smoke_run / "summary.json").read_text())
    entries = summary["claims"]
    assert [c["id"] for c in entries] == [c.id for c in SC.CLAIMS]
    for entry in entries:
        assert CLAIM_FIELDS <= set(entry), CLAIM_FIELDS - set(entry)
        assert claims.check(entry) is None
    by_id = {c["id"]: c for c in entries}
    # decided by the preset: every concept of the co-occurrence language has the same frequency
    assert by_id["rare_concept_later"]["verdict"] == "untested" and "frequency" in by_id["rare_concept_later"]["reason"]
    first_tenth = by_id["steerability_emerges_after_first_tenth"]  # vacuous when steerability never emerges
    assert first_tenth["n_seeds"] == len(cfg.sweep.seeds) or "never emerges" in first_tenth["reason"]
    for name in ("steerability_emerges_before_last_tenth", "early_steering_hurts"):
        assert by_id[name]["n_seeds"] == len(cfg.sweep.seeds)  # the per-run statistics are written
    # the close pair's steering scores count the same tokens for its shared pairs: one measurement, untested
    close = by_id["close_concepts_distinct_steer_onsets"]
    assert close["verdict"] == "untested" and "one measurement" in close["reason"]
    # the smoke stimuli are separable by their count of pair starts alone: the separability claims are untested
    assert SB.count_separability(cfg).max() >= cfg.probe.sep_threshold
    for name in (
        "close_concepts_distinct_sep_onsets",
        "separability_rises",
        "separability_correlates_with_steerability",
    ):
        assert by_id[name]["verdict"] == "untested" and "count of pair starts" in by_id[name]["reason"], name
    for run in summary["runs"]:  # null where neither concept of a pair reaches its threshold in 40 steps
        keys = (
            "close_pair_steer_onset_gap",
            "close_pair_sep_onset_gap",
            "close_pair_steer_onset_absgap",
            "early_steer_harm",
            "late_steer_harm",
            "early_steer_harm_excess",
            "steer_onset_gap_vs_first[concept=fear]",
            "gen_effect[concept=joy]",
            "gen_effect[concept=joy,layer=1]",
        )
        assert set(keys) <= set(run["final"])
        final = run["final"]
        assert final["early_steer_harm_excess"] == pytest.approx(final["early_steer_harm"] - final["late_steer_harm"])
        for c in NAMES:  # rates per sampled token: the steered minus the unsteered rate is within [-1, 1]
            rate = final[metric_name("gen_rate_unsteered", concept=c)]
            assert 0.0 <= rate <= 1.0 and -rate <= final[metric_name("gen_effect", concept=c)] <= 1.0 - rate
    devs = summary["deviations"]
    assert devs and all(isinstance(d, str) and d for d in devs)
    assert devs == SC.deviations(cfg) and any("Amber" in d for d in devs)


def test_claim_statistics_of_from_history_match_numpy():
    """The per-run statistics of the claims, from a hand-made history, against NumPy."""
    steps = np.array([0, 1, 3, 10, 30, 100])
    names, L = ("joy", "anger", "sadness", "fear"), 1
    steer = {  # [R=2, n]; steer_threshold 0.2
        "joy": [[0.0, 0.1, 0.2, 0.3, 0.4, 0.5], [0.0, 0.0, 0.0, 0.3, 0.4, 0.5]],
        "anger": [[0.0, 0.0, 0.0, 0.0, 0.3, 0.5], [0.0, 0.0, 0.0, 0.3, 0.4, 0.5]],
        "sadness": [[0.0, 0.0, 0.0, 0.0, 0.0, 0.1], [0.0, 0.0, 0.3, 0.3, 0.4, 0.5]],
        "fear": [[0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]],
    }
    sep = {c: np.linspace(0.5, 0.6 + 0.1 * k, 6)[None].repeat(2, 0) for k, c in enumerate(names)}
    harm = {
        c: np.array([[0.0, 0.4, 0.3, 0.2, 0.1, 0.1], [0.0, 0.1, 0.1, 0.3, 0.2, 0.3]]) * (k + 1)
        for k, c in enumerate(names)
    }
    history = {}
    for c in names:
        history[metric_name("steer_effect", concept=c, layer=0)] = np.asarray(steer[c])
        history[metric_name("separability", concept=c, layer=0)] = sep[c]
        history[metric_name("id_score", concept=c, layer=0)] = sep[c]
        history[metric_name("steer_loss_delta", concept=c, layer=0)] = harm[c]
        history[metric_name("gen_effect", concept=c, layer=0)] = np.asarray(steer[c]) / 2
    task = SimpleNamespace(names=names, freqs=(0.4, 0.25, 0.25, 0.05), close_pair=(1, 2))
    cfg = SimpleNamespace(
        probe=S.SteerabilityProbe(), model=SimpleNamespace(n_layers=L), task=task, train=SimpleNamespace(steps=100)
    )
    out = S.from_history(SimpleNamespace(cfg=cfg), history, steps)
    n = len(steps)

    def onset_index(row):  # the first evaluation whose value reaches 0.2, else one past the last
        hits = np.flatnonzero(np.asarray(row) >= 0.2)
        return hits[0] if hits.size else np.nan

    idx = {c: np.array([onset_index(r) for r in steer[c]]) for c in names}
    # joy, anger, sadness are the common concepts (fear is rare): the onset interval (previous evaluation,
    # onset evaluation] / 100, median over them; never reached: (last evaluation, 1.0]
    at, before = [], []
    for c in names[:3]:
        at.append([1.0 if np.isnan(i) else steps[int(i)] / 100 for i in idx[c]])
        before.append([steps[-1] / 100 if np.isnan(i) else (steps[int(i) - 1] / 100 if i > 0 else 0.0) for i in idx[c]])
    np.testing.assert_allclose(out["steer_onset_frac_at_common"], np.median(at, axis=0))
    np.testing.assert_allclose(out["steer_onset_frac_before_common"], np.median(before, axis=0))
    np.testing.assert_allclose(out["steer_onset_frac_at_common"], [0.3, 0.1])
    np.testing.assert_allclose(out["steer_onset_frac_before_common"], [0.1, 0.03])
    # an onset at the first evaluation: lower end 0; never: (last evaluation, 1.0]
    low, high = SC.onset_interval(np.array([[0.0], [np.nan], [2.0]]), np.array([0, 10, 16]), 20)
    np.testing.assert_allclose(low, [np.median([0.0, 0.8, 0.5])])
    np.testing.assert_allclose(high, [np.median([0.0, 1.0, 0.8])])
    np.testing.assert_allclose(out["close_pair_steer_onset_gap"], [4 - n, 3 - 2])  # sadness never in run 0
    np.testing.assert_array_equal(out["rare_steer_onset_gap"], [n - 2, n - 3])  # fear never
    np.testing.assert_array_equal(out["close_pair_sep_onset_gap"], [np.nan, np.nan])  # neither reaches 0.9
    np.testing.assert_allclose(out["close_pair_steer_onset_absgap"], [n - 4, 1])
    for c in names[1:]:  # against the first concept, censored alike
        want = [(n if np.isnan(a) else a) - (n if np.isnan(b) else b) for a, b in zip(idx[c], idx["joy"])]
        np.testing.assert_allclose(out[metric_name("steer_onset_gap_vs_first", concept=c)], want)
    # harm of steering: early evaluations are 0 < step <= 10 (steps 1, 3, 10); mean over concepts, layer 0
    mean_harm = np.mean([harm[c] for c in names], axis=0)
    np.testing.assert_allclose(out["early_steer_harm"], mean_harm[:, 1:4].mean(1))
    np.testing.assert_allclose(out["late_steer_harm"], mean_harm[:, -1])
    np.testing.assert_allclose(out["early_steer_harm_excess"], mean_harm[:, 1:4].mean(1) - mean_harm[:, -1])
    np.testing.assert_allclose(out["gen_effect[concept=anger]"], np.asarray(steer["anger"])[:, -1] / 2)
    gains = np.mean([sep[c][:, -1] - sep[c][:, 0] for c in names], axis=0)
    np.testing.assert_allclose(out["separability_gain"], gains)
    # the helpers themselves
    np.testing.assert_array_equal(
        SC.censored_gap(np.array([1.0, np.nan, np.nan]), np.array([3.0, 2.0, np.nan]), 5), [-2.0, 3.0, np.nan]
    )
    assert SC.rare_concepts(task) == (3,) and SC.common_concepts(task) == (0, 1, 2)
    assert SC.rare_concepts(SimpleNamespace(names=("a", "b"), freqs=(0.2, 0.2))) == ()


def test_onsets_reach_the_threshold_and_correlation_matches_numpy():
    """from_history's onsets count a value equal to the threshold (>=, "reaches"); r per run."""
    steps = np.array([0, 1, 3, 10, 30, 100])
    L, names = 2, ("joy", "fear")
    sep = np.array([[0.1, 0.2, 0.6, 0.9, 0.9, 0.95], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])  # best layer 0
    steer = np.array([[0.0, 0.1, 0.1, 0.2, 0.3, 0.3], [0.0, 0.0, 0.0, 0.0, 0.5, 0.5]])
    history = {}
    for c in names:
        for name, v in (
            ("separability", sep),
            ("steer_effect", steer),
            ("id_score", sep),
            ("steer_loss_delta", steer),
            ("gen_effect", steer),
        ):
            history[metric_name(name, concept=c, layer=0)] = v
            history[metric_name(name, concept=c, layer=1)] = v * 0.5
    task = SimpleNamespace(names=names, freqs=(0.4, 0.05), close_pair=())
    cfg = SimpleNamespace(
        probe=S.SteerabilityProbe(), model=SimpleNamespace(n_layers=L), task=task, train=SimpleNamespace(steps=100)
    )
    out = S.from_history(SimpleNamespace(cfg=cfg), history, steps)
    np.testing.assert_array_equal(out["sep_onset_step[concept=joy]"], [10.0, np.nan])  # 0.9 reaches 0.9
    np.testing.assert_array_equal(out["steer_onset_step[concept=joy]"], [10.0, 30.0])  # 0.2 reaches 0.2
    ref = np.corrcoef(0.75 * sep[0], 0.75 * steer[0])[0, 1]  # the layer means
    assert out["sep_steer_corr[concept=joy]"][0] == pytest.approx(ref, rel=1e-10)
    assert np.isnan(out["sep_steer_corr[concept=joy]"][1])  # a constant run has no correlation
    # the claim's statistic: r of the first differences over the evaluations
    ref = np.corrcoef(np.diff(0.75 * sep[0]), np.diff(0.75 * steer[0]))[0, 1]
    assert out["sep_steer_diff_corr[concept=joy]"][0] == pytest.approx(ref, rel=1e-10)
    assert np.isnan(out["sep_steer_diff_corr[concept=joy]"][1])
    np.testing.assert_allclose(out["sep_steer_diff_corr"], [ref, np.nan])  # mean over concepts, NaN left out
    short = S.diff_corr_rows(sep[:, :3], steer[:, :3])  # two differences: r would be +-1 by construction
    assert np.isnan(short).all()
    np.testing.assert_allclose(out["separability[concept=fear]"], [0.95, 0.0])


def test_untested_reasons_follow_the_config():
    cfg = get_experiment("steerability").preset("smoke")
    by_id = {c.id: c for c in SC.CLAIMS}
    steer, sep = by_id["close_concepts_distinct_steer_onsets"], by_id["close_concepts_distinct_sep_onsets"]
    # the mirror pair's steering scores count the same partner tokens for the pairs it shares (one measurement):
    # untested while it shares any, testable with none shared; what makes separability untested is its stimuli,
    # which the count of pair starts separates (`count_separability`), and a threshold above that count lifts it
    counts = SB.count_separability(cfg)
    reason = steer.untested(cfg)
    assert "one measurement" in reason and f"{cfg.task.n_shared} of the {cfg.task.n_markers} start tokens" in reason
    assert steer.untested(cfg.set("task.n_shared", "0")) is None
    assert "count of pair starts" in sep.untested(cfg)
    above = cfg.set("probe.sep_threshold", str(min(1.0, counts.max() + 0.01)))
    assert sep.untested(above) is None and by_id["separability_rises"].untested(above) is None
    task = cfg.task
    i, j = task.close_pair
    weaker = list(task.strengths)
    weaker[j] = weaker[i] / 2
    unequal = cfg.set("task.strengths", ",".join(map(str, weaker)))
    assert "strength" in steer.untested(unequal) and "strength" in sep.untested(unequal)
    markers = cfg.set("task.language", "markers").set("task.freqs", "0.4,0.25,0.25,0.05")
    markers = markers.set("task.strengths", "0.15,0.15,0.08,0.15")  # the language of earlier runs
    assert "strength" in steer.untested(markers) and "frequency" in by_id["rare_concept_later"].untested(markers)
    same = markers.set("task.strengths", "0.15,0.15,0.15,0.15")  # the markers language: shared marker tokens
    assert "markers, 3 of whose 4 are the same tokens" in steer.untested(same)
    corr = by_id["separability_correlates_with_steerability"]
    assert corr.untested(above) is None and "differences" in corr.untested(above.set("train.n_evals", "2"))
    early = by_id["early_steering_hurts"]
    assert early.untested(cfg) is None
    late_only = cfg.set("train.eval_schedule", "linear").set("train.eval_every", "20")  # steps 0, 20, 40: none early
    assert SC.early_evaluations(np.asarray(late_only.train.eval_steps()), 40).sum() == 0
    assert "no evaluation" in early.untested(late_only)


def test_a_config_written_before_the_language_field_reads_as_the_marker_language():
    cfg = get_experiment("steerability").preset("smoke")
    old = json.loads(json.dumps(cfg.to_dict()))
    del old["task"]["language"]
    back = get_experiment("steerability").config_from_dict(old)
    assert back.task.language == "markers" and back.task.freqs == cfg.task.freqs
    markers = cfg.set("task.language", "markers")
    assert fill_added_fields(old, markers)["task"]["language"] == "markers"  # such a run resumes as it ran
    assert "language" not in fill_added_fields(old, cfg)["task"]  # not as the co-occurrence language


def test_censored_onset_intervals_count_never_as_later_than_every_checkpoint():
    x = np.array([10.0, np.nan, 30.0, 30.0, np.nan])
    assert SE.censored_median_ci(x, 1e9) == claims.bootstrap_median_ci([10.0, 1e9, 30.0, 30.0, 1e9])
    assert SE.censored_median_ci(x, 1e9)[0] == 30.0  # two of five never: the median is still reached
    assert SE._cell((30.0, 10.0, 1e9), 1e9) == "30 [10, never]"
    assert np.isnan(finite_median_ci(np.array([np.nan]))[0])


def test_early_harm_margin_and_a_never_emerging_onset():
    runs = [
        {"seed": 0, "final": {"early_steer_harm": 0.3, "late_steer_harm": 0.1}},  # hurts, more than late: 0.2
        {"seed": 1, "final": {"early_steer_harm": 0.05, "late_steer_harm": -0.9}},  # late lowers the loss: 0.05
        {"seed": 2, "final": {"early_steer_harm": -0.1, "late_steer_harm": -0.5}},  # early lowers it too: -0.1
        {"seed": 3, "final": {"early_steer_harm": None, "late_steer_harm": 0.1}},
    ]
    got = SC.early_harm_margin(runs, {})
    np.testing.assert_allclose(got[:3], [0.2, 0.05, -0.1])
    assert np.isnan(got[3])
    bracket = lambda lo, hi: [
        {"seed": s, "final": {"steer_onset_frac_before_common": a, "steer_onset_frac_at_common": b}}
        for s, (a, b) in enumerate(zip(lo, hi))
    ]
    interval = SC.emerged_bracket("steer_onset_frac_before_common", "steer_onset_frac_at_common")
    with pytest.raises(claims.NotApplicable, match="never emerges"):
        interval(bracket([1.0, 1.0, 0.2], [1.0, 1.0, 0.3]), {})
    plain = claims.bracketed("steer_onset_frac_before_common", "steer_onset_frac_at_common")
    emerged = bracket([0.1, 0.2, 1.0], [0.2, 0.3, 1.0])
    assert interval(emerged, {}) == plain(emerged, {})


def test_direction_stability_matches_numpy_cosines():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(4, 2, 3, 2, 5))  # [C, R, K, L, D]
    out = SR.direction_stability(v)
    cos = lambda a, b: np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    np.testing.assert_allclose(out["successive"], cos(v[1:], v[:-1]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["to_final"], cos(v, v[-1:]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["to_final"][-1], 1.0, atol=1e-6)
    assert out["successive"].shape == (3, 2, 3, 2)


def test_bad_probe_settings_are_refused(capsys):
    cfg = get_experiment("steerability").preset("smoke")
    with pytest.raises(ConfigError, match=r"probe\.alpha_eval"):
        cfg.set("probe.alpha_eval", "0.3")
    with pytest.raises(ConfigError, match=r"probe\.positions"):
        cfg.set("probe.positions", "middle")
    code = main(["run", "steerability", "--preset", "smoke", "--set", "probe.direction=svd", "--out", "/tmp/never"])
    assert code == 2 and "probe.direction" in capsys.readouterr().err


def test_learning_reference_is_the_bayes_gap_on_the_runs_own_held_out_stimuli(smoke_run):
    cfg = get_experiment("steerability").preset("smoke").resolve()
    n_fit = cfg.probe.n_fit
    data = jax.jit(make_train(cfg, eval_data=S.eval_data).make_eval_batch)()  # as the training program draws it
    on, off = SB.heldout_stimuli(cfg)
    np.testing.assert_array_equal(on, np.asarray(data["on"])[:, n_fit:])
    np.testing.assert_array_equal(off, np.asarray(data["off"])[:, n_fit:])
    gaps = SB.bayes_gaps(cfg)
    for k in range(len(NAMES)):
        mass_on = concepts_bayes.next_token_probs(cfg.task, on[k])
        mass_off = concepts_bayes.next_token_probs(cfg.task, off[k])
        mask = np.asarray(data["masks"])[k, n_fit : on.shape[1] + n_fit]  # the run's own target tokens (on members)
        mask_off = np.asarray(data["masks"])[k, on.shape[1] + 2 * n_fit : 2 * (on.shape[1] + n_fit)]
        want = np.mean((mass_on * mask).sum(-1) - (mass_off * mask_off).sum(-1))
        assert gaps[k] == pytest.approx(want) and 0.1 < gaps[k] < 1.0
    report = (smoke_run / "report.md").read_text()
    section = report.split("## How much of each concept is learned")[1].split("\n## ")[0]
    summary = json.loads((smoke_run / "summary.json").read_text())
    for k, c in enumerate(NAMES):
        gap = [r["final"][metric_name("concept_gap", concept=c)] for r in summary["runs"]]
        ratio = np.asarray(gap) / gaps[k]
        row = f"| {c} | {spread(gap)} | {gaps[k]:.4g} | {spread(ratio)} |"
        assert row in section, (row, section)
    assert SB.bayes_gaps(cfg.set("task.language", "markers")) is None
    # the pair-count control: the best threshold on the number of start tokens before the last one
    counts = SB.count_separability(cfg)
    starts = set(int(a) for a in concepts_bayes.concepts.start_tokens(cfg.task))
    for k in range(len(NAMES)):
        n_on = [sum(int(v) in starts for v in x[:-1]) for x in on[k]]
        n_off = [sum(int(v) in starts for v in x[:-1]) for x in off[k]]
        best = max((np.mean([n > t for n in n_on]) + np.mean([n <= t for n in n_off])) / 2 for t in range(40))
        assert counts[k] == pytest.approx(best) and 0.5 <= counts[k] <= 1.0
        assert f"{counts[k]:.4g} |" in section
    assert SB.count_separability(cfg.set("task.language", "markers")) is None
