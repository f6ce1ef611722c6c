"""The concept language: its statistics match the config; paired stimuli differ only by the concept."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.errors import ConfigError
from jaxlab.tasks import concepts, task_spec

CFG = concepts.Config(seq_len=24, n_base=16, branching=3, background=0.02)


@pytest.fixture(scope="module")
def batch():
    return jax.jit(lambda k: concepts.sample(k, CFG, 4096))(jax.random.key(0))


def test_marker_layout_and_spec():
    table = concepts.marker_table(CFG)
    a, b = CFG.close_pair
    shared = set(table[a]) & set(table[b])
    assert len(shared) == CFG.n_shared
    for i in range(CFG.n_concepts):
        for j in range(i + 1, CFG.n_concepts):
            if {i, j} != {a, b}:
                assert not set(table[i]) & set(table[j])
    assert table.min() == CFG.n_base
    V = CFG.n_base + CFG.n_concepts * CFG.n_markers - CFG.n_shared
    spec = task_spec(CFG)
    assert spec.vocab_size == V == concepts.vocab_size(CFG) and spec.loss == "xent" and spec.seq_len == 24
    mask = concepts.marker_mask(CFG)
    assert mask.shape == (CFG.n_concepts, V) and mask.sum(1).tolist() == [CFG.n_markers] * CFG.n_concepts


def test_concept_frequencies_and_marker_rates_match_config(batch):
    z = np.asarray(batch.aux["z"])
    np.testing.assert_allclose(z.mean(0), CFG.freqs, atol=0.03)  # 4 sigma at B = 4096
    tokens = np.concatenate([np.asarray(batch.inputs), np.asarray(batch.targets[:, -1:])], axis=1)
    np.testing.assert_array_equal(batch.targets[:, :-1], batch.inputs[:, 1:])
    table = concepts.marker_table(CFG)
    K, M = CFG.n_concepts, CFG.n_markers
    overlap = np.array([[len(set(table[i]) & set(table[j])) / M for j in range(K)] for i in range(K)])
    for k in range(K):
        in_k = np.isin(tokens, table[k])
        # P(x_t in M_k | z) = sum_j z_j s_j |M_j & M_k| / M + background * sum_j |M_j & M_k| / (K M)
        expected = z @ (np.asarray(CFG.strengths) * overlap[:, k]) + CFG.background * overlap[:, k].sum() / K
        # positions are independent given z: 4 binomial standard deviations
        tol = 4 * np.sqrt(expected.mean() / in_k.size)
        assert abs(in_k.mean() - expected.mean()) < tol
        on_alone = (z[:, k] == 1) & (z.sum(1) == 1)
        p = expected[on_alone].mean()
        assert abs(in_k[on_alone].mean() - p) < 4 * np.sqrt(p / in_k[on_alone].size)
    # the base chain follows its successor table wherever two base tokens are adjacent
    succ = np.asarray(concepts.successor_table(CFG))
    prev, nxt = tokens[:, :-1], tokens[:, 1:]
    both_base = (prev < CFG.n_base) & (nxt < CFG.n_base)
    allowed = (succ[np.minimum(prev, CFG.n_base - 1)] == nxt[..., None]).any(-1)
    assert both_base.sum() > 10_000 and allowed[both_base].all()


def test_paired_stimuli_differ_only_by_the_concept():
    n = 256
    on, off = jax.jit(jax.vmap(lambda c: concepts.paired_stimuli(jax.random.key(3), CFG, c, n)))(
        jnp.arange(CFG.n_concepts)
    )
    on, off = np.asarray(on), np.asarray(off)
    assert on.shape == off.shape == (CFG.n_concepts, n, CFG.seq_len)
    table = concepts.marker_table(CFG)
    for k in range(CFG.n_concepts):
        differ = on[k] != off[k]
        assert differ.any(axis=1).all(), "every pair carries at least one marker of its concept"
        assert np.isin(on[k][differ], table[k]).all()
        assert (off[k][differ] < CFG.n_base).all()
        # markers of the concept fire at its strength (plus the forced one when none fires)
        rate = differ.mean()
        s = CFG.strengths[k]
        T = CFG.seq_len  # the last position never fires; the forced marker when none of the others does
        expected = (s * (T - 1) + (1 - s) ** (T - 1)) / T
        assert abs(rate - expected) < 4 * np.sqrt(s / differ.size)
        # the reading position is the same base token in both members
        np.testing.assert_array_equal(on[k][:, -1], off[k][:, -1])
        assert (on[k][:, -1] < CFG.n_base).all()
    # the same draws: every concept's "off" member is the same text
    assert (off == off[0]).mean() > 0.99


def test_base_sequences_have_no_concept_markers():
    seqs = np.asarray(concepts.base_sequences(jax.random.key(4), CFG, 2048))
    assert seqs.shape == (2048, CFG.seq_len) and (seqs[:, -1] < CFG.n_base).all()
    markers = seqs >= CFG.n_base  # background markers only
    assert abs(markers[:, :-1].mean() - CFG.background) < 4 * np.sqrt(CFG.background / markers[:, :-1].size)


def test_sampling_is_pure_and_vmappable():
    keys = jax.random.split(jax.random.key(7), 3)
    many = jax.jit(jax.vmap(lambda k: concepts.sample(k, CFG, 8)))(keys)
    one = concepts.sample(keys[1], CFG, 8)
    np.testing.assert_array_equal(many.inputs[1], one.inputs)
    np.testing.assert_array_equal(many.aux["z"][1], one.aux["z"])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("freqs", (0.5, 0.5), "task.freqs"),
        ("strengths", (0.5, 0.5, 0.2, 0.2), "task.strengths"),
        ("names", ("joy", "Joy!", "a", "b"), "task.names"),
        ("names", ("joy", "nan", "a", "b"), "task.names"),  # a concept column would read it as a float
        ("close_pair", (1, 1), "task.close_pair"),
        ("n_shared", 4, "task.n_shared"),
        ("branching", 0, "task.branching"),
        ("language", "tokens", "task.language"),
    ],
)
def test_bad_config_names_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        concepts.Config(**{field: value})


# -- the co-occurrence language ------------------------------------------------------------------------
CO = concepts.Config(
    language="cooccur", seq_len=16, n_base=12, freqs=(0.3,) * 4, strengths=(0.1,) * 4, n_shared=3, background=0.03
)


def test_cooccur_pairs_form_a_latin_square_and_the_close_pair_are_mirror_images():
    pairs = concepts.feature_table(CO)  # [K, F, 2]
    K, F = CO.n_concepts, CO.n_markers
    p, q = CO.close_pair
    starts = list(range(CO.n_base, CO.n_base + F))
    for k in range(K):
        assert pairs[k, :, 0].tolist() == starts  # every concept uses every start token once
    as_sets = [set(map(tuple, pairs[k].tolist())) for k in range(K)]
    for i in range(K):
        for j in range(i + 1, K):
            assert len(as_sets[i] & as_sets[j]) == (CO.n_shared if {i, j} == {p, q} else 0)
    own = {k: set(pairs[k, CO.n_shared :, 1].tolist()) for k in (p, q)}
    others = {b for k in range(K) if k not in (p, q) for b in pairs[k, :, 1].tolist()}
    assert not own[p] & own[q] and not (own[p] | own[q]) & others  # fresh tokens, one set each
    assert concepts.vocab_size(CO) == int(pairs.max()) + 1 == task_spec(CO).vocab_size
    # swapping the pair's fresh tokens maps the text with p on to the same draws' text with q on (without
    # background, which draws fresh tokens for both alike: the swap leaves its distribution as it is)
    swap = np.arange(concepts.vocab_size(CO))
    for a, b in zip(sorted(own[p]), sorted(own[q])):
        swap[a], swap[b] = b, a
    quiet = dataclasses.replace(CO, background=0.0)
    on = {}
    for k in (p, q):
        on[k] = np.asarray(concepts.paired_stimuli(jax.random.key(11), quiet, k, 128)[0])
    assert (on[p] != on[q]).any()
    np.testing.assert_array_equal(swap[on[p]], on[q])


def test_cooccur_text_is_pairs_of_the_concepts_on_and_helpers_match_loops():
    batch = jax.jit(lambda k: concepts.sample(k, CO, 2048))(jax.random.key(12))
    x = np.concatenate([np.asarray(batch.inputs), np.asarray(batch.targets[:, -1:])], axis=1)
    z = np.asarray(batch.aux["z"])
    pairs = concepts.feature_table(CO)
    starts = set(concepts.start_tokens(CO).tolist())
    is_start = np.isin(x, list(starts))
    # every start token but one at the end is followed by a b token, and a start never follows a start
    assert np.isin(x[:, 1:][is_start[:, :-1]], concepts.pool_tokens(CO)).all()
    assert not (is_start[:, 1:] & is_start[:, :-1]).any()
    hits = np.zeros((x.shape[0], CO.n_concepts))
    for n in range(x.shape[0]):  # straightforward: count each concept's pairs in the text
        for t in range(1, x.shape[1]):
            for k in range(CO.n_concepts):
                hits[n, k] += (x[n, t - 1], x[n, t]) in set(map(tuple, pairs[k].tolist()))
    np.testing.assert_array_equal(np.asarray(concepts.concept_hits(CO, jnp.asarray(x), 0)), hits)
    # a concept's own pairs come with it: with only background, a given pair is rare
    p, q = CO.close_pair
    alone = [k for k in range(CO.n_concepts) if k not in (p, q)]
    for k in alone:
        on, off = hits[z[:, k] == 1, k].mean(), hits[z[:, k] == 0, k].mean()
        assert on > 1.0 and off < 0.3 * on
    # next-token masks: the concept's partner of the last token, none after a non-start token
    masks = np.asarray(concepts.next_token_masks(CO, jnp.asarray(x[:, :-1])))
    partner = concepts.partner_table(CO)
    for k in range(CO.n_concepts):
        for n in range(64):
            want = np.zeros(concepts.vocab_size(CO))
            if x[n, -2] in starts:
                want[partner[k, x[n, -2]]] = 1.0
            np.testing.assert_array_equal(masks[k, n], want)


def test_cooccur_stimuli_end_on_the_same_start_token_and_carry_the_concept():
    on, off = jax.jit(jax.vmap(lambda c: concepts.paired_stimuli(jax.random.key(13), CO, c, 256)))(
        jnp.arange(CO.n_concepts)
    )
    on, off = np.asarray(on), np.asarray(off)
    starts = concepts.start_tokens(CO)
    for k in range(CO.n_concepts):
        np.testing.assert_array_equal(on[k][:, -1], off[k][:, -1])
        assert np.isin(on[k][:, -1], starts).all()
        hits_on = np.asarray(concepts.concept_hits(CO, jnp.asarray(on[k]), 0))[:, k]
        assert (hits_on >= 1).all(), "every 'on' member carries a pair of its concept"
    texts = np.asarray(concepts.base_texts(jax.random.key(14), CO, 512))
    assert texts.shape == (512, CO.seq_len + 1) and np.isin(texts[:, -2], starts).all()
    assert np.isin(texts[:, -1], concepts.pool_tokens(CO)).all()
    np.testing.assert_array_equal(np.asarray(concepts.base_sequences(jax.random.key(14), CO, 512)), texts[:, :-1])
