"""The replicate evaluation set: every run's final parameters scored again on independent data.

Every seed of a sweep is evaluated on the same data (`Train.make_eval_batch`, key
`train.eval_seed`), so that curves of different runs are comparable. The sampling error of that
one set is common to every seed and invisible to a bootstrap over seeds (`jaxlab.claims`): a
claim's whole interval can sit on the wrong side of a threshold because the set happens to be
easy. After training, each run is therefore scored once more, by the same compiled `interval`
program with zero optimizer steps, on a replicate set of the same size drawn the same way from
the key `replicate_eval_seed(train.eval_seed)`; its metrics are final metrics named
`REPLICATE_PREFIX + metric` (`replicate_eval_loss`, ...).

Only the evaluation data are redrawn (everything the experiment's `eval_data` builds from
`Train.eval_key`, fitted references included): constants that an evaluate function derives from
the config itself stay as they are. Metrics that `finalize` or `from_history` compute have no
replicate; claims that read them say so.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.claims import REPLICATE_PREFIX
from jaxlab.config import ExperimentConfig

# added to train.eval_seed (mod 2^31 - 1) for the replicate set's key: far from the small seeds
# of runs and from the small offsets experiments add to eval_seed for their own probe keys
REPLICATE_SEED_OFFSET = 7_919_007
_SEED_MODULUS = 2**31 - 1


def replicate_eval_seed(eval_seed: int) -> int:
    """The seed of the replicate evaluation set: (eval_seed + REPLICATE_SEED_OFFSET) mod (2^31 - 1)."""
    return (int(eval_seed) + REPLICATE_SEED_OFFSET) % _SEED_MODULUS


def replicate_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` with the replicate set's evaluation seed."""
    seed = replicate_eval_seed(cfg.train.eval_seed)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, eval_seed=seed))


def copy_tree(tree: Any, shardings: Any) -> Any:
    """A copy of a pytree of device arrays with the given shardings (the copy can be donated)."""
    return jax.jit(lambda t: jax.tree_util.tree_map(jnp.copy, t), out_shardings=shardings)(tree)


def replicate_row(history: dict[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
    """{REPLICATE_PREFIX + metric: [R] values} from row `row` of a host history {metric: [n_evals, R]}
    (the training loss, which the zero-step program does not measure, left out)."""
    return {REPLICATE_PREFIX + m: np.asarray(h[row]) for m, h in history.items() if m != "train_loss"}
