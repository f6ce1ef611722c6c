"""instruction-clustering: the clustering probes and ablations on a tiny model, history summaries,
and the smoke preset end to end (files, summary keys, report)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.errors import ConfigError
from jaxlab.experiments import get_experiment
from jaxlab.experiments import instruction_clustering as ic
from jaxlab.metrics.clustering import variance_ratio
from jaxlab.models import ModelConfig, Transformer, init_params, run_with_cache
from jaxlab.probes import clustering as pc
from jaxlab.train import run_sweep

N_BLOCKS, T, D, K = 2, 6, 16, 3


@pytest.fixture(scope="module")
def tiny():
    cfg = ModelConfig(
        n_layers=N_BLOCKS, n_heads=2, d_model=D, d_mlp=32, input="discrete", vocab_size=11, d_output=11, max_len=T,
        pos_encoding="learned",
    )  # fmt: skip
    model = Transformer(cfg)
    inputs = jax.random.randint(jax.random.key(0), (30, T), 0, 11)
    params = jax.jit(lambda k, x: init_params(model, k, x))(jax.random.key(1), inputs)
    labels = jnp.arange(30) % K
    return model, params, inputs, labels


def test_hidden_states_are_the_layer_hooks(tiny):
    model, params, inputs, _ = tiny
    out, reps = jax.jit(lambda p, x: pc.hidden_states(model, p, x, 4))(params, inputs)
    assert reps.shape == (N_BLOCKS + 1, 30, D)
    assert pc.layer_hooks(N_BLOCKS) == [
        "blocks.0.hook_resid_pre",
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
    ]
    _, cache = run_with_cache(model, params, inputs)
    np.testing.assert_allclose(reps[1], cache["blocks.0.hook_resid_post"][:, 4], rtol=1e-5, atol=1e-6)
    emb = params["embed"]["embedding"][inputs[:, 4]] + params["pos_embed"][4]  # layer 0: token + position
    np.testing.assert_allclose(reps[0], emb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, model.apply({"params": params}, inputs), rtol=1e-5, atol=1e-6)


def test_between_class_basis_and_projection(tiny):
    rng = np.random.default_rng(0)
    labels = np.arange(60) % K
    reps = jnp.asarray(rng.normal(size=(60, D)) + 3.0 * rng.normal(size=(K, D))[labels])
    basis, center = jax.jit(pc.between_class_basis, static_argnums=2)(reps, jnp.asarray(labels), K)
    assert basis.shape == (D, K - 1)
    np.testing.assert_allclose(basis.T @ basis, np.eye(K - 1), atol=1e-5)
    means = np.stack([np.asarray(reps)[labels == k].mean(0) for k in range(K)])
    np.testing.assert_allclose(center, means.mean(0), rtol=1e-5, atol=1e-5)
    # the centred class means lie in span(U) ...
    centred = means - means.mean(0)
    np.testing.assert_allclose(centred @ basis @ basis.T, centred, atol=1e-4)
    # ... so after the projection every class has the same mean: no between-class variance left
    projected = pc.project_out(reps, basis, center)
    assert float(variance_ratio(reps, jnp.asarray(labels), K)) > 1.0
    assert float(variance_ratio(projected, jnp.asarray(labels), K)) < 1e-8
    rand = pc.random_basis(jax.random.key(0), D, K - 1)
    np.testing.assert_allclose(rand.T @ rand, np.eye(K - 1), atol=1e-5)


def test_ablations_change_only_the_chosen_layer_and_position(tiny):
    model, params, inputs, labels = tiny
    hooks = pc.layer_hooks(N_BLOCKS)
    pos, positions = 3, pc.position_mask(T, 3)
    _, clean = run_with_cache(model, params, inputs, names=hooks)
    layer = 1
    x = clean[hooks[layer]]
    basis, center = pc.between_class_basis(x[:, pos], labels, K)
    # the layer index may be traced: one program for all layers (lax.map), same result as a static one
    traced = jax.jit(lambda layer: pc.projection_ablation(model, params, inputs, layer, x, basis, center, positions))(
        jnp.int32(layer)
    )
    static = pc.projection_ablation(model, params, inputs, layer, x, basis, center, positions)
    np.testing.assert_allclose(traced, static, rtol=1e-5, atol=1e-5)
    delta = pc.project_out(x, basis, center) - x
    _, cache = run_with_cache(
        model,
        params,
        inputs,
        names=hooks,
        interventions=pc.at_layer(N_BLOCKS, layer, lambda h, p: pc.add_at(h, delta, p), positions),
    )
    np.testing.assert_allclose(cache[hooks[0]], clean[hooks[0]], atol=1e-6)  # upstream untouched
    got = np.asarray(cache[hooks[layer]])
    np.testing.assert_allclose(got[:, pos], pc.project_out(x[:, pos], basis, center), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.delete(got, pos, axis=1), np.delete(np.asarray(x), pos, axis=1), atol=1e-6)
    assert not np.allclose(np.asarray(cache[hooks[2]])[:, pos], np.asarray(clean[hooks[2]])[:, pos], atol=1e-3)
    # the centroid swap writes the other class's centroid there
    centroids = jnp.stack([x[:, pos][labels == k].mean(0) for k in range(K)])
    new = pc.shifted_labels(labels, K)
    assert np.all(np.asarray(new) != np.asarray(labels))
    value = jnp.broadcast_to(centroids[new][:, None], x.shape)
    _, swapped = run_with_cache(
        model,
        params,
        inputs,
        names=hooks,
        interventions=pc.at_layer(N_BLOCKS, layer, lambda h, p: pc.replace_at(h, value, p), positions),
    )
    np.testing.assert_allclose(swapped[hooks[layer]][:, pos], centroids[new], rtol=1e-5, atol=1e-6)
    out = pc.centroid_swap(model, params, inputs, layer, centroids, new, positions)
    np.testing.assert_allclose(
        out,
        model.apply(
            {"params": params}, inputs, pc.at_layer(N_BLOCKS, layer, lambda h, p: pc.replace_at(h, value, p), positions)
        ),
        rtol=1e-5,
        atol=1e-5,
    )


def test_layer_cluster_scores_find_planted_clusters():
    rng = np.random.default_rng(1)
    labels = np.arange(90) % K
    noise = rng.normal(size=(90, 8))
    reps = np.stack([noise, noise + 6.0 * rng.normal(size=(K, 8))[labels]])  # layer 0 noise, layer 1 clustered
    scores = jax.jit(lambda r, l: pc.layer_cluster_scores(jax.random.key(0), r, l, K, 20, 3))(
        jnp.asarray(reps), jnp.asarray(labels)
    )
    assert set(scores) == set(pc.CLUSTER_METRICS) and scores["ari"].shape == (2,)
    assert float(scores["ari"][1]) > 0.95 and abs(float(scores["ari"][0])) < 0.1
    assert float(scores["nmi"][1]) > 0.95 and float(scores["silhouette"][1]) > 0.5
    assert float(scores["variance_ratio"][1]) > 10 * float(scores["variance_ratio"][0])


def test_history_summaries_against_numpy():
    steps = np.array([0, 10, 20, 30])
    values = np.array([[0.1, 0.6, 0.7, 0.9], [0.0, 0.2, 0.4, 0.45]])
    onset = ic.first_step_above(values, steps, 0.5)
    assert onset[0] == 10 and np.isnan(onset[1])
    x, y = np.random.default_rng(2).normal(size=(2, 50))
    assert ic.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert np.isnan(ic.pearson(np.ones(5), x[:5]))
    history = {f"ari_layer_{l}": np.array([[0.0, 0.2 * l, 0.3 * l]]) for l in range(3)}
    history["acc_seen"] = np.array([[0.1, 0.4, 0.8]])
    best, series = ic.best_layer_series(history, 3)
    assert best[0] == 2 and np.allclose(series[0], [0.0, 0.4, 0.6])


def test_probe_config_errors(tmp_path):
    cfg = get_experiment("instruction-clustering").preset("smoke")
    with pytest.raises(ConfigError) as err:
        cfg.set("probe.position", "middle")
    assert err.value.field == "probe.position" and "sep_output" in str(err.value)
    with pytest.raises(ConfigError, match="probe.n_eval"):
        cfg.set("probe.n_eval", "0")


def test_smoke_run_writes_summary_keys_and_report(tmp_path):
    cfg = get_experiment("instruction-clustering").preset("smoke")
    res = run_sweep(cfg, tmp_path / "smoke", progress=False)
    summary = json.loads((tmp_path / "smoke" / "summary.json").read_text())
    L = cfg.model.n_layers + 1
    required = {
        "acc_seen", "acc_unseen_strings", "acc_unseen_distributions", "ari_acc_corr", "ablation_acc_drop",
        "random_ablation_acc_drop", "ari_onset_step", "acc_onset_step",
        *(f"ari_layer_{l}" for l in range(L)), *(f"nmi_layer_{l}" for l in range(L)),
    }  # fmt: skip
    for run in summary["runs"]:
        assert required <= set(run["final"]), required - set(run["final"])
        f = run["final"]
        for m in ("acc_seen", "acc_unseen_strings", "acc_unseen_distributions", "swap_follow_rate"):
            assert 0.0 <= f[m] <= 1.0
        assert all(-1.0 <= f[f"ari_layer_{l}"] <= 1.0 and 0.0 <= f[f"nmi_layer_{l}"] <= 1.0 for l in range(L))
    hist = res.groups[0].history
    assert np.all(hist["acc_seen"][:, -1] > hist["acc_seen"][:, 0] + 0.2)  # it learns, even in 60 steps
    # the embedding layer at the separator sees one fixed token: nothing to cluster
    np.testing.assert_allclose(hist["ari_layer_0"], 0.0, atol=1e-6)
    assert "ari_acc_corr_pooled" in summary["reference"]
    report = (tmp_path / "smoke" / "report.md").read_text()
    for name in ("clustering_over_training.png", "ari_vs_accuracy.png", "ablation_by_layer.png"):
        assert (tmp_path / "smoke" / name).is_file() and f"]({name})" in report
    assert "Causal check" in report and "jaxlab report" in report
