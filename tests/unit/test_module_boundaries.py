"""Import boundaries the architecture relies on, checked from the source so a shortcut fails here, not in review."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
TRANSPORT = ("fashion", "grpc", "kafka", "google.protobuf", "celery")


def _imports(path: Path) -> set[str]:
    """Modules a file imports at run time (imports under `if TYPE_CHECKING:` are annotations only)."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and getattr(block.test, "id", None) == "TYPE_CHECKING" for node in ast.walk(block)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("core", ["services/ingest/core.py", "services/search/core.py", "services/admin/core.py"])
def test_cores_import_no_transport(core: str) -> None:
    found = {name for name in _imports(ROOT / core) if name.split(".")[0] in TRANSPORT or name in TRANSPORT}
    assert not found, f"{core} imports transport code {sorted(found)}: convert at the edge (server/consumer)"


def test_shared_code_imports_no_service() -> None:
    """Model pods run the watcher; ingest and the promoter share the indexing code: none may pull in a service."""
    modules = ["shared.serving.watcher", "shared.catalog.indexing", "shared.catalog.alias", "shared.imaging"]
    probe = f"import sys, {', '.join(modules)}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'services'))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout
