"""The similarity metrics by name (`pairwise("linear_cka", reps)`, `jaxlab.metrics.METRICS`)."""

from jaxlab.metrics.cca import cca, pwcca, svcca
from jaxlab.metrics.cka import linear_cka, rbf_cka
from jaxlab.metrics.knn import mutual_knn
from jaxlab.metrics.procrustes import procrustes_distance
from jaxlab.metrics.rsa import rsa

METRICS = {f.__name__: f for f in (linear_cka, rbf_cka, cca, svcca, pwcca, procrustes_distance, rsa, mutual_knn)}
