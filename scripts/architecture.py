"""The code's shape, checked: package import graph (lazy and TYPE_CHECKING imports included), its cycles, the
rooms a model pod must not reach, and modules over the size limit.

    .venv/bin/python scripts/architecture.py          # prints the graph and any violation; exit 1 on one
    .venv/bin/python scripts/architecture.py --dot    # the package graph in Graphviz dot

Nodes are packages: `services.<name>` and `shared.<name>` (a top-level module such as services/stack.py or
shared/host.py is its own node). An edge A -> B means some module of A imports some module of B anywhere in
its body, so an import hidden in a function to dodge a circle still counts.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("services", "shared")
MAX_LINES = 400
# Generated code and the synthetic renderer (long tables of garment geometry) are exempt from the size limit.
SIZE_EXEMPT = ("shared/data/synth/",)
# Model pods load weights and answer RPCs: nothing of admin, retraining, ingest or search may come with them.
MODEL_POD = "services.models"
MODEL_POD_FORBIDDEN = ("services.admin", "services.retrain", "services.ingest", "services.search")


def modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for top in PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def node_of(module: str, known: Iterable[str]) -> str:
    """services.admin.core -> services.admin; services.stack -> services.stack; shared.host -> shared.host."""
    parts = module.split(".")
    if len(parts) == 1:
        return module
    return ".".join(parts[:2])


def imported(module: str, path: Path) -> set[str]:
    """Every module this file imports, at any depth of its body (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def package_graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = modules(root)
    graph: dict[str, set[str]] = {}
    for module, path in mods.items():
        src = node_of(module, mods)
        graph.setdefault(src, set())
        for target in imported(module, path):
            # `from shared.db import repository` names a module; keep the longest known prefix.
            while target not in mods and "." in target:
                target = target.rpartition(".")[0]
            if target in mods:
                dst = node_of(target, mods)
                if dst != src:
                    graph[src].add(dst)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        v = todo.pop()
        for w in graph.get(v, ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def large_modules(root: Path = ROOT, limit: int = MAX_LINES) -> list[tuple[str, int]]:
    out = []
    for path in modules(root).values():
        rel = path.relative_to(root).as_posix()
        if rel.startswith(SIZE_EXEMPT):
            continue
        lines = len(path.read_text().splitlines())
        if lines > limit:
            out.append((rel, lines))
    return sorted(out, key=lambda item: -item[1])


def problems(root: Path = ROOT) -> list[str]:
    """Every violation: import circles, the model pod reaching other services, shared/ importing services/,
    modules over the size limit."""
    graph = package_graph(root)
    found = [f"import circle: {' <-> '.join(c)}" for c in cycles(graph)]
    pod = reachable(graph, MODEL_POD)
    found += [f"{MODEL_POD} reaches {p}" for p in MODEL_POD_FORBIDDEN if p in pod]
    found += [f"{src} (shared/) imports {dst} (services/)" for src in sorted(graph) if src.startswith("shared")
              for dst in sorted(graph[src]) if dst.startswith("services")]
    found += [f"{rel}: {n} lines (limit {MAX_LINES})" for rel, n in large_modules(root)]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dot", action="store_true", help="print the package graph in Graphviz dot")
    args = parser.parse_args()
    graph = package_graph()
    if args.dot:
        print("digraph packages {\n  rankdir=LR;")
        for src in sorted(graph):
            for dst in sorted(graph[src]):
                print(f'  "{src}" -> "{dst}";')
        print("}")
        return 0
    for src in sorted(graph):
        print(f"{src:28} -> {', '.join(sorted(graph[src])) or '-'}")
    found = problems()
    print("\n".join(found) if found else "\nno import circle; no module over the limit")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
