"""The package layout (README "Code map"): imports go one way, no circle among packages, no private names
used across modules. Every import statement counts, also those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "graphfix"

#: Package -> the graphfix packages it must never import (lower layers never import higher ones).
FORBIDDEN = {
    "data": {"train", "calibrate", "commands", "scale", "convert", "surgery"},
    "train": {"calibrate", "commands", "scale"},
    "calibrate": {"commands", "scale"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported graphfix module, names taken from it, line) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("graphfix")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.startswith("graphfix"):
                found.append((target, [a.name for a in node.names], node.lineno))
    return found


def _package(module: str) -> str | None:
    """The subpackage a module belongs to (None for graphfix's base modules such as graphfix.model)."""
    parts = module.split(".")
    if len(parts) < 2 or not (PKG / parts[1]).is_dir():
        return None
    return parts[1]


def _edges() -> dict[str, set[tuple[str, str, int]]]:
    """package -> {(imported package, importing module, line)}."""
    edges: dict[str, set[tuple[str, str, int]]] = {}
    for name, path in _modules().items():
        src = _package(name)
        for target, names, line in _imports(name, path):
            targets = [target] + [f"{target}.{n}" for n in names]  # `from graphfix import data`
            for t in targets:
                dst = _package(t) if (t == target or (PKG / t.split(".", 1)[-1].replace(".", "/")).exists()) else None
                if src and dst and dst != src:
                    edges.setdefault(src, set()).add((dst, name, line))
    return edges


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_never_import_higher_ones(package):
    bad = sorted(f"{mod}:{line} imports graphfix.{dst}" for dst, mod, line in _edges().get(package, ())
                 if dst in FORBIDDEN[package])
    assert not bad, "\n".join(bad)


def test_no_circle_among_packages():
    graph = {src: {dst for dst, _, _ in e} for src, e in _edges().items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            where = [f"{mod}:{line}" for a, b in zip(cycle, cycle[1:]) for dst, mod, line in sorted(_edges()[a])
                     if dst == b][:6]
            pytest.fail(f"import circle {' -> '.join(cycle)} ({', '.join(where)})")


def test_no_private_name_is_used_across_modules():
    mods = _modules()
    bad = []
    for name, path in mods.items():
        for target, names, line in _imports(name, path):
            if target == name:
                continue
            for n in names:
                if n.startswith("_") and not n.startswith("__") and f"{target}.{n}" not in mods:
                    bad.append(f"{name}:{line} takes {target}.{n}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_planted_violation(tmp_path):
    """The checks above can fail: a data module importing train (a private name, inside a function)
    is reported as an upward import and as a private name."""
    fake = tmp_path / "graphfix"
    for sub in ("data", "train"):
        (fake / sub).mkdir(parents=True)
        (fake / sub / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "train" / "head_fit.py").write_text("_x = 1\n")
    (fake / "data" / "bad.py").write_text("def f():\n    from graphfix.train.head_fit import _x\n")
    global PKG
    old, PKG = PKG, fake
    try:
        edges = _edges()
        with pytest.raises(AssertionError, match="graphfix.data.bad:2 takes graphfix.train.head_fit._x"):
            test_no_private_name_is_used_across_modules()
    finally:
        PKG = old
    assert ("train", "graphfix.data.bad", 2) in edges["data"]
