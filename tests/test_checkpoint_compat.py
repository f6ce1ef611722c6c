"""Checkpoints written by a jaxlab with another state or evaluation: intact, so never called damaged;
a resume stops with a message and moves nothing; reading fills metrics the writer did not record."""

from collections import namedtuple

import jax
import numpy as np
import pytest

from jaxlab.train.checkpoint import DAMAGED, GroupCheckpointer, IncompatibleCheckpoint, leaf_paths

STATE = {"params": {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3)}, "step": np.array([5, 5], np.int32)}
HISTORY = {"eval_loss": np.array([[1.0, 2.0]], np.float32), "gd_loss": np.array([[3.0, 4.0]], np.float32)}


def saved(tmp_path, history=HISTORY) -> GroupCheckpointer:
    ckpt = GroupCheckpointer(tmp_path / "chunk", keep=0, async_save=False)
    ckpt.save(0, STATE, history)
    ckpt.wait()
    return ckpt


def zeros(tree):
    return jax.tree_util.tree_map(np.zeros_like, tree)


def test_a_history_with_a_metric_more_or_less_is_incompatible_not_damaged(tmp_path):
    ckpt = saved(tmp_path)
    newer = {**zeros(HISTORY), "spd_gd1": np.zeros((1, 2), np.float32)}
    with pytest.raises(IncompatibleCheckpoint) as err:
        ckpt.restore(0, STATE, newer)
    assert (err.value.only_saved, err.value.only_expected) == ([], ["history/spd_gd1"])
    assert "only in this version: history/spd_gd1" in str(err.value)
    with pytest.raises(IncompatibleCheckpoint) as err:
        ckpt.restore(0, STATE, {"eval_loss": HISTORY["eval_loss"]})
    assert (err.value.only_saved, err.value.only_expected) == (["history/gd_loss"], [])
    # restore_newest does not move it aside as damaged: it stops
    with pytest.raises(IncompatibleCheckpoint):
        ckpt.restore_newest(STATE, newer)
    assert ckpt.all() == [0] and not (tmp_path / "chunk" / DAMAGED).exists()
    ckpt.close()


def test_reading_fills_metrics_the_writer_did_not_record_and_leaves_out_retired_ones(tmp_path):
    ckpt = saved(tmp_path)
    newer = {"eval_loss": np.zeros((1, 2), np.float32), "spd_gd1": np.zeros((1, 2), np.float32)}
    state, history = ckpt.restore(0, zeros(STATE), newer, "nan")
    np.testing.assert_array_equal(state["params"]["w"], STATE["params"]["w"])
    np.testing.assert_array_equal(history["eval_loss"], HISTORY["eval_loss"])  # verified against its sums
    assert history["spd_gd1"].shape == (1, 2) and np.isnan(history["spd_gd1"]).all()
    assert list(history) == ["eval_loss", "spd_gd1"]  # gd_loss, retired here, left out
    ckpt.close()


def test_a_state_of_another_structure_is_incompatible_even_for_reading(tmp_path):
    ckpt = saved(tmp_path)
    other = {"params": {"w": STATE["params"]["w"], "b": np.zeros(3, np.float32)}, "step": STATE["step"]}
    with pytest.raises(IncompatibleCheckpoint) as err:
        ckpt.restore(0, other, zeros(HISTORY), "nan")
    assert err.value.only_expected == ["state/params/b"] and err.value.only_saved == []
    ckpt.close()


def test_leaf_paths_name_dict_keys_fields_and_indices_alike():
    Pair = namedtuple("Pair", ["mu", "nu"])
    tree = {"opt": (None, [Pair(np.zeros(1), np.zeros(1)), None]), "w": np.zeros(2)}
    assert leaf_paths(tree) == {"opt/1/0/mu", "opt/1/0/nu", "w"}
    as_saved = {"opt": [None, [{"mu": 0.0, "nu": 0.0}, None]], "w": 0.0}  # orbax's metadata of the same tree
    assert leaf_paths(as_saved) == leaf_paths(tree)
