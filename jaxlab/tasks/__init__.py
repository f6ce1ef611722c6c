"""Synthetic tasks, generated on the device.

A task is a module that defines a frozen `Config(jaxlab.config.TaskSection)` dataclass with a class
attribute `kind`, a function `spec(cfg) -> TaskSpec` and a pure function
`sample(key, cfg, batch_size) -> Batch` that runs inside jit/vmap/scan. A config finds its own
module (`TaskSection.module`), so a task defined in a user's file runs like jaxlab's own; reading a
config back from JSON needs the class of its `kind`: jaxlab's tasks (the modules of this package)
and any registered with `register`.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from types import ModuleType
from typing import Any

import jax

from jaxlab.config import TaskSection
from jaxlab.errors import ConfigError
from jaxlab.rng import in_rng_scope
from jaxlab.tasks.batch import Batch, TaskSpec

__all__ = [
    "Batch",
    "TaskSpec",
    "config_classes",
    "register",
    "registry",
    "sample",
    "task_config_class",
    "task_module",
    "task_spec",
]

_REGISTERED: dict[str, type] = {}


@cache
def registry() -> dict[str, ModuleType]:
    """kind -> task module, for every module of this package that defines `Config.kind`."""
    found: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "batch":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        config = getattr(module, "Config", None)
        kind = getattr(config, "kind", None)
        if kind:
            found[kind] = module
    return found


def register(config_class: type) -> type:
    """Make a task defined outside jaxlab known by its `kind` (for reading configs back from JSON).
    Returns the class, so it can decorate it."""
    if not (isinstance(config_class, type) and issubclass(config_class, TaskSection)) or not config_class.kind:
        raise TypeError(f"register: expected a TaskSection subclass with a `kind`, got {config_class!r}")
    builtin = registry().get(config_class.kind)
    if builtin is not None and builtin.Config is not config_class:
        raise ConfigError("task kind", f"{config_class.kind!r} is one of jaxlab's tasks; choose another name")
    _REGISTERED[config_class.kind] = config_class
    return config_class


def config_classes() -> dict[str, type]:
    """kind -> task config class: jaxlab's tasks and the registered ones."""
    return {**{kind: m.Config for kind, m in registry().items()}, **_REGISTERED}


def task_config_class(kind: str) -> type:
    """The config class of the task `kind` (jaxlab's or a registered one); ConfigError naming the known kinds
    otherwise."""
    classes = config_classes()
    if kind not in classes:
        raise ConfigError("task", f"unknown task {kind!r}", sorted(classes))
    return classes[kind]


def task_module(cfg: TaskSection) -> ModuleType:
    """The module that defines the task of `cfg` (its `spec` and `sample`)."""
    return cfg.module()


def task_spec(cfg: TaskSection) -> TaskSpec:
    """The `TaskSpec` of the task described by `cfg` (`cfg.spec()`)."""
    return cfg.spec()


@in_rng_scope
def sample(key: jax.Array, cfg: Any, batch_size: int = 1) -> Batch:
    """Sample `batch_size` sequences of the task described by `cfg`."""
    return task_module(cfg).sample(key, cfg, batch_size)
