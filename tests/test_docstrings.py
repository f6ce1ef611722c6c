"""Every public callable of jaxlab has a docstring (the API reference, `make docs`, is built from them).

Public: a name without a leading underscore that a module of the `jaxlab` package exports (listed in
its `__all__` where it defines one, else a module-level name) and defines itself (`obj.__module__`:
a re-export is checked where it is defined, except a re-export from a private module such as
`jaxlab.metrics._common`, which is checked in the public module whose `__all__` lists it), and the
public methods and properties of public classes, `__call__` included. A method that overrides a
documented one inherits its docstring (`inspect.getdoc`, as pdoc shows it: `validate` of every config
section, Flax's `setup`); a dataclass's or NamedTuple's generated docstring (`Name(field, ...)`)
does not count: a class needs its own.
"""

import dataclasses
import importlib
import inspect
import pkgutil

import jaxlab


def _private(name: str) -> bool:
    return any(part.startswith("_") for part in name.split("."))


def _modules() -> list:
    names = ["jaxlab"] + [m.name for m in pkgutil.walk_packages(jaxlab.__path__, "jaxlab.")]
    return [importlib.import_module(n) for n in names if not _private(n)]


def _generated_doc(cls: type) -> bool:
    """A docstring that dataclasses or NamedTuple wrote from the fields (`Name(field, ...)`)."""
    doc = cls.__doc__ or ""
    made = dataclasses.is_dataclass(cls) or hasattr(cls, "_fields")
    return made and doc.startswith(f"{cls.__name__}(") and "\n" not in doc.strip()


def _methods(cls: type) -> list[str]:
    """The public methods and properties `cls` defines itself (a dataclass field whose default is a
    function is a field, documented with the class)."""
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    out = []
    for name, value in vars(cls).items():
        if (name.startswith("_") and name != "__call__") or name in fields:
            continue
        func = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        if isinstance(value, property) or inspect.isfunction(func):
            out.append(name)
    return out


def _offenders() -> list[str]:
    seen: set[int] = set()
    missing = []
    for module in _modules():
        exported = getattr(module, "__all__", None)
        names = exported if exported is not None else list(vars(module))
        for name in names:
            obj = getattr(module, name, None)
            if name.startswith("_") or obj is None or not callable(obj) or id(obj) in seen:
                continue
            home = getattr(obj, "__module__", None)
            reexported_private = (
                exported is not None and isinstance(home, str) and home.startswith("jaxlab.") and _private(home)
            )
            if home != module.__name__ and not reexported_private:
                continue
            seen.add(id(obj))
            where = f"{module.__name__}.{name}"
            if not (obj.__doc__ or "").strip() or (inspect.isclass(obj) and _generated_doc(obj)):
                missing.append(where)
            if inspect.isclass(obj):
                for method in _methods(obj):
                    if not (inspect.getdoc(getattr(obj, method)) or "").strip():
                        missing.append(f"{where}.{method}")
    return missing


def test_every_public_callable_has_a_docstring():
    missing = _offenders()
    assert not missing, f"{len(missing)} public callables without a docstring:\n  " + "\n  ".join(missing)


def test_the_check_sees_modules_classes_and_methods():
    """The walk reaches deep modules, and a class's own methods and properties are checked."""
    names = {m.__name__ for m in _modules()}
    assert {"jaxlab.config.sections", "jaxlab.models.transformer", "jaxlab.train.engine"} <= names
    assert "jaxlab.loading" in names and not any(_private(n) for n in names)
    from jaxlab.config import ModelConfig

    assert {"validate", "head_dim", "field_doc", "field_choices"} <= set(_methods(ModelConfig)) | set(
        _methods(ModelConfig.__mro__[1])
    )
