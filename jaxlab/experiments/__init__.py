"""jaxlab's experiments: one module each, defining `EXPERIMENT = jaxlab.train.experiment.Experiment(...)`.

`jaxlab.registry` finds them by name (`get_experiment("icl-regression")`); the experiment protocol
itself lives below the runner, in `jaxlab.train.experiment`.
"""
