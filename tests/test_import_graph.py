"""jaxlab's imports run one way, down the layers (docs/DESIGN.md): no cycle, no edge to a higher layer.

Every import statement counts, wherever it is (module level, functions, `if TYPE_CHECKING:`), read
with `ast` from the source: `import a.b`, `from a import b` (b a submodule or a name), relative
imports. Importing `jaxlab.a.b` also runs `jaxlab/a/__init__`, except for the packages the importing
module lives in (already being imported); `from jaxlab.a import b` of a submodule b is an import
of b, of a name defined in `jaxlab/a/__init__` an import of the package.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "jaxlab"

# lowest first; a module may import its own layer and those below
LAYERS = [
    {
        "jaxlab._version",
        "jaxlab.claims",
        "jaxlab.errors",
        "jaxlab.rng",
        "jaxlab.linalg",
        "jaxlab.stats",
        "jaxlab.interrupt",
        "jaxlab.hostdevices",
    },
    {"jaxlab.config"},
    {"jaxlab.results", "jaxlab.runfiles", "jaxlab.trackers", "jaxlab.models", "jaxlab.tasks", "jaxlab.metrics"},
    {"jaxlab.reporting"},
    {"jaxlab.train"},
    {"jaxlab.probes"},
    {"jaxlab.experiments"},
    {
        "jaxlab.registry",
        "jaxlab.report",
        "jaxlab.reproductions",
        "jaxlab.loading",
        "jaxlab.bench",
        "jaxlab.cli",
        "jaxlab.__main__",
    },
    {"jaxlab"},  # the package's front door (`jaxlab.load`) sits on top of everything
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The jaxlab modules `name` imports (targets resolved to modules of the package)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = {f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known}
            out |= subs
            if len(subs) < len(node.names):  # a name defined in `mod` itself: `mod` runs
                out.add(mod)
    targets = {t for t in out if t in known}
    own = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")) + (1 if is_pkg else 0))}
    parents = {".".join(t.split(".")[:i]) for t in targets for i in range(1, len(t.split(".")))}
    return (targets | (parents - own)) - {name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def layer(module: str) -> int:
    # the bare package name names the front door only: every module must be listed under its own name
    for depth in range(module.count(".") + 1, 0 if module == "jaxlab" else 1, -1):
        prefix = ".".join(module.split(".")[:depth])
        for i, names in enumerate(LAYERS):
            if prefix in names:
                return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_the_checker_finds_a_cycle_and_an_upward_edge():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("jaxlab.train.sweep") > layer("jaxlab.config") and layer("jaxlab.cli") == len(LAYERS) - 2
    assert layer("jaxlab") == len(LAYERS) - 1 and layer("jaxlab._version") == 0


def test_the_import_graph_has_no_cycle():
    assert cycles(graph()) == []


def test_imports_only_go_down_the_layers():
    upward = [
        f"{m} (layer {layer(m)}) -> {t} (layer {layer(t)})"
        for m, targets in graph().items()
        for t in targets
        if layer(t) > layer(m)
    ]
    assert upward == []
