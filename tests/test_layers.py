"""The package's layers import one way (README, Architecture): every import inside
``radynversion/``, function-level ones included, points to the same or a lower layer, and the
import graph has no cycle."""

import ast
from pathlib import Path

import radynversion

ROOT = Path(radynversion.__file__).parent
#: as the README's Architecture table lists them, bottom first
LAYERS = [
    {"_version", "errors", "lines", "atmosphere", "schema", "config", "instrument", "calibration",
     "velocity_frame"},
    {"synth", "io", "datasets"},
    {"model"},
    {"engine"},
    {"evaluate", "verify", "plot", "demo", "cli"},
]


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module (dotted, relative to the package; "" = the package) -> the package modules it imports."""
    mods = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        pkg = [p for p in pkg if p]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg[: len(pkg) - node.level + 1] if node.level > 1 else pkg
                    stem = ".".join([*base, *(node.module.split(".") if node.module else [])])
                elif (node.module or "").startswith("radynversion"):
                    stem = node.module[len("radynversion"):].lstrip(".")
                else:
                    continue
                targets = [f"{stem}.{a.name}".strip(".") for a in node.names] + [stem]
            elif isinstance(node, ast.Import):
                targets = [a.name[len("radynversion"):].lstrip(".") for a in node.names
                           if a.name.startswith("radynversion")]
            for t in targets:
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != mod:
                    graph[mod].add(t)
    return graph


def layer(mod: str) -> int | None:
    top = mod.split(".")[0]
    return next((k for k, names in enumerate(LAYERS) if top in names), None)


def test_every_module_has_a_layer():
    assert [m for m in import_graph() if m and layer(m) is None] == []


def test_imports_point_down_or_sideways():
    bad = [f"{m} -> {t}" for m, ts in import_graph().items() for t in ts
           if m and t and layer(t) > layer(m)]
    assert bad == []


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """The cycles a depth-first walk meets, each as ``a -> b -> a``."""
    graph = {m: {t for t in ts if t} for m, ts in graph.items() if m}
    state: dict[str, int] = {}
    found = []

    def visit(m, stack):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                found.append(" -> ".join([*stack[stack.index(t):], t]))
            elif t not in state:
                visit(t, [*stack, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_checks_see_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The graph is built from the source: an import of the CLI written into a copy of
    ``errors`` is an upward import and closes a cycle."""
    import shutil
    import sys

    copy = tmp_path / "radynversion"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("data", "__pycache__"))
    (copy / "errors.py").write_text((copy / "errors.py").read_text() + "\nfrom .cli import main  # noqa\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", copy)
    graph = import_graph()
    assert "cli" in graph["errors"] and layer("cli") > layer("errors")
    assert any(c.startswith("cli") or "errors -> cli" in c for c in cycles(graph))
