"""Dialect helpers shared by the repository modules: portable upserts and chunked ``IN`` lists."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.errors import InvalidInput

T = TypeVar("T")
# Far below both limits on bound parameters (SQLite 32766, Postgres 65535).
IN_CHUNK = 1000


def insert_for(session: Session, model: type[Any]) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support for the session's database (Postgres or SQLite).

    Both dialects' inserts offer ``on_conflict_do_update`` / ``on_conflict_do_nothing`` / ``excluded`` with
    the same signatures, so callers write one statement for both.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"upserts support postgresql and sqlite, not {dialect}")


def insert_rows(session: Session, model: type[Any]) -> Any:
    """`insert_for` on ``model``'s table, to execute with a list of row mappings (``session.execute(stmt, rows)``).

    Executed that way the statement is compiled once and cached, and the driver sends the rows in batches
    ("insertmanyvalues", RETURNING included). A multi-row ``.values(rows)`` is compiled afresh for every call:
    in the ingest and search-log hot paths that was milliseconds of interpreter time per call (profiled). Core
    rather than ORM: the ORM's bulk path converts each row again, and no ORM event hooks these inserts.
    """
    return insert_for(session, model.__table__)


def chunks(items: Sequence[T] | Iterable[T], size: int = IN_CHUNK) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def field(item: Any, name: str, default: Any = ...) -> Any:
    """Read ``name`` from a mapping or an object (dataclass, protobuf message), for duck-typed inputs."""
    if isinstance(item, Mapping):
        if name in item:
            return item[name]
    elif hasattr(item, name):
        return getattr(item, name)
    if default is ...:
        raise InvalidInput(f"expected a field {name!r} in {item!r}")
    return default
