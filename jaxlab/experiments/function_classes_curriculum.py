"""Garg et al.'s training curriculum for function-classes (Garg, Tsipras, Liang & Valiant 2022, Sec. 3;
github.com/dtsip/in-context-learning, `src/curriculum.py`).

The task draws the batch of training step t under its curriculum (`function_classes.sample(...,
step=t)`: d_t = min(start + inc * floor(t / interval), end) effective dimensions, loss on the first n_t
examples); the engine's task protocol, `sample(key, cfg, batch_size)`, has no step. `CurriculumTrain`
is the engine's `Train` with `stream_batch(data_key, t)`, the one place every training batch is
drawn (the step, the first-step loss, shared streams), handing the step on. The step is the traced
`state.step`, so one compiled program serves every stage of the curriculum; evaluation batches keep
the full d and N.
"""

from __future__ import annotations

from dataclasses import dataclass

import chex
import jax
import jax.numpy as jnp

from jaxlab.config import ExperimentConfig
from jaxlab.rng import in_rng_scope
from jaxlab.tasks import Batch
from jaxlab.tasks import function_classes as fc
from jaxlab.train.engine import Train
from jaxlab.train.experiment import Experiment
from jaxlab.train.plan import ExecutionPlan


class CurriculumTrain(Train):
    """`Train` whose training batch of step t is `function_classes.sample(fold_in(data_key, t), task,
    batch_size, step=t)`: the same key as the engine's, the curriculum's sizes at t (module docstring)."""

    @in_rng_scope
    def stream_batch(self, data_key: jax.Array, step: jax.Array | int) -> Batch:
        """The training batch of step `step` of the data stream `data_key`, under the task's curriculum."""
        chex.assert_shape(data_key, (None,))
        task, batch_size = self.cfg.task, self.cfg.train.batch_size
        step = jnp.asarray(step, jnp.int32)
        key = jax.random.fold_in(self._key(data_key), step)
        return self._per_run(lambda k, t: fc.sample(k, task, batch_size, step=t))(key, step)


@dataclass(frozen=True)
class CurriculumExperiment(Experiment):
    """`Experiment` that trains with `CurriculumTrain` when the task config sets a curriculum."""

    def make_train(self, cfg: ExperimentConfig, plan: ExecutionPlan | None = None) -> Train:
        """`Experiment.make_train`, as a `CurriculumTrain` when `cfg.task.has_curriculum`."""
        if not getattr(cfg.task, "has_curriculum", False):
            return super().make_train(cfg, plan)
        return CurriculumTrain(cfg, self.make_evaluate(cfg), self.eval_data, plan=plan)


__all__ = ["CurriculumExperiment", "CurriculumTrain"]
