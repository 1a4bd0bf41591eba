"""The code's shape, as scripts/architecture.py checks it: no import circle between the packages of services/
and shared/ (imports inside functions and under TYPE_CHECKING count), model pods reach no other service,
shared/ imports no service, no module over 400 lines (generated code and the synthetic renderer aside)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("architecture", ROOT / "scripts" / "architecture.py")
assert _spec is not None and _spec.loader is not None
architecture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(architecture)


def test_the_code_has_the_shape_docs_architecture_describes() -> None:
    assert architecture.problems() == []


def test_the_checker_sees_a_lazy_import_circle(tmp_path: Path) -> None:
    """A circle hidden in a function body is still a circle; so is a module past the limit."""
    for package, other in (("a", "b"), ("b", "a")):
        folder = tmp_path / "shared" / package
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("")
        (folder / "m.py").write_text(f"def f():\n    from shared.{other} import m\n    return m\n")
    (tmp_path / "services").mkdir()
    (tmp_path / "services" / "big.py").write_text("x = 1\n" * (architecture.MAX_LINES + 1))
    found = architecture.problems(tmp_path)
    assert "import circle: shared.a <-> shared.b" in found
    assert f"services/big.py: {architecture.MAX_LINES + 1} lines (limit {architecture.MAX_LINES})" in found
