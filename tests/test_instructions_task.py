"""The synthetic instruction-following task: layout, grammar, splits, labels, errors."""

import functools

import jax
import numpy as np
import pytest
from scipy.stats import chisquare

from jaxlab.errors import ConfigError
from jaxlab.tasks import instructions as ins
from jaxlab.tasks import sample, task_spec

CFG = ins.Config(
    n_tasks=4, n_inputs=5, n_output_tokens=8, output_len=2, keywords_per_task=3, n_fillers=10,
    n_distributions=3, n_unseen_distributions=2, template_len=7, n_optional=2, n_alternative=2, alt_width=3,
)  # fmt: skip
_split = jax.jit(ins.sample_split, static_argnums=(1, 2, 3, 4))


def np_decode(w, dist, string, L):
    """Independent decoding: digits of the string index (first slot least significant)."""
    tokens = []
    for s in range(L):
        radix = w.slot_radix[dist, s]
        digit = string % radix
        string //= radix
        kind = w.slot_kind[dist, s]
        if kind == ins.OPTIONAL and digit == 0:
            continue
        tokens.append(w.slot_tokens[dist, s, digit if kind == ins.ALTERNATIVE else 0])
    return [ins.PAD] * (L - len(tokens)) + tokens


@functools.cache
def np_batch(split, balanced=False, n=1024):
    """One batch per split, shared by the tests (compiling the sampler is most of their cost)."""
    b = _split(jax.random.key(ins.SPLITS.index(split) + 10 * balanced), CFG, n, split, balanced)
    arrays = (b.inputs, b.targets, b.loss_mask)
    return (*(np.asarray(a) for a in arrays), {k: np.asarray(v) for k, v in b.aux.items()})


def test_layout_targets_and_loss_mask():
    L = CFG.template_len
    x, y, mask, aux = np_batch("train")
    spec = task_spec(CFG)
    assert x.shape == (1024, spec.seq_len) == (1024, L + 3 + CFG.output_len - 1)
    assert spec.loss == "xent" and spec.vocab_size == spec.output_dim == ins.vocab_layout(CFG)["size"]
    lay = ins.vocab_layout(CFG)
    np.testing.assert_array_equal(x[:, L], ins.SEP_IN)
    np.testing.assert_array_equal(x[:, L + 1], lay["inputs"] + aux["input"])
    np.testing.assert_array_equal(x[:, L + 2], ins.SEP_OUT)
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])  # next-token targets
    # loss only where the next token is an output token, and that token is f_task(input)
    expect_mask = np.zeros(x.shape[1])
    expect_mask[L + 2 : L + 2 + CFG.output_len] = 1
    np.testing.assert_array_equal(mask, np.broadcast_to(expect_mask, mask.shape))
    w = ins.world(CFG)
    np.testing.assert_array_equal(y[:, L + 2 :], w.functions[aux["task"], aux["input"]])
    assert np.all((y[:, L + 2 :] >= lay["outputs"]) & (y[:, L + 2 :] < lay["size"]))
    # the same through the task registry (the training sampler)
    b = sample(jax.random.key(0), CFG, 4)
    assert b.inputs.shape == (4, spec.seq_len)


def test_instructions_follow_their_grammar():
    x, _, _, aux = np_batch("train")
    w = ins.world(CFG)
    L = CFG.template_len
    for row, d, s in zip(x, aux["distribution"], aux["string"]):
        assert list(row[:L]) == np_decode(w, int(d), int(s), L)
    # the world's grammar: kinds counted as configured, each slot's tokens from its group
    kinds = w.slot_kind
    assert np.all((kinds == ins.OPTIONAL).sum(1) == CFG.n_optional)
    assert np.all((kinds == ins.ALTERNATIVE).sum(1) == CFG.n_alternative)
    assert ins.strings_per_distribution(CFG) == 2**2 * 3**2


def test_each_instruction_names_its_task_and_no_other():
    """Keywords are task-specific and every string has one: only the instruction tells tasks apart."""
    lay = ins.vocab_layout(CFG)
    for split in ("train", "unseen_strings", "unseen_distributions"):  # a table has no unseen-input split
        x, _, _, aux = np_batch(split)
        instr = x[:, : CFG.template_len]
        is_kw = (instr >= lay["keywords"]) & (instr < lay["fillers"])
        owner = (instr - lay["keywords"]) // CFG.keywords_per_task
        assert np.all(is_kw.any(1)), split
        assert np.all(np.where(is_kw, owner == aux["task"][:, None], True)), split
    # all tasks share the same inputs; their functions differ
    w = ins.world(CFG)
    assert w.functions.shape == (CFG.n_tasks, CFG.n_inputs, CFG.output_len)
    flat = w.functions.reshape(CFG.n_tasks, -1)
    assert len({tuple(f) for f in flat}) == CFG.n_tasks


def test_splits_are_disjoint_and_cover_what_they_claim():
    w = ins.world(CFG)
    per_task = CFG.n_distributions + CFG.n_unseen_distributions
    n_strings, n_held = ins.strings_per_distribution(CFG), ins.heldout_count(CFG)
    assert n_held == round(0.2 * n_strings) and w.train_strings.shape[1] == n_strings - n_held
    for d in range(w.dist_task.size):  # each distribution's strings are split in two, no overlap
        both = np.concatenate([w.train_strings[d], w.heldout_strings[d]])
        assert sorted(both) == list(range(n_strings))
    _, _, _, tr = np_batch("train")
    _, _, _, us = np_batch("unseen_strings")
    _, _, _, ud = np_batch("unseen_distributions")
    for aux in (tr, us, ud):
        assert np.all(aux["distribution"] // per_task == aux["task"])
    assert np.all(aux_local(tr) < CFG.n_distributions) and np.all(aux_local(us) < CFG.n_distributions)
    assert np.all(aux_local(ud) >= CFG.n_distributions)
    held = {(d, s) for d in range(w.dist_task.size) for s in w.heldout_strings[d]}
    assert not any((d, s) in held for d, s in zip(tr["distribution"], tr["string"]))
    assert all((d, s) in held for d, s in zip(us["distribution"], us["string"]))
    # training draws the seen distributions' training strings uniformly (1024 draws over 348 strings)
    counts = np.zeros((w.dist_task.size, n_strings))
    np.add.at(counts, (tr["distribution"], tr["string"]), 1)
    cells = np.concatenate([counts[d, w.train_strings[d]] for d in np.flatnonzero(w.seen)])
    assert cells.size == 348 and cells.sum() == 1024
    assert chisquare(cells).pvalue > 1e-4


def aux_local(aux):
    return aux["distribution"] % (CFG.n_distributions + CFG.n_unseen_distributions)


def test_balanced_sampling_determinism_and_vmap():
    _, _, _, aux = np_batch("train", balanced=True)
    assert np.all(np.bincount(aux["task"]) == 1024 // CFG.n_tasks)
    keys = jax.random.split(jax.random.key(7), 3)
    many = jax.jit(jax.vmap(lambda k: ins.sample(k, CFG, 16)))(keys)
    for i in range(3):
        one = _split(keys[i], CFG, 16, "train", False)
        np.testing.assert_array_equal(many.inputs[i], one.inputs)
    assert not np.array_equal(many.inputs[0], many.inputs[1])
    # the world is a function of world_seed alone
    other = ins.world(ins.Config(**{**CFG.__dict__, "world_seed": 1}))
    again = ins.world(ins.Config(**CFG.__dict__))
    np.testing.assert_array_equal(again.slot_tokens, ins.world(CFG).slot_tokens)
    assert not np.array_equal(other.slot_tokens, ins.world(CFG).slot_tokens)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"n_tasks": 1}, "task.n_tasks"),
        ({"template_len": 4, "n_optional": 3, "n_alternative": 2}, "task.template_len"),
        ({"heldout_frac": 1.0}, "task.heldout_frac"),
        ({"n_optional": 0, "n_alternative": 0, "heldout_frac": 0.2}, "task.heldout_frac"),
        ({"keyword_prob": 1.5}, "task.keyword_prob"),
        ({"n_inputs": 0}, "task.n_inputs"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        ins.Config(**{**CFG.__dict__, **overrides})
    assert err.value.field == field
    no_unseen = ins.Config(**{**CFG.__dict__, "n_unseen_distributions": 0})
    with pytest.raises(ConfigError, match="n_unseen_distributions"):
        ins.sample_split(jax.random.key(0), no_unseen, 4, "unseen_distributions")
    with pytest.raises(ConfigError, match="split"):
        ins.sample_split(jax.random.key(0), CFG, 4, "test")
    with pytest.raises(ConfigError, match="heldout_input_frac"):
        ins.sample_split(jax.random.key(0), CFG, 4, "unseen_inputs")


SEQ = ins.Config(**{**CFG.__dict__, "sequence_tasks": ins.SEQUENCE_TASKS, "n_tasks": 5, "n_inputs": 4, "input_len": 3,
                    "output_len": 3, "heldout_input_frac": 0.25})  # fmt: skip


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"sequence_tasks": ("copy", "lookup", "sort", "shift", "map")}, "task.sequence_tasks"),
        ({"sequence_tasks": ("copy", "copy", "sort", "shift", "map")}, "task.sequence_tasks"),
        ({"sequence_tasks": (), "heldout_input_frac": 0.2}, "task.heldout_input_frac"),
        ({"n_tasks": 4}, "task.sequence_tasks"),
        ({"input_len": 1, "output_len": 1}, "task.input_len"),
        ({"output_len": 2}, "task.output_len"),
        ({"n_output_tokens": 3}, "task.n_output_tokens"),
        ({"heldout_input_frac": 0.001}, "task.heldout_input_frac"),
        ({"input_len": 11, "output_len": 11}, "task.input_len"),
    ],
)
def test_bad_sequence_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        ins.Config(**{**SEQ.__dict__, **overrides})
    assert err.value.field == field


def test_sequence_tasks_answer_by_their_rule_and_hold_out_inputs():
    """copy, reverse, sort, shift and map, recomputed in NumPy from the input tokens of sampled sequences; the
    held-out input sequences appear only in the unseen_inputs split."""
    lay, pos, n = ins.vocab_layout(SEQ), ins.positions(SEQ), SEQ.input_len
    assert (pos["input"], pos["last_input"], pos["sep_output"]) == (8, 10, 11)
    assert ins.seq_len(SEQ) == SEQ.template_len + n + 2 + SEQ.output_len - 1
    w = ins.world(SEQ)
    assert sorted(np.concatenate([w.train_inputs, w.heldout_inputs])) == list(range(4**3))
    assert w.heldout_inputs.size == ins.heldout_input_count(SEQ) == 16
    perm = None
    seen_inputs = {}
    for split in ("train", "unseen_inputs"):
        b = _split(jax.random.key(7), SEQ, 512, split, True)
        x, y, mask = np.asarray(b.inputs), np.asarray(b.targets), np.asarray(b.loss_mask)
        task, idx = np.asarray(b.aux["task"]), np.asarray(b.aux["input"])
        assert np.all(x[:, pos["sep_input"]] == ins.SEP_IN) and np.all(x[:, pos["sep_output"]] == ins.SEP_OUT)
        digits = x[:, pos["input"] : pos["last_input"] + 1] - lay["inputs"]
        assert np.all((digits >= 0) & (digits < SEQ.n_inputs))
        np.testing.assert_array_equal(idx, digits @ (4 ** np.arange(n - 1, -1, -1)))
        start = pos["first_output_target"]
        answer = y[:, start : start + SEQ.output_len] - lay["outputs"]
        assert np.all(mask[:, start : start + SEQ.output_len] == 1) and mask.sum() == 512 * SEQ.output_len
        rules = {0: digits, 1: digits[:, ::-1], 2: np.sort(digits, 1), 3: (digits + 1) % 4}
        for k, want in rules.items():
            np.testing.assert_array_equal(answer[task == k], want[task == k])
        # map: one fixed permutation of the alphabet, the same for every example
        m = task == 4
        table = {}
        for d, a in zip(digits[m].ravel(), answer[m].ravel()):
            assert table.setdefault(int(d), int(a)) == a
        perm = table if perm is None else perm
        assert table == {k: perm[k] for k in table} and len(set(table.values())) == len(table)
        seen_inputs[split] = set(idx.tolist())
    assert seen_inputs["unseen_inputs"] <= set(w.heldout_inputs.tolist())
    assert not seen_inputs["train"] & set(w.heldout_inputs.tolist())
