"""Independent NumPy float64 references for the similarity metrics (shared by the metric tests).

Each quantity is computed by a different route from the library: CKA from n x n Gram matrices
centered with H (or U-centered as in Kornblith's notebook), RBF distances from explicit
differences, CCA by covariance whitening, Procrustes by solving for the rotation, RSA with scipy.
"""

import numpy as np
import scipy.spatial.distance
import scipy.stats


# -- independent float64 references -------------------------------------------------------------------
def ref_center_gram(k, unbiased=False):
    k = k.copy()
    n = k.shape[0]
    if not unbiased:
        h = np.eye(n) - np.ones((n, n)) / n
        return h @ k @ h
    np.fill_diagonal(k, 0.0)
    means = k.sum(0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    k -= means[:, None]
    k -= means[None, :]
    np.fill_diagonal(k, 0.0)
    return k


def ref_cka_gram(k, l, debiased=False):
    kc, lc = ref_center_gram(k, debiased), ref_center_gram(l, debiased)
    return np.sum(kc * lc) / (np.linalg.norm(kc) * np.linalg.norm(lc))


def ref_linear_cka(x, y, debiased=False):
    return ref_cka_gram(x @ x.T, y @ y.T, debiased)


def ref_rbf_gram(x, threshold):
    d2 = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    sigma2 = threshold**2 * np.median(d2[d2 > 0])
    return np.exp(-d2 / (2 * sigma2))


def ref_rbf_cka(x, y, threshold=1.0, debiased=False):
    return ref_cka_gram(ref_rbf_gram(x, threshold), ref_rbf_gram(y, threshold), debiased)


def inv_sqrt(c):
    w, v = np.linalg.eigh(c)
    return v @ np.diag(w**-0.5) @ v.T


def ref_cca_parts(x, y):
    """Canonical correlations and x's canonical variates by whitening the covariance matrices."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    wx, wy = inv_sqrt(xc.T @ xc), inv_sqrt(yc.T @ yc)
    u, rho, _ = np.linalg.svd(wx @ (xc.T @ yc) @ wy)
    m = min(x.shape[1], y.shape[1])
    return rho[:m], xc @ wx @ u[:, :m], xc


def ref_cca(x, y):
    return ref_cca_parts(x, y)[0]


def ref_svcca(x, y, keep=0.99):
    def reduce(a):
        ac = a - a.mean(0)
        u, s, _ = np.linalg.svd(ac, full_matrices=False)
        frac = np.cumsum(s**2) / np.sum(s**2)
        k = int(np.searchsorted(frac, keep) + 1)
        return u[:, :k] * s[:k]

    return ref_cca(reduce(x), reduce(y)).mean()


def ref_pwcca(x, y):
    rho, h, xc = ref_cca_parts(x, y)
    alpha = np.abs(h.T @ xc).sum(1)
    return np.sum(alpha / alpha.sum() * rho)


def ref_procrustes(x, y):
    def prep(a, d):
        a = a - a.mean(0)
        a = a / np.linalg.norm(a)
        return np.pad(a, ((0, 0), (0, d - a.shape[1])))

    d = max(x.shape[1], y.shape[1])
    a, b = prep(x, d), prep(y, d)
    u, _, vt = np.linalg.svd(b.T @ a)
    q = u @ vt  # argmin_Q ||a - b Q||, Q orthogonal (Schönemann 1966)
    return np.sum((a - b @ q) ** 2)


def ref_rsa(x, y, method="pearson", dissimilarity="correlation"):
    a, b = scipy.spatial.distance.pdist(x, dissimilarity), scipy.spatial.distance.pdist(y, dissimilarity)
    if method == "pearson":
        return scipy.stats.pearsonr(a, b)[0]
    return scipy.stats.spearmanr(a, b)[0]


def ref_mutual_knn(x, y, k, similarity="cosine"):
    def knn(a):
        if similarity == "cosine":
            an = a / np.linalg.norm(a, axis=1, keepdims=True)
            s = an @ an.T
        else:
            s = -np.sum((a[:, None] - a[None]) ** 2, axis=-1)
        np.fill_diagonal(s, -np.inf)
        return np.argsort(-s, axis=1, kind="stable")[:, :k]

    kx, ky = knn(x), knn(y)
    return np.mean([len(set(a) & set(b)) / k for a, b in zip(kx, ky)])


# -- data ---------------------------------------------------------------------------------------------
def related_pair(n, d1, d2, seed=0, noise=1.0):
    """y depends on x linearly plus noise, so every metric is away from its extremes."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d1)) * np.linspace(0.5, 2.0, d1)
    y = np.tanh(x @ rng.normal(size=(d1, d2)) / np.sqrt(d1)) + noise * rng.normal(size=(n, d2))
    return x, y
