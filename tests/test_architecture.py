"""The package layout is a layered graph: no import cycles between agekit's subpackages, no upward imports.

Every ``import`` statement counts, also those inside functions (a lazy import is still a dependency),
except under ``if TYPE_CHECKING:`` (annotations only). The root ``agekit/__init__.py`` is the public facade
and may import anything; ``from agekit import __version__`` is not an edge.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "agekit"

# subpackage -> the subpackages it may import (docs/architecture.md, the contract of issue 7)
ALLOWED: dict[str, set[str]] = {
    "models": set(),
    "config": {"models"},
    "data": {"config", "models"},
    "export": {"models", "config"},
    "runtime": {"models", "export", "config", "data"},
    "evaluation": {"data", "models", "runtime", "config"},
    "tasks": {"data", "models", "evaluation", "runtime", "config"},
    "training": {"tasks", "data", "models", "config"},
    "experiments": {"training", "tasks", "models", "config", "data", "evaluation", "runtime"},
    "inference": {"data", "models", "runtime", "config"},
    "serving": {"inference", "data", "models", "runtime", "config"},
}
ANYTHING = {"cli"}  # the command line sits on top of everything


def _module_name(path: Path) -> list[str]:
    parts = ["agekit", *path.relative_to(PKG).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _targets(path: Path, node: ast.Import | ast.ImportFrom) -> list[list[str]]:
    """Absolute dotted names (as part lists) of the agekit modules ``node`` imports."""
    if isinstance(node, ast.Import):
        return [a.name.split(".") for a in node.names if a.name.split(".")[0] == "agekit"]
    if node.level == 0:
        mod = (node.module or "").split(".")
        if mod[0] != "agekit":
            return []
        base = mod
    else:
        pkg = _module_name(path) if path.name == "__init__.py" else _module_name(path)[:-1]
        base = pkg[: len(pkg) - (node.level - 1)] + (node.module.split(".") if node.module else [])
    if node.module is None or len(base) == 1:  # `from .. import data`: the names may be subpackages
        return [base + [a.name] if (PKG.joinpath(*base[1:], a.name)).exists()
                or PKG.joinpath(*base[1:], a.name + ".py").exists() else base for a in node.names]
    return [base]


def import_graph() -> dict[tuple[str, str], list[str]]:
    """(importer subpackage, imported subpackage) -> ["file:line", ...] for every cross-subpackage import."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(PKG.rglob("*.py")):
        src = _module_name(path)
        if len(src) < 2 or path.parent == PKG:  # the root facade (agekit/__init__.py, agekit/__main__.py)
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in _imports(tree):
            for target in _targets(path, node):
                if len(target) < 2 or target[1] == src[1]:
                    continue  # `from agekit import __version__`, or inside the same subpackage
                edges[(src[1], target[1])].append(f"{path.relative_to(PKG.parent)}:{node.lineno}")
    return {k: sorted(set(v), key=lambda s: (s.rsplit(":", 1)[0], int(s.rsplit(":", 1)[1]))) for k, v in edges.items()}


def _cycles(edges: dict[tuple[str, str], list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one subpackage (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _fmt(edges: dict[tuple[str, str], list[str]], pairs) -> str:
    return "\n".join(f"  {a} -> {b}: {', '.join(edges[(a, b)])}" for a, b in sorted(pairs))


def test_the_graph_sees_lazy_imports_and_skips_type_checking(tmp_path, monkeypatch):
    """The parser itself: function-level and relative imports count, TYPE_CHECKING ones do not."""
    pkg = tmp_path / "agekit"
    for sub in ("a", "b", "c"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from .c import x\n")  # the root facade: ignored
    (pkg / "a" / "m.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..c import T\n"
        "def f():\n    from ..b.n import g\n    import agekit.b\n    from .. import __version__, c\n")
    (pkg / "b" / "n.py").write_text("from agekit.a import m\n")
    monkeypatch.setattr(f"{__name__}.PKG", pkg)
    edges = import_graph()
    assert edges == {("a", "b"): ["agekit/a/m.py:5", "agekit/a/m.py:6"], ("a", "c"): ["agekit/a/m.py:7"],
                     ("b", "a"): ["agekit/b/n.py:1"]}
    assert _cycles(edges) == [["a", "b"]]


def test_subpackages_form_no_import_cycle():
    edges = import_graph()
    cycles = _cycles(edges)
    msg = []
    for comp in cycles:
        inside = [(a, b) for (a, b) in edges if a in comp and b in comp]
        msg.append(f"cycle among {comp}:\n{_fmt(edges, inside)}")
    assert not cycles, "import cycles between agekit subpackages:\n" + "\n".join(msg)


def test_imports_follow_the_layers():
    edges = import_graph()
    subpackages = {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    unknown = subpackages - set(ALLOWED) - ANYTHING
    assert not unknown, f"subpackage(s) {sorted(unknown)} have no row in ALLOWED (tests/test_architecture.py)"
    bad = [(a, b) for (a, b) in edges if a not in ANYTHING and b not in ALLOWED.get(a, set())]
    assert not bad, ("imports against the layering (importer -> imported: where); "
                     "move the code down a layer or pass the object in:\n" + _fmt(edges, bad))
