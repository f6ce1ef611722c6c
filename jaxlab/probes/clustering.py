"""Task clustering of hidden states, layer by layer, and causal ablations of the cluster structure.

Following Wu & Varshney (2024), the representation of a sequence at layer l is its residual stream
at one position (e.g. the separator before the output): layer 0 is the embedding
(`blocks.0.hook_resid_pre`), layer l >= 1 the output of block l (`blocks.{l-1}.hook_resid_post`):
the hooks `jaxlab.models.residual_hooks(n_blocks, embeddings=True)`.
At every layer the representations are clustered by k-means with k = number of tasks, and the
clusters are scored against the task labels (ARI, NMI); the silhouette and the between/within
variance ratio measure the same grouping with the labels themselves.

Causal checks at one layer, with mu_k the class means at the probed position, mu their mean, and
U an orthonormal basis [D, R] of span{mu_k - mu} (R = K - 1, the between-task directions):
  projection ablation  x_t <- x_t - U U^T (x_t - c_t) at the chosen positions t (c_t a centre, e.g.
                       the mean of x_t over the data: the between-task coordinates set to the mean's)
  random control       the same with a random orthonormal basis of the same rank R
  centroid swap        x <- mu_{k'} for a sequence of task k, with k' = k + shift (mod K) != k.
Every function works on one run's parameters; vmap it for many runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import chex
import jax
import jax.numpy as jnp

from jaxlab import linalg
from jaxlab.metrics.clustering import (
    adjusted_rand_index,
    centred_frame,
    class_means,
    kmeans,
    normalized_mutual_info,
    silhouette_score,
    variance_ratio,
)
from jaxlab.models import Intervention, Transformer, add_at, replace_at, residual_hooks, run_with_cache

CLUSTER_METRICS = ("ari", "nmi", "silhouette", "variance_ratio")


def position_mask(seq_len: int, position: int) -> jax.Array:
    """[T] float mask, 1 at `position`."""
    return jnp.zeros((seq_len,)).at[position].set(1.0)


def hidden_states(
    model: Transformer, params: chex.ArrayTree, inputs_BT: jax.Array, position: int
) -> tuple[jax.Array, jax.Array]:
    """(model outputs [B, T, V], representations [n_blocks + 1, B, D] at `position`)."""
    hooks = residual_hooks(model.cfg.n_layers, embeddings=True)
    out, cache = run_with_cache(model, params, inputs_BT, names=hooks)
    return out, jnp.stack([cache[h][:, position] for h in hooks])


def cluster_scores(
    key: jax.Array, reps_ND: jax.Array, labels_N: jax.Array, n_classes: int, n_iters: int = 30, n_restarts: int = 3
) -> dict[str, jax.Array]:
    """k-means (k = n_classes) of the representations scored against the labels: ari, nmi (of the
    clusters), silhouette, variance_ratio (of the labels)."""
    chex.assert_rank(reps_ND, 2)
    clusters = kmeans(key, reps_ND, n_classes, n_iters, n_restarts).assignments
    return {
        "ari": adjusted_rand_index(labels_N, clusters, n_classes, n_classes),
        "nmi": normalized_mutual_info(labels_N, clusters, n_classes, n_classes),
        "silhouette": silhouette_score(reps_ND, labels_N, n_classes),
        "variance_ratio": variance_ratio(reps_ND, labels_N, n_classes),
    }


def hidden_states_at(
    model: Transformer, params: chex.ArrayTree, inputs_BT: jax.Array, positions_P: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(model outputs [B, T, V], representations [n_blocks + 1, B, P, D] at each of `positions_P`)."""
    chex.assert_rank(positions_P, 1)
    hooks = residual_hooks(model.cfg.n_layers, embeddings=True)
    out, cache = run_with_cache(model, params, inputs_BT, names=hooks)
    return out, jnp.stack([cache[h][:, positions_P] for h in hooks])


def permuted_labels(key: jax.Array, labels_N: jax.Array) -> jax.Array:
    """The labels permuted across examples (class sizes kept): the shuffled-label floor of a score.

    The ARI of fixed clusters against permuted labels is 0 in expectation (ARI is chance-adjusted);
    its spread over cells and seeds is the floor a real grouping has to clear."""
    chex.assert_rank(labels_N, 1)
    return labels_N[jax.random.permutation(key, labels_N.shape[0])]


def cell_aris(
    key: jax.Array,
    reps_CND: jax.Array,
    labels_CN: jax.Array,
    shuffled_CN: jax.Array,
    n_classes: int,
    n_iters: int = 30,
    n_restarts: int = 3,
) -> dict[str, jax.Array]:
    """Per cell c (e.g. a (set, position, layer) triple): k-means (k = n_classes, the same key in every cell)
    of reps_CND[c] scored against that cell's labels (`ari`) and against the same labels permuted
    (`ari_shuffled`, the floor: same states, same clusters); {metric: [C]}."""
    chex.assert_rank(reps_CND, 3)
    chex.assert_equal_shape([labels_CN, shuffled_CN, reps_CND[..., 0]])

    def one(reps_ND: jax.Array, labels_N: jax.Array, shuffled_N: jax.Array) -> dict[str, jax.Array]:
        clusters = kmeans(key, reps_ND, n_classes, n_iters, n_restarts).assignments
        return {
            "ari": adjusted_rand_index(labels_N, clusters, n_classes, n_classes),
            "ari_shuffled": adjusted_rand_index(shuffled_N, clusters, n_classes, n_classes),
        }

    return jax.vmap(one)(reps_CND, labels_CN, shuffled_CN)


def cell_cluster_scores(
    key: jax.Array,
    reps_CND: jax.Array,
    labels_N: jax.Array,
    shuffled_N: jax.Array,
    n_classes: int,
    n_iters: int = 30,
    n_restarts: int = 3,
) -> dict[str, jax.Array]:
    """`cell_aris` of cells that share one labelling, with the rest of `cluster_scores` per cell (nmi of the
    clusters, silhouette and variance_ratio of the labels): {metric: [C]}."""
    chex.assert_rank(reps_CND, 3)
    chex.assert_equal_shape([labels_N, shuffled_N, reps_CND[0, :, 0]])

    def one(reps_ND: jax.Array) -> dict[str, jax.Array]:
        clusters = kmeans(key, reps_ND, n_classes, n_iters, n_restarts).assignments
        return {
            "ari": adjusted_rand_index(labels_N, clusters, n_classes, n_classes),
            "ari_shuffled": adjusted_rand_index(shuffled_N, clusters, n_classes, n_classes),
            "nmi": normalized_mutual_info(labels_N, clusters, n_classes, n_classes),
            "silhouette": silhouette_score(reps_ND, labels_N, n_classes),
            "variance_ratio": variance_ratio(reps_ND, labels_N, n_classes),
        }

    return jax.vmap(one)(reps_CND)


def kmeans_ari(
    key: jax.Array, reps_ND: jax.Array, labels_N: jax.Array, n_classes: int, n_iters: int = 30, n_restarts: int = 3
) -> jax.Array:
    """The `ari` of `cluster_scores` alone (same clusters for the same key)."""
    clusters = kmeans(key, reps_ND, n_classes, n_iters, n_restarts).assignments
    return adjusted_rand_index(labels_N, clusters, n_classes, n_classes)


def layer_cluster_scores(
    key: jax.Array, reps_LND: jax.Array, labels_N: jax.Array, n_classes: int, n_iters: int = 30, n_restarts: int = 3
) -> dict[str, jax.Array]:
    """`cluster_scores` of every layer: {metric: [L]} (the same k-means key at every layer)."""
    return jax.vmap(lambda r: cluster_scores(key, r, labels_N, n_classes, n_iters, n_restarts))(reps_LND)


# -- the between-task subspace and its ablation ----------------------------------------------------
def between_class_basis(reps_ND: jax.Array, labels_N: jax.Array, n_classes: int) -> tuple[jax.Array, jax.Array]:
    """(U [D, n_classes - 1] orthonormal basis of span{mu_k - mu}, mu [D]), mu the mean of the class
    means; directions beyond the span's rank have singular value 0 and are zeroed.

    The means and their differences are taken in the centred frame of the representations
    (`centred_frame`: hidden states often share a large offset, and float32 class means at an
    offset m differ by multiples of eps |m|, which would tilt U); mu is returned in their coordinates.
    """
    frame = centred_frame(reps_ND)
    means = class_means(frame.u, labels_N, n_classes)
    center = means.mean(0)
    _, s, vt = linalg.svd(means - center)  # vt [K, D] (K <= D)
    rank = n_classes - 1
    keep = s[:rank] > 1e-6 * jnp.maximum(s[0], 1e-30)
    return vt[:rank].T * keep[None, :], frame.origin + frame.scale * center


def random_basis(key: jax.Array, d: int, rank: int) -> jax.Array:
    """A uniformly random orthonormal basis [d, rank] (QR of a Gaussian matrix)."""
    q, r = linalg.qr(jax.random.normal(key, (d, rank)))
    return q * jnp.sign(jnp.diagonal(r))[None, :]


def project_out(x_BTD: jax.Array, basis_DR: jax.Array, center: jax.Array) -> jax.Array:
    """x - U U^T (x - c); the centre c broadcasts against x ([D], or [T, D] per position)."""
    return x_BTD - ((x_BTD - center) @ basis_DR) @ basis_DR.T


def at_layer(
    n_blocks: int, layer: jax.Array | int, make: Callable[[str, jax.Array], Intervention], positions_T: jax.Array
):
    """One intervention per layer hook, active (positions as given) only at `layer`, which may be
    traced: one compiled forward pass serves every layer (e.g. under `lax.map` over layers)."""
    return tuple(
        make(hook, positions_T * jnp.asarray(i == layer, positions_T.dtype))
        for i, hook in enumerate(residual_hooks(n_blocks, embeddings=True))
    )


def projection_ablation(
    model: Transformer,
    params: chex.ArrayTree,
    inputs_BT: jax.Array,
    layer: jax.Array | int,
    x_BTD: jax.Array,
    basis_DR: jax.Array,
    center: jax.Array,
    positions_T: jax.Array,
) -> jax.Array:
    """Model outputs with the residual stream of `layer` projected off span(U) (about the centre,
    [D] or [T, D]) at the positions where `positions_T` is 1.

    `x_BTD` is the clean residual stream at that layer (`run_with_cache`); since no earlier
    intervention changes it, adding -U U^T (x - mu) there is exactly the projection.
    """
    delta = project_out(x_BTD, basis_DR, center) - x_BTD
    ivs = at_layer(model.cfg.n_layers, layer, lambda hook, pos: add_at(hook, delta, pos), positions_T)
    return model.apply({"params": params}, inputs_BT, ivs)


def centroid_swap(
    model: Transformer,
    params: chex.ArrayTree,
    inputs_BT: jax.Array,
    layer: jax.Array | int,
    centroids_KD: jax.Array,
    new_labels_B: jax.Array,
    positions_T: jax.Array,
) -> jax.Array:
    """Model outputs with the residual stream of `layer` replaced, at the marked positions, by the
    centroid of class `new_labels_B[b]` for sequence b."""
    value_BTD = jnp.broadcast_to(centroids_KD[new_labels_B][:, None, :], (*inputs_BT.shape, centroids_KD.shape[1]))
    ivs = at_layer(model.cfg.n_layers, layer, lambda hook, pos: replace_at(hook, value_BTD, pos), positions_T)
    return model.apply({"params": params}, inputs_BT, ivs)


def shifted_labels(labels_N: jax.Array, n_classes: int, shift: int = 1) -> jax.Array:
    """(label + shift) mod n_classes: every sequence gets another class (0 < shift < n_classes)."""
    return (labels_N + shift) % n_classes


__all__: Sequence[str] = [
    "CLUSTER_METRICS",
    "at_layer",
    "between_class_basis",
    "cell_aris",
    "cell_cluster_scores",
    "centroid_swap",
    "cluster_scores",
    "hidden_states",
    "hidden_states_at",
    "kmeans_ari",
    "layer_cluster_scores",
    "permuted_labels",
    "position_mask",
    "project_out",
    "projection_ablation",
    "random_basis",
    "shifted_labels",
]
