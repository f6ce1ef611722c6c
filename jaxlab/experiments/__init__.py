"""jaxlab's experiments: one module each, defining `EXPERIMENT = jaxlab.train.experiment.Experiment(...)`.

Every experiment has the same shape:
  <name>.py          settings (its `ProbeConfig`), presets built from the shared model presets
                     (`jaxlab.models.presets`), a pure evaluation (`make_evaluate`, `eval_data`),
                     probes from `jaxlab.probes`, `from_history` / `finalize`, METRICS, EXPERIMENT;
  <name>_report.py   its report: `sections(ctx) -> list[Section]` built from `jaxlab.reporting`,
                     imported at the top of <name>.py (`report=_report.sections`), never the other
                     way (a report that needs the experiment gets it as `ctx.experiment`);
  <name>_analysis.py (when needed) analyses across programs (`after_sweep`).
Shared pieces have one implementation below: onsets and correlations in `jaxlab.stats`, the
cosine in `jaxlab.probes.cosine`, residual-stream hooks in `jaxlab.models.residual_hooks`, final
values and their spread in `jaxlab.reporting` (`finals`, `spread`).

`jaxlab.registry` finds them by name (`get_experiment("icl-regression")`); the experiment protocol
itself lives below the runner, in `jaxlab.train.experiment`.
"""
