"""The latent-intention language: construction, layout, sampling statistics, config errors."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxlab.errors import ConfigError
from jaxlab.rng import rng_scope
from jaxlab.tasks import latent, sample, task_spec

CFG = latent.Config(n_intentions=3, letters_per_intention=2, message_len=5, n_messages=4, chain_stay=0.7, ambiguity=0.1)


def test_language_formulas_against_a_direct_construction():
    cfg = dataclasses.replace(CFG, first_letter_ambiguity=0.2)
    lang = latent.language(cfg)
    K, l, V, c, c1 = 3, 2, 6, 0.1, 0.2
    blocks = np.random.default_rng(cfg.language_seed).random((K, l, l))
    blocks /= blocks.sum(-1, keepdims=True)
    for th in range(K):
        own = [th * l + i for i in range(l)]
        for u in range(V):
            row = np.full(V, c)
            if u in own:
                row[own] += blocks[th, own.index(u)]
            np.testing.assert_allclose(lang.trans[th, u], row / row.sum(), rtol=1e-12)
            if u not in own:  # off the block the next letter is uniform
                np.testing.assert_allclose(lang.trans[th, u], 1.0 / V, rtol=1e-12)
        first = np.full(V, c1)
        first[own] += 1.0 / l
        np.testing.assert_allclose(lang.first[th], first / first.sum(), rtol=1e-12)
    np.testing.assert_allclose(lang.prior, 1.0 / K)
    np.testing.assert_allclose(lang.chain, [[0.7, 0.3, 0], [0, 0.7, 0.3], [0.3, 0, 0.7]])
    uniform_move = latent.language(dataclasses.replace(cfg, chain_move="uniform")).chain
    np.testing.assert_allclose(uniform_move, [[0.7, 0.15, 0.15], [0.15, 0.7, 0.15], [0.15, 0.15, 0.7]])
    # unambiguous language: letters never leave the intention's block
    clean = latent.language(dataclasses.replace(cfg, ambiguity=0.0, first_letter_ambiguity=None))
    for th in range(K):
        own = slice(th * l, (th + 1) * l)
        assert clean.first[th, own].sum() == pytest.approx(1.0)
        assert clean.trans[th, own, own].sum(-1) == pytest.approx(np.ones(l))


def jit_sample(cfg, batch_size):
    return jax.jit(lambda key: sample(key, cfg, batch_size))


def test_layout_delimiters_and_targets():
    draw = jit_sample(CFG, 16)
    b = draw(jax.random.key(0))
    x, y, theta = np.asarray(b.inputs), np.asarray(b.targets), np.asarray(b.aux["theta"])
    T, L, D = CFG.seq_len, CFG.message_len, CFG.delimiter
    assert x.shape == y.shape == (16, T) == (16, 4 * 6) and theta.shape == (16, 4)
    assert task_spec(CFG).vocab_size == 7 and task_spec(CFG).loss == "xent"
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    np.testing.assert_array_equal(y[:, -1], D)
    k, j = latent.positions(CFG)
    assert np.all(x[:, j == 0] == D) and np.all(x[:, j > 0] < D)
    assert np.all(y[:, j == L] == D) and np.all(y[:, j < L] < D)
    np.testing.assert_array_equal(np.asarray(b.loss_mask), 1.0)
    # the same key gives the same data; the sampler vmaps over keys
    np.testing.assert_array_equal(np.asarray(draw(jax.random.key(0)).inputs), x)
    assert not np.array_equal(np.asarray(draw(jax.random.key(1)).inputs), x)
    with rng_scope():
        many = jax.jit(jax.vmap(lambda key: latent.sample(key, CFG, 4).inputs))(jax.random.split(jax.random.key(1), 3))
    assert many.shape == (3, 4, T) and not np.array_equal(many[0], many[1])


def counts_close(observed, probs, n):
    """Empirical frequencies within 5 binomial standard errors (+ a small floor) of `probs`."""
    freq = observed / n
    tol = 5 * np.sqrt(probs * (1 - probs) / n) + 2e-3
    return np.all(np.abs(freq - probs) <= tol)


def test_sampling_frequencies_match_the_language():
    cfg = dataclasses.replace(CFG, first_letter_ambiguity=0.3)
    lang = latent.language(cfg)
    b = jit_sample(cfg, 20000)(jax.random.key(2))
    theta = np.asarray(b.aux["theta"])
    letters = np.asarray(b.inputs).reshape(-1, cfg.n_messages, cfg.message_len + 1)[:, :, 1:]
    K, V = cfg.n_intentions, cfg.n_letters
    # intentions: uniform start, then the chain
    assert counts_close(np.bincount(theta[:, 0], minlength=K), lang.prior, theta.shape[0])
    for a in range(K):
        nxt = theta[:, 1:][theta[:, :-1] == a]
        assert counts_close(np.bincount(nxt, minlength=K), lang.chain[a], nxt.size)
    th = np.broadcast_to(theta[:, :, None], letters.shape)
    for a in range(K):
        first = letters[:, :, 0][theta == a]
        assert counts_close(np.bincount(first, minlength=V), lang.first[a], first.size)
        for u in (a * 2, (a * 2 + 3) % V):  # a letter of the block and one off it
            mask = (th[:, :, :-1] == a) & (letters[:, :, :-1] == u)
            nxt = letters[:, :, 1:][mask]
            assert counts_close(np.bincount(nxt, minlength=V), lang.trans[a, u], nxt.size)
    with rng_scope():
        icl = jax.jit(lambda key: latent.sample_sequences(key, cfg, 500, same_intention=True).aux["theta"])
        same = np.asarray(icl(jax.random.key(3)))
    assert np.all(same == same[:, :1]) and len(np.unique(same[:, 0])) == K


def test_impossible_letters_are_never_drawn():
    cfg = dataclasses.replace(CFG, ambiguity=0.0, n_intentions=4)
    b = jit_sample(cfg, 4000)(jax.random.key(4))
    theta = np.asarray(b.aux["theta"])
    letters = np.asarray(b.inputs).reshape(4000, cfg.n_messages, -1)[:, :, 1:]
    assert np.all(letters // cfg.letters_per_intention == theta[:, :, None])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_intentions", 1),
        ("letters_per_intention", 0),
        ("message_len", 0),
        ("chain_stay", 1.5),
        ("chain_move", "random"),
        ("ambiguity", -0.1),
        ("first_letter_ambiguity", -1.0),
    ],
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"task.{field}"):
        latent.Config(**{field: value})
