"""What an experiment is, for the runner: presets, in-training metrics, post-training probes, report sections.

The protocol lives below the runner (`jaxlab.train.sweep`), which takes an `Experiment` object:
`run_sweep(experiment, cfg, out_dir)`. jaxlab's own experiments define `EXPERIMENT =
Experiment(...)` in a module of `jaxlab.experiments`; a user's experiment is the same object in a
file of their own (docs/extending.md). Names map to experiments in one place, `jaxlab.registry`,
used by the command line and by report loading only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxlab import tasks
from jaxlab.claims import Claim
from jaxlab.config import ExperimentConfig, ProbeConfig
from jaxlab.errors import ConfigError
from jaxlab.reporting import ReportContext, Section
from jaxlab.train.engine import EvalFn, Train, TrainState, make_train
from jaxlab.train.plan import ExecutionPlan


@dataclass
class Finalized:
    """Post-training results of one program (a group of R runs).

    per_run: metric -> [R] values, written as `final` metrics at the last step.
    history: metric -> ([n] steps, [R, n] values), extra trajectories (e.g. probes at checkpoints).
    reference: experiment-level scalars (e.g. the fitted GD learning rate).
    """

    per_run: dict[str, np.ndarray] = field(default_factory=dict)
    history: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """An experiment, for the runner: its name, description and presets, the probe section's class,
    and the hooks the runner calls (each commented at its field): on-device evaluation and its data,
    post-training probes (`finalize`, `from_history`), report sections, the analysis across programs
    (`after_sweep`), the paper's claims and the setup's deviations from the paper.
    """

    name: str
    description: str
    presets: Mapping[str, Callable[[], ExperimentConfig]]
    default_preset: str = "quick"
    probe_class: type = ProbeConfig
    metrics: Mapping[str, str] = field(default_factory=dict)
    # (cfg) -> metrics computed on device at every evaluation, or None.
    make_evaluate: Callable[[ExperimentConfig], EvalFn | None] = lambda cfg: None
    # (train) -> the fixed evaluation data (any pytree) given to the evaluate function, or None
    # for the default: one batch of `train.eval_batch_size` task samples.
    eval_data: Callable[[Train], Any] | None = None
    # (train, final_state [R], hparams [R], seeds [R]) -> Finalized, vectorized over the R runs.
    finalize: Callable[[Train, TrainState, Mapping[str, Any], np.ndarray], Finalized] | None = None
    # (train, history {metric: [R, n_evals]}, steps [n_evals]) -> {metric: [R]} (or a Finalized)
    # derived from the whole evaluation history (e.g. onset steps), merged into `finalize`'s result.
    # Called once per run chunk, on the host, with this process's runs of the chunk.
    from_history: Callable[[Train, Mapping[str, np.ndarray], np.ndarray], dict[str, np.ndarray] | Finalized] | None = (
        None
    )
    # (context) -> extra report sections.
    report: Callable[[ReportContext], list[Section]] | None = None
    # (outcomes of every group, in group order) -> experiment-level results across groups, for
    # sweeps of several programs (e.g. comparing a GeLU group with a SoLU group).
    after_sweep: Callable[[list[Any]], Finalized] | None = None
    # the paper's claims, tested on every sweep's runs; their verdicts go to summary.json (`jaxlab.claims`)
    claims: Sequence[Claim] = ()
    # (cfg) -> how this config's setup differs from the paper's, one line each (summary.json, report)
    deviations: Callable[[ExperimentConfig], Sequence[str]] = lambda cfg: ()

    def make_train(self, cfg: ExperimentConfig, plan: ExecutionPlan | None = None) -> Train:
        """The experiment's training functions for `cfg` (its metrics and evaluation data included),
        executed as `plan` says (default: `make_plan(cfg)` for this process's backend)."""
        return make_train(cfg, self.make_evaluate(cfg), self.eval_data, plan=plan)

    def preset(self, name: str | None) -> ExperimentConfig:
        """The config of preset `name` (the default preset when None); ConfigError naming the presets otherwise."""
        name = self.default_preset if name is None else name  # '' is a name (none has it), not "the default"
        if name not in self.presets:
            raise ConfigError("--preset", f"experiment {self.name!r} has no preset {name!r}", sorted(self.presets))
        return self.presets[name]()

    def config_from_dict(self, data: Mapping[str, Any]) -> ExperimentConfig:
        """A config of this experiment from its JSON form (`ExperimentConfig.to_dict`, config.json)."""
        if data.get("experiment") != self.name:
            raise ConfigError("experiment", f"the config is of {data.get('experiment')!r}, not {self.name!r}")
        return ExperimentConfig.from_dict(data, probe_class=self.probe_class, task_classes=tasks.config_classes())
