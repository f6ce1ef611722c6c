"""Benchmarks run by `jaxlab bench NAME`: every module here that defines `NAME`, `HELP`,
`add_arguments(parser)` and `main(args) -> int`."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from types import ModuleType


@cache
def registry() -> dict[str, ModuleType]:
    """Benchmark name -> module, for every module of this package that defines `NAME` and `main`."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "main"):
            found[module.NAME] = module
    return dict(sorted(found.items()))
