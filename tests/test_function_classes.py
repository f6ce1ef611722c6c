"""function-classes end to end (smoke: linear and sparse linear, 2 seeds) against NumPy, and its claims'
statistics on hand-made run records."""

import math

import jax
import numpy as np
import pytest
from _runs import run_cfg

from jaxlab import claims, results
from jaxlab.config import SweepConfig
from jaxlab.errors import ConfigError
from jaxlab.experiments import function_classes as fcx
from jaxlab.experiments import function_classes_claims as fcc
from jaxlab.experiments import function_classes_cross as fcx_cross
from jaxlab.probes import prefix_relu_net as prn
from jaxlab.probes import prefix_tree as pt
from jaxlab.registry import get_experiment
from jaxlab.reporting import fmt
from jaxlab.tasks import function_classes as fc

EXP = get_experiment("function-classes")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    cfg = EXP.preset("smoke")
    return cfg, run_cfg(cfg, tmp_path_factory.mktemp("runs") / "fc", progress=False)


@pytest.mark.timeout(300)
def test_model_curves_equal_numpy_and_baselines_are_columns(smoke):
    cfg, result = smoke
    df = results.load(result.run_dir)
    N, d = cfg.task.n_context, cfg.task.n_dims
    assert not df.metric.str.contains(r"\[").any()  # every parameter is a column
    last = df.step.max()
    for outcome in result.groups:
        train, params = outcome.train, outcome.state.params
        batch = train.make_eval_batch()
        # independent: the model's outputs at the x-tokens against f(x_i), in NumPy float64
        out = np.asarray(jax.jit(jax.vmap(train.apply, in_axes=(0, None)))(params, batch.inputs), np.float64)
        y = np.asarray(batch.inputs, np.float64)[:, 1::2, d]  # the y-tokens carry f(x_i) in the last coordinate
        norm = fc.error_normalizer(train.cfg.task)
        want_RN = ((out[:, :, 0::2, 0] - y[None]) ** 2).mean(axis=1) / norm
        cls = train.cfg.task.function_class
        for j, run in enumerate(outcome.runs):
            got = df[(df.metric == "nse") & (df.run == run.run) & (df.step == last)].sort_values("n")
            assert got.n.tolist() == list(range(N)) and got.task__function_class.eq(cls).all()
            np.testing.assert_allclose(got.value, want_RN[j], rtol=2e-4, atol=1e-6)
        base = df[(df.metric == "baseline_nse") & (df.run == outcome.runs[0].run)]
        assert set(base.algorithm) == set(fcx.baselines(train.cfg))
        ls = base[base.algorithm == "least_squares"].sort_values("n").value.to_numpy()
        assert ls[0] == pytest.approx(np.mean(y[:, 0] ** 2) / norm, rel=1e-5)  # nothing seen: predicts 0
        if cls == "linear":
            assert np.all(ls[d:] < 1e-4)  # noise-free: exact once n >= d
    assert df[df.metric == "eval_loss"].n.isna().all()
    report = (result.run_dir / "report.md").read_text()
    assert "## Error against the number of in-context examples" in report
    assert (result.run_dir / "error_curves.png").exists()


def test_smoke_claims_and_their_reasons(smoke):
    cfg, result = smoke
    by_id = {c["id"]: c for c in result.summary["claims"]}
    assert set(by_id) == {c.id for c in fcc.CLAIMS}
    assert by_id["every_class_beats_averaging_and_knn"]["verdict"] == "untested"
    assert "missing noisy_linear, decision_tree, relu_2nn" in by_id["every_class_beats_averaging_and_knn"]["reason"]
    for cid in ("linear_close_to_least_squares", "linear_beats_averaging_and_knn", "sparse_below_least_squares"):
        assert by_id[cid]["n_seeds"] == 2  # measured, too few seeds to decide
    runs = result.summary["runs"]
    d = cfg.task.n_dims
    linear = sorted((r for r in runs if r["hparams"]["task.function_class"] == "linear"), key=lambda r: r["seed"])
    assert by_id["linear_close_to_least_squares"]["median"] == pytest.approx(
        np.median([r["final"][f"nse[n={2 * d}]"] for r in linear]), rel=1e-9
    )


def _run(seed, cls, d, nse, base):
    final = {"n_dims": float(d)}
    final.update({f"nse[n={n}]": v for n, v in enumerate(nse)})
    for algorithm, curve in base.items():
        final.update({f"baseline_nse[algorithm={algorithm},n={n}]": v for n, v in enumerate(curve)})
    return {"seed": seed, "hparams": {"task.function_class": cls}, "status": "ok", "final": final}


def test_claim_statistics_against_numpy():
    rng = np.random.default_rng(0)
    d, N = 3, 7
    algorithms = ("least_squares", "knn", "averaging")
    records, model, base = [], {}, {}
    for cls in fcc.CLASSES:
        for seed in range(6):
            model[cls, seed] = rng.uniform(0, 1, N)
            base[cls, seed] = {a: rng.uniform(0, 1, N) for a in algorithms}
            records.append(_run(seed, cls, d, model[cls, seed], base[cls, seed]))
    seeds = range(6)
    got = fcc.linear_at_2d(records, {})
    np.testing.assert_allclose(got, [model["linear", s][2 * d] for s in seeds])
    got = fcc.linear_minus_simple_baselines(records, {})
    want = [model["linear", s][6] - min(base["linear", s]["averaging"][6], base["linear", s]["knn"][6]) for s in seeds]
    np.testing.assert_allclose(got, want)
    got = fcc.sparse_minus_least_squares(records, {})
    np.testing.assert_allclose(got, [model["sparse_linear", s][2] - base["sparse_linear", s]["least_squares"][2]
                                     for s in seeds])  # fmt: skip
    got = fcc.worst_class_minus_simple_baselines(records, {})
    want = [
        max(model[c, s][N - 1] - min(base[c, s]["averaging"][N - 1], base[c, s]["knn"][N - 1]) for c in fcc.CLASSES)
        for s in seeds
    ]
    np.testing.assert_allclose(got, want)
    # a seed without every class is dropped, not compared over fewer classes
    partial = [r for r in records if not (r["seed"] == 0 and r["hparams"]["task.function_class"] == "relu_2nn")]
    assert len(fcc.worst_class_minus_simple_baselines(partial, {})) == 5
    # two runs of one class and seed: the claim does not say which point it reads
    with pytest.raises(claims.NotApplicable):
        fcc.linear_at_2d([*records, records[0]], {})


def test_which_configs_can_test_which_claim():
    by_id = {c.id: c for c in fcc.CLAIMS}
    quick = EXP.preset("quick")
    assert all(c.untested(quick) is None for c in fcc.CLAIMS)
    one = quick.derive("one", sweep=SweepConfig(seeds=(0, 1)))
    assert "sweep grid" in by_id["linear_close_to_least_squares"].untested(one)
    short = quick.set("task.n_context", "9")
    assert "n = 2d = 10" in by_id["linear_close_to_least_squares"].untested(short)
    dense = quick.set("task.sparsity", "4")
    assert "must exceed the sparsity" in by_id["sparse_below_least_squares"].untested(dense)
    paper = EXP.preset("paper")
    assert paper.task.n_dims == 20 and paper.task.n_context == 41 and paper.model.n_layers == 12
    assert not math.isnan(paper.optim.lr)
    assert any(line.startswith("curriculum: dims 2 -> 5 by +1 every 60 steps") for line in fcc.deviations(quick))
    plain = quick.set("task.curriculum_dims", "").set("task.curriculum_points", "")
    assert any(line.startswith("curriculum: none") for line in fcc.deviations(plain))
    linear_only = paper.derive("lin", sweep=SweepConfig(seeds=(0,), grid=(("task.function_class", ("linear",)),)))
    assert not any(line.startswith("curriculum:") for line in fcc.deviations(linear_only))  # Garg's own
    assert any(line.startswith("curriculum:") for line in fcc.deviations(paper))  # trees: 26 -> 101 examples
    assert not plain.task.has_curriculum and quick.task.has_curriculum


def test_probe_settings_are_validated():
    cfg = EXP.preset("smoke")
    for key, bad in (
        ("probe.lasso_alpha", "0"),
        ("probe.lasso_iters", "0"),
        ("probe.knn_k", "0"),
        ("probe.relu_lr", "0"),
        ("probe.relu_steps", "0"),
        ("probe.relu_hidden", "0"),
    ):
        with pytest.raises(ConfigError, match=key):
            cfg.set(key, bad)


def test_matched_learner_claims_against_numpy():
    rng = np.random.default_rng(1)
    d, N = 3, 7
    records, model, base = [], {}, {}
    for cls, matched in (("decision_tree", "tree"), ("relu_2nn", "relu_net"), ("linear", None)):
        for seed in range(5):
            model[cls, seed] = rng.uniform(0, 1, N)
            base[cls, seed] = {a: rng.uniform(0, 1, N) for a in ("least_squares", "knn", "averaging")}
            if matched:
                base[cls, seed][matched] = rng.uniform(0, 1, N)
            records.append(_run(seed, cls, d, model[cls, seed], base[cls, seed]))
    by_id = {c.id: c for c in fcc.CLAIMS}
    got = by_id["tree_beats_greedy_tree"].values(records, {})
    np.testing.assert_allclose(got, [model["decision_tree", s][N - 1] - base["decision_tree", s]["tree"][N - 1]
                                     for s in range(5)])  # fmt: skip
    got = by_id["relu_competitive_with_fitted_network"].values(records, {})
    np.testing.assert_allclose(got, [model["relu_2nn", s][N - 1] - base["relu_2nn", s]["relu_net"][N - 1]
                                     for s in range(5)])  # fmt: skip
    assert by_id["relu_competitive_with_fitted_network"].rule == claims.Below(fcc.COMPETITIVE)
    # runs written before the matched learners existed: the claim says so instead of comparing NaNs
    old = [_run(0, "decision_tree", d, model["decision_tree", 0], {"knn": base["decision_tree", 0]["knn"]})]
    with pytest.raises(claims.NotApplicable, match="algorithm=tree"):
        by_id["tree_beats_greedy_tree"].values(old, {})
    smoke = EXP.preset("smoke")
    assert "no decision_tree runs" in by_id["tree_beats_greedy_tree"].untested(smoke)
    assert by_id["relu_competitive_with_fitted_network"].untested(EXP.preset("quick")) is None


def test_baseline_curves_include_the_matched_learners():
    cfg = EXP.preset("smoke").set("probe.relu_steps", "5").set("probe.relu_hidden", "8")
    for cls, matched in (("decision_tree", "tree"), ("relu_2nn", "relu_net")):
        c = cfg.set("task.function_class", cls)
        assert fcx.baselines(c)[-1] == matched
        batch = fc.sample(jax.random.key(0), c.task, 16)
        x, y = fc.split_interleaved(batch, c.task)
        curves = fcx.baseline_curves(c, x, y)
        assert set(curves) == set(fcx.baselines(c))
        norm = fc.error_normalizer(c.task)
        if cls == "decision_tree":
            pred = np.asarray(pt.tree_prefix(x, y, depth=c.task.tree_depth))
        else:
            key = jax.random.fold_in(jax.random.key(c.train.eval_seed), fcx.RELU_INIT_STREAM)
            pred = np.asarray(prn.relu_net_prefix(x, y, key, hidden=8, steps=5, lr=c.probe.relu_lr))
        want = np.mean((pred - np.asarray(y)) ** 2, axis=0) / norm
        np.testing.assert_allclose(np.asarray(curves[matched]), want, rtol=1e-5, atol=1e-7)


# -- the dense-model control of the sparse claim (function_classes_cross) ----------------------------------------
def test_cross_nse_equals_numpy_and_pairs_by_seed(smoke):
    cfg, result = smoke
    ref = result.summary["reference"]
    by_cls = {o.train.cfg.task.function_class: o for o in result.groups}
    sparse = by_cls["sparse_linear"]
    batch = sparse.train.make_eval_batch()  # the sparse program's own evaluation tasks: full d and N
    N, d, k = cfg.task.n_context, cfg.task.n_dims, cfg.task.sparsity
    assert batch.inputs.shape[1:] == (2 * N, d + 1)
    y = np.asarray(batch.inputs, np.float64)[:, 1::2, d]
    keys = [key for key in ref if key.startswith("cross_nse[")]
    assert len(keys) == 2 * len(cfg.sweep.seeds) * N
    for cls, outcome in by_cls.items():
        out = np.asarray(jax.jit(jax.vmap(outcome.train.apply, in_axes=(0, None)))(outcome.state.params, batch.inputs))
        # independent: squared error at the x-tokens, mean over tasks, divided by k (Garg's sparse normalization)
        want_RN = ((np.asarray(out, np.float64)[:, :, 0::2, 0] - y[None]) ** 2).mean(axis=1) / k
        for j, run in enumerate(outcome.runs):
            got = [ref[f"cross_nse[trained={cls},tasks=sparse_linear,n={n},model_seed={run.seed}]"] for n in range(N)]
            np.testing.assert_allclose(got, want_RN[j], rtol=2e-4, atol=1e-6)
    # the sparse model on its own tasks: the same numbers as its recorded nse curve
    for run in result.summary["runs"]:
        if run["hparams"]["task.function_class"] == "sparse_linear":
            own = [ref[f"cross_nse[trained=sparse_linear,tasks=sparse_linear,n={n},model_seed={run['seed']}]"]
                   for n in range(N)]  # fmt: skip
            np.testing.assert_allclose(own, [run["final"][f"nse[n={n}]"] for n in range(N)], rtol=1e-4, atol=1e-7)
    # the control's statistic on the smoke run: sparse minus dense at n = d - 1, paired by seed
    entry = {c["id"]: c for c in result.summary["claims"]}["sparse_model_beats_dense_model_on_sparse_tasks"]
    diffs = [ref[f"cross_nse[trained=sparse_linear,tasks=sparse_linear,n={d - 1},model_seed={s}]"]
             - ref[f"cross_nse[trained=linear,tasks=sparse_linear,n={d - 1},model_seed={s}]"]
             for s in cfg.sweep.seeds]  # fmt: skip
    assert entry["n_seeds"] == 2 and entry["median"] == pytest.approx(np.median(diffs), rel=1e-9)
    report = (result.run_dir / "report.md").read_text()
    assert "## Control: the dense model on sparse tasks" in report
    assert f"| {d - 1} | " in report and f" | {fmt(float(np.median(diffs)))} | " in report
    # one class alone: nothing to compare
    assert fcx_cross.cross_nse([sparse]) == {} and fcx_cross.cross_nse([by_cls["linear"]]) == {}


def test_control_claim_is_untested_without_both_classes():
    by_id = {c.id: c for c in fcc.CLAIMS}
    claim = by_id["sparse_model_beats_dense_model_on_sparse_tasks"]
    quick = EXP.preset("quick")
    assert claim.untested(quick) is None and claim.rule == claims.Below(0.0)
    for only, missing in (("sparse_linear", "linear"), ("linear", "sparse_linear")):
        cfg = quick.derive("one", sweep=SweepConfig(seeds=(0, 1), grid=(("task.function_class", (only, "relu_2nn")),)))
        assert claim.untested(cfg) == f"no {missing} runs in this sweep"
    assert "must exceed the sparsity" in claim.untested(quick.set("task.sparsity", "4"))


def test_control_claim_statistic_on_a_hand_built_summary():
    rng = np.random.default_rng(2)
    d, N = 5, 11
    records, reference, own, dense = [], {}, {}, {}
    for seed in range(7):
        for cls in ("linear", "sparse_linear"):
            records.append(_run(seed, cls, d, rng.uniform(0, 1, N), {"least_squares": rng.uniform(0, 1, N)}))
        own[seed], dense[seed] = rng.uniform(0, 1, N), rng.uniform(0, 1, N)
        for n in range(N):
            reference[f"cross_nse[trained=sparse_linear,tasks=sparse_linear,n={n},model_seed={seed}]"] = own[seed][n]
            reference[f"cross_nse[trained=linear,tasks=sparse_linear,n={n},model_seed={seed}]"] = dense[seed][n]
    records.pop(0)  # seed 0 has no linear run: dropped, not compared with another seed's
    del reference["cross_nse[trained=linear,tasks=sparse_linear,n=4,model_seed=1]"]  # seed 1: no dense value
    records[-1] = {**records[-1], "status": "diverged"}  # the sparse run of seed 6 diverged: excluded
    by_id = {c.id: c for c in fcc.CLAIMS}
    claim = by_id["sparse_model_beats_dense_model_on_sparse_tasks"]
    want = np.array([own[s][d - 1] - dense[s][d - 1] for s in (2, 3, 4, 5)])
    ok = [r for r in records if r["status"] == "ok"]
    np.testing.assert_allclose(claim.values(ok, reference), want)
    # through the claims machinery: median and percentile bootstrap of the same values, decided by the rule
    cfg = EXP.preset("quick")
    for r in records:  # a replicate set for the runs' own metrics: the control's reference values have none
        r["final"].update({f"replicate_nse[n={n}]": 0.0 for n in range(N)})
    entry = next(e for e in claims.evaluate([claim], cfg, records, reference))
    med, lo, hi = claims.bootstrap_median_ci(want)
    assert entry["n_seeds"] == 4 and entry["median"] == pytest.approx(med) and entry["ci_low"] == pytest.approx(lo)
    assert entry["verdict"] == "inconclusive" and entry["replicate"] is None and "n_dims" in entry["replicate_note"]
    five = {k: v for k, v in reference.items()} | {
        f"cross_nse[trained=linear,tasks=sparse_linear,n={d - 1},model_seed={s}]": own[s][d - 1] + 0.1 for s in range(7)
    }
    entry = claims.evaluate([claim], cfg, records, five)[0]
    assert entry["n_seeds"] == 5 and entry["verdict"] == "reproduced"  # seeds 1..5: every difference is -0.1
    assert entry["median"] == pytest.approx(-0.1)
    with pytest.raises(claims.NotApplicable, match="cross_nse"):
        claim.values(ok, {})  # a run directory written before the control existed
