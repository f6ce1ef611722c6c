"""Names -> experiments and tasks: the one place that maps them, for the command line and report loading.

jaxlab's experiments are the modules of `jaxlab.experiments` that define `EXPERIMENT`. A plug-in is
an `Experiment` (or a task `Config` class) defined outside jaxlab and named by where it lives:

    path/to/file.py:NAME        a Python file (loaded as a module of its own)
    package.module:NAME         an importable module

`load_plugin(spec)` loads it; an `Experiment` becomes known by its name (so `jaxlab report` of its
run directory finds it again when given the same `--plugin`), a task config class by its `kind`
(`jaxlab.tasks.register`). The library itself never looks names up: `run_sweep` takes the
experiment object.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
import sys
import traceback
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import jaxlab.experiments
from jaxlab import results, runfiles, tasks
from jaxlab.config import ExperimentConfig, TaskSection
from jaxlab.errors import ConfigError, UserError
from jaxlab.train.experiment import Experiment
from jaxlab.train.restore import checkpoint_indices, load_group

_PLUGINS: dict[str, Experiment] = {}


@cache
def builtin_experiments() -> dict[str, Experiment]:
    """jaxlab's experiments by name: every module of `jaxlab.experiments` that defines `EXPERIMENT`."""
    found: dict[str, Experiment] = {}
    for info in pkgutil.iter_modules(jaxlab.experiments.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"jaxlab.experiments.{info.name}")
        exp = getattr(module, "EXPERIMENT", None)
        if isinstance(exp, Experiment):
            found[exp.name] = exp
    return dict(sorted(found.items()))


def experiments() -> dict[str, Experiment]:
    """Every known experiment by name: jaxlab's and the loaded plug-ins'."""
    return {**builtin_experiments(), **_PLUGINS}


def get_experiment(name: str) -> Experiment:
    """The experiment called `name`, or the plug-in `file.py:NAME` / `module:NAME` (loaded on the way)."""
    if ":" in name:
        obj = load_plugin(name)
        if not isinstance(obj, Experiment):
            raise ConfigError("experiment", f"{name} is a {type(obj).__name__}, not a jaxlab Experiment")
        return obj
    known = experiments()
    if name not in known:
        raise ConfigError("experiment", f"unknown experiment {name!r}", [*known, "path/to/file.py:NAME"])
    return known[name]


def _module_of(where: str) -> ModuleType:
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise ConfigError("plug-in", f"no such file: {where}")
        name = f"jaxlab_plugin_{path.stem}_{abs(hash(str(path))):x}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError("plug-in", f"cannot load {where} as Python")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look classes up by module name
        try:
            spec.loader.exec_module(module)
        except BaseException as err:
            del sys.modules[name]
            if isinstance(err, Exception):  # the plug-in's own error: where it is, without jaxlab's frames
                raise ConfigError("plug-in", f"{where} failed to load: {_where_it_failed(err, path)}") from None
            raise
        return module
    try:
        return importlib.import_module(where)
    except ImportError as err:
        raise ConfigError("plug-in", f"cannot import module {where!r} ({err})") from None
    except Exception as err:
        raise ConfigError("plug-in", f"module {where!r} failed to load: {_where_it_failed(err)}") from None


def _where_it_failed(err: BaseException, path: Path | None = None) -> str:
    """`Type: message (file, line N)` of an exception raised while importing a plug-in: the innermost frame
    in the plug-in's file (`path`), else the innermost frame; a SyntaxError names its own line."""
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, SyntaxError):
        return text
    frames = traceback.extract_tb(err.__traceback__)
    mine = [f for f in frames if path is not None and Path(f.filename) == path] or frames[-1:]
    return f"{text} ({mine[-1].filename}, line {mine[-1].lineno})" if mine else text


def load_plugin(spec: str) -> Any:
    """The object `NAME` of `path/to/file.py:NAME` or `package.module:NAME`, registered when it is an
    `Experiment` (by name) or a task config class (by kind)."""
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise ConfigError("plug-in", f"expected path/to/file.py:NAME or package.module:NAME, got {spec!r}")
    module = _module_of(where)
    if not hasattr(module, attr):
        found = [k for k, v in vars(module).items() if isinstance(v, Experiment)]
        raise ConfigError("plug-in", f"{where} defines no {attr!r}", found or None)
    obj = getattr(module, attr)
    if isinstance(obj, Experiment):
        builtin = builtin_experiments().get(obj.name)
        if builtin is not None and builtin is not obj:
            raise ConfigError("plug-in", f"{spec}: the name {obj.name!r} is one of jaxlab's experiments")
        _PLUGINS[obj.name] = obj
        for value in vars(module).values():  # the tasks the experiment's file defines
            if isinstance(value, type) and issubclass(value, TaskSection) and value.kind:
                tasks.register(value)
    elif isinstance(obj, type) and issubclass(obj, TaskSection):
        tasks.register(obj)
    return obj


def config_from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """A config from its JSON form, its experiment looked up by name."""
    return get_experiment(data["experiment"]).config_from_dict(data)


def read_config(path: str | Path) -> ExperimentConfig:
    """The config stored in a run directory's config.json (CorruptFileError if it is not one)."""
    data = results.read_config_data(path)
    experiment = stored_experiment(data, path)
    try:
        return experiment.config_from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError, UserError) as err:
        raise results.config_error(path, err) from None


def stored_experiment(data: dict[str, Any], path: str | Path) -> Experiment:
    """The experiment a stored config names; a name that is neither built in nor a loaded plug-in's is
    refused with the way to load its plug-in (and the command that started the sweep, where it is stored)."""
    name = data["experiment"]
    if ":" in str(name) or str(name) in experiments():
        return get_experiment(name)
    command = runfiles.started_by(Path(path).parent)
    started = f"; the sweep was started with: {command}" if command else ""
    raise ConfigError(
        "experiment",
        f"{path} names experiment {name!r}, which is not built in nor a loaded plug-in: load the plug-in that "
        "defines it first (Python: jaxlab.load(DIR, plugins=['path/to/file.py:NAME']); command line: "
        f"--plugin path/to/file.py:NAME){started}",
        [*experiments()],
    )


def read_run_config(run_dir: str | Path) -> tuple[Experiment, ExperimentConfig]:
    """(experiment, config) of a run directory."""
    cfg = read_config(Path(run_dir) / "config.json")
    return get_experiment(cfg.experiment), cfg


def stored_experiment_name(run_dir: str | Path) -> str | None:
    """The experiment named in a run directory's config.json (None when it has none)."""
    try:
        data = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data.get("experiment") if isinstance(data, dict) else None


def load_run_group(run_dir: str | Path, index: int = 0, checkpoint: int | None = None) -> Any:
    """`jaxlab.train.load_group` of a run directory, its experiment found by the name in its config.json
    (a plug-in's file loaded first, with `load_plugin`)."""
    experiment, _ = read_run_config(run_dir)
    return load_group(experiment, run_dir, index, checkpoint)


def run_checkpoint_indices(run_dir: str | Path, index: int = 0) -> list[int]:
    """`jaxlab.train.checkpoint_indices` of a run directory, its experiment found by name."""
    experiment, _ = read_run_config(run_dir)
    return checkpoint_indices(experiment, run_dir, index)


__all__ = [
    "builtin_experiments",
    "config_from_dict",
    "experiments",
    "get_experiment",
    "load_plugin",
    "load_run_group",
    "read_config",
    "read_run_config",
    "run_checkpoint_indices",
    "stored_experiment_name",
]
