"""Representation-similarity metrics: pure functions of [n_examples, n_features] arrays, jit- and vmap-compatible.

  linear_cka(x, y, debiased=False)              Kornblith et al. 2019; debiased: Song et al. 2012
  rbf_cka(x, y, threshold=1.0, debiased=False)  RBF kernel, median-distance bandwidth
  cca(x, y)                                     canonical correlations (Hotelling 1936)
  svcca(x, y, keep=0.99)                        Raghu et al. 2017
  pwcca(x, y)                                   Morcos et al. 2018 (weights from x)
  procrustes_distance(x, y)                     Ding et al. 2021, in [0, 2]
  rsa(x, y, method="pearson")                   Kriegeskorte et al. 2008
  mutual_knn(x, y, k)                           Huh et al. 2024
  pairwise(metric, xs, ys=None)                 all pairs of stacks [..., n, d] (or lists of mixed widths)

Clustering (`jaxlab.metrics.clustering`): kmeans (k-means++, restarts), adjusted_rand_index,
normalized_mutual_info, silhouette_score, variance_ratio.

Every metric centers and scales its inputs itself (see `jaxlab.metrics._common` for the numerics:
float64 under jax x64, float32 otherwise, no NaN on constant inputs, `warning_counts()`).
"""

from jaxlab.metrics._common import DegenerateInputWarning, is_constant, reset_warning_counts, warning_counts
from jaxlab.metrics.by_name import METRICS
from jaxlab.metrics.cca import cca, pwcca, svcca
from jaxlab.metrics.cka import linear_cka, rbf_cka
from jaxlab.metrics.clustering import (
    adjusted_rand_index,
    kmeans,
    normalized_mutual_info,
    silhouette_score,
    variance_ratio,
)
from jaxlab.metrics.knn import mutual_knn
from jaxlab.metrics.pairwise import pairwise
from jaxlab.metrics.procrustes import procrustes_distance
from jaxlab.metrics.rsa import rsa

__all__ = [
    "METRICS",
    "DegenerateInputWarning",
    "adjusted_rand_index",
    "cca",
    "is_constant",
    "kmeans",
    "linear_cka",
    "mutual_knn",
    "normalized_mutual_info",
    "pairwise",
    "procrustes_distance",
    "pwcca",
    "rbf_cka",
    "reset_warning_counts",
    "rsa",
    "silhouette_score",
    "svcca",
    "variance_ratio",
    "warning_counts",
]
