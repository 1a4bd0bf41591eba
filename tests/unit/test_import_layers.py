"""The packages under shared/ import each other in one direction only: no package reaches itself again.

Read from the source (every ``import`` statement, also those inside functions: a lazy import still ties two
packages together, it only hides it), not by importing, so a cycle is found even where no test walks it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _package(module: str) -> str | None:
    """``shared.data.synth.photos`` -> ``shared.data``; None outside shared/."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "shared" and len(parts) > 1 else None


def package_imports() -> dict[str, dict[str, str]]:
    """package -> {imported package: one place that imports it (module:line)}."""
    edges: dict[str, dict[str, str]] = defaultdict(dict)
    for path in sorted(SHARED.rglob("*.py")):
        module = ".".join(path.relative_to(SHARED.parent).with_suffix("").parts).removesuffix(".__init__")
        source = _package(module)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            else:
                continue
            for target in targets:
                package = _package(target)
                if source and package and package != source:
                    edges[source].setdefault(package, f"{module}:{node.lineno}")
    return edges


def _path(edges: dict[str, dict[str, str]], start: str, goal: str) -> list[str] | None:
    """One import chain from ``start`` to ``goal`` (depth-first), or None."""
    stack, seen = [[start]], {start}
    while stack:
        chain = stack.pop()
        for nxt in edges.get(chain[-1], {}):
            if nxt == goal:
                return [*chain, nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append([*chain, nxt])
    return None


def test_data_and_model_packages_do_not_import_each_other_back() -> None:
    edges = package_imports()
    back = _path(edges, "shared.fashionnet", "shared.data")
    assert back is None, f"shared.fashionnet reaches shared.data through {back}: the label vocabulary both " \
                         "need lives in shared/vocabulary.py"
    assert "shared.fashionnet" not in edges["shared.vocabulary"] and "shared.data" not in edges["shared.vocabulary"]


def test_no_package_under_shared_imports_itself_back() -> None:
    edges = package_imports()
    cycles = []
    for package in sorted(edges):
        chain = _path(edges, package, package)
        if chain:
            cycles.append(" -> ".join(f"{a} ({edges[a][b]})" for a, b in zip(chain, chain[1:], strict=False)))
    assert not cycles, "import cycles between packages:\n" + "\n".join(cycles)
