"""The exact Bayes predictor of the latent task against brute-force enumeration of intention paths."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.rng import rng_scope
from jaxlab.tasks import latent
from jaxlab.tasks import latent_bayes as bayes

# A tiny language: 3 intentions x 2 letters, 3-letter messages, 3 messages (3^3 = 27 paths);
# first-letter and transition ambiguities differ so a mix-up of F and T would show.
TINY = latent.Config(
    n_intentions=3,
    letters_per_intention=2,
    message_len=3,
    n_messages=3,
    chain_stay=0.6,
    ambiguity=0.15,
    first_letter_ambiguity=0.3,
    language_seed=4,
)


def stream_prob(cfg, lang, path, tokens):
    """p(tokens | intention path) for the observed tokens z_1.. of a stream z_0 = D, z_1, ... (float64)."""
    L = cfg.message_len
    p = 1.0
    for i, z in enumerate(tokens, start=1):
        k, j = divmod(i, L + 1)
        if j == 0:  # a delimiter must follow the L letters of a message
            p *= 1.0 if z == cfg.delimiter else 0.0
        elif z == cfg.delimiter:
            p *= 0.0
        elif j == 1:
            p *= lang.first[path[k], z]
        else:
            p *= lang.trans[path[k], tokens[i - 2], z]
    return p


def brute_force(cfg, inputs):
    """(predictive [T, V + 1], posterior [T, K]) by summing over all K^M intention paths."""
    lang = latent.language(cfg)
    K, M, L = cfg.n_intentions, cfg.n_messages, cfg.message_len
    paths = list(itertools.product(range(K), repeat=M))
    prior = np.array([lang.prior[p[0]] * np.prod([lang.chain[a, b] for a, b in itertools.pairwise(p)]) for p in paths])
    T = len(inputs)
    pred, post = np.zeros((T, cfg.vocab_size)), np.zeros((T, K))
    for t in range(T):
        seen = list(inputs[1 : t + 1])
        w = prior * np.array([stream_prob(cfg, lang, p, seen) for p in paths])
        k = t // (L + 1)
        for th in range(K):
            post[t, th] = sum(wi for wi, p in zip(w, paths) if p[k] == th) / w.sum()
        for v in range(cfg.vocab_size):
            pred[t, v] = (prior * np.array([stream_prob(cfg, lang, p, [*seen, v]) for p in paths])).sum() / w.sum()
    return pred, post


@pytest.fixture(scope="module")
def tiny_batch():
    with rng_scope():
        return latent.sample(jax.random.key(7), TINY, 6)


@pytest.fixture(scope="module")
def reference(tiny_batch):
    inputs = np.asarray(tiny_batch.inputs)
    return [brute_force(TINY, list(x)) for x in inputs]


def test_bayes_matches_brute_force_enumeration_in_float64(tiny_batch, reference):
    with jax.enable_x64(True):  # jax.experimental.enable_x64 in older jax
        lang = bayes.log_language(TINY, jnp.float64)
        logp, logpost = jax.jit(lambda x: bayes.bayes_predictive(TINY, x, lang))(jnp.asarray(tiny_batch.inputs))
        assert logp.dtype == jnp.float64
        logp, logpost = np.asarray(logp), np.asarray(logpost)
    for b, (pred, post) in enumerate(reference):
        np.testing.assert_allclose(np.exp(logp[b]), pred, atol=1e-6, rtol=0)
        np.testing.assert_allclose(np.exp(logpost[b]), post, atol=1e-6, rtol=0)
        # the predictive is a distribution, and the observed next token always has positive mass
        np.testing.assert_allclose(pred.sum(-1), 1.0, atol=1e-12)
        targets = np.asarray(tiny_batch.targets)[b]
        assert np.all(pred[np.arange(len(targets)), targets] > 0)


def test_float32_agrees_with_enumeration_to_2e5(tiny_batch, reference):
    """float32 log-space forward: probabilities within 2e-5 of the float64 enumeration."""
    logp, logpost = jax.jit(lambda x: bayes.bayes_predictive(TINY, x))(tiny_batch.inputs)
    assert logp.dtype == jnp.float32
    for b, (pred, post) in enumerate(reference):
        np.testing.assert_allclose(np.exp(np.asarray(logp[b])), pred, atol=2e-5, rtol=0)
        np.testing.assert_allclose(np.exp(np.asarray(logpost[b])), post, atol=2e-5, rtol=0)


def test_truth_is_the_generator_given_the_path_and_floors_are_consistent(tiny_batch, reference):
    lang = latent.language(TINY)
    inputs, theta = np.asarray(tiny_batch.inputs), np.asarray(tiny_batch.aux["theta"])
    true = jax.jit(lambda x, th: bayes.true_predictive(TINY, x, th))(tiny_batch.inputs, tiny_batch.aux["theta"])
    true = np.exp(np.asarray(true, np.float64))
    for b in range(inputs.shape[0]):
        for t in range(TINY.seq_len):
            want = np.array(
                [stream_prob(TINY, lang, theta[b], [*inputs[b, 1 : t + 1], v]) for v in range(TINY.vocab_size)]
            )
            want /= stream_prob(TINY, lang, theta[b], list(inputs[b, 1 : t + 1]))
            np.testing.assert_allclose(true[b, t], want, atol=1e-6)
    # KL(truth || Bayes) from the module equals the NumPy formula on the enumerated predictive
    pred = np.stack([p for p, _ in reference])
    with np.errstate(divide="ignore", invalid="ignore"):  # terms with true = 0 are masked out
        kl_np = np.sum(np.where(true > 0, true * (np.log(np.where(true > 0, true, 1)) - np.log(pred)), 0.0), -1)
    kl_jax = bayes.kl(jnp.log(jnp.asarray(true)), jnp.log(jnp.asarray(pred)))
    np.testing.assert_allclose(kl_jax, kl_np, atol=1e-5)
    assert np.all(kl_np > -1e-9)


def exact_epsilon(cfg):
    """E_x[1 - max_theta p(theta | x)] over all V^L messages (uniform prior), exactly."""
    lang = latent.language(cfg)
    total = 0.0
    for x in itertools.product(range(cfg.n_letters), repeat=cfg.message_len):
        like = np.array(
            [
                lang.first[th, x[0]] * np.prod([lang.trans[th, a, b] for a, b in itertools.pairwise(x)])
                for th in range(cfg.n_intentions)
            ]
        )
        joint = lang.prior * like
        total += joint.sum() - joint.max()  # p(x) (1 - max posterior)
    return total


def test_measured_ambiguity_matches_exact_expectation():
    eps, se = bayes.measured_ambiguity(TINY, jax.random.key(3), 4000)
    exact = exact_epsilon(TINY)
    assert 0.05 < exact < 0.6
    assert abs(eps[0] - exact) < 4 * se[0]
    # several messages of one intention are less ambiguous, roughly multiplicatively (Jiang)
    assert eps[0] > eps[1] > eps[2]
    # a noise-free first letter names the intention: the author's labelled languages have eps = 0
    clean = dataclasses.replace(TINY, first_letter_ambiguity=0.0)
    assert bayes.measured_ambiguity(clean, jax.random.key(3), 4000)[0][0] == pytest.approx(0.0, abs=1e-6)
