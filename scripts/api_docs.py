"""Write jaxlab's API reference, generated from the docstrings by pdoc, to a directory (`make docs`).

    python scripts/api_docs.py docs/api        # then open docs/api/index.html

pdoc follows a package's `__all__`, which names the package's exports rather than its submodules,
so every public module pdoc would not reach from `jaxlab` is named to it as well. Private modules (a
name part starting with `_`) and `jaxlab.__main__` (it runs the command line) are left out. pdoc's
warnings about annotations it cannot evaluate (`chex.ArrayTree`, names imported for type checking
only) are silenced: those annotations are shown as written.
"""

from __future__ import annotations

import os
import pkgutil
import sys
import warnings
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # importing the modules needs no accelerator


def public_modules() -> list[str]:
    """jaxlab and every module below it whose dotted name has no part starting with `_`."""
    import jaxlab

    names = ["jaxlab"]
    for info in pkgutil.walk_packages(jaxlab.__path__, "jaxlab."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


PRIVATE = r"!.*\._"  # pdoc's exclusion pattern: a dotted name with a part that starts with `_`


def module_specs() -> list[str]:
    """pdoc's module specifications: `jaxlab`, then each public module pdoc does not reach from the
    ones before it, then the exclusion of private modules."""
    from pdoc.extract import walk_specs

    specs = ["jaxlab"]
    for name in public_modules()[1:]:
        if name not in walk_specs([*specs, PRIVATE]):
            specs.append(name)
    return [*specs, PRIVATE]


def main(argv: list[str]) -> int:
    """Render the API reference into the directory `argv[0]` (default docs/api)."""
    import pdoc
    import pdoc.render

    warnings.filterwarnings("ignore", message="Error parsing type annotation")
    out = Path(argv[0] if argv else "docs/api")
    pdoc.render.configure(docformat="markdown", footer_text="jaxlab API reference (make docs)")
    specs = module_specs()
    pdoc.pdoc(*specs, output_directory=out)
    n_pages = sum(1 for _ in out.rglob("*.html")) - 1  # less index.html
    print(f"API reference of {n_pages} modules: {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
