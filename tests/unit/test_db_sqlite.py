"""The SQLite fallback needs no server: the same models and Alembic migrations on a file in tmp_path.

The repository behaviour itself is tested once, on both backends, in tests/integration/test_db.py; these
tests cover what only the fallback has: the file, its pragmas, the Python types coming back from SQLite,
several engines on one file, and the choice between Postgres and SQLite.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from shared.db import (
    Base,
    current_revision,
    database_url_or_fallback,
    head_revision,
    make_engine,
    repository,
    session_factory,
    sqlite_url,
    upgrade,
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    database = sqlite_url(tmp_path / "nested" / "fashion.db")  # the parent folder does not exist yet
    upgrade(database)
    return database


@pytest.fixture
def factory(url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


def test_upgrade_to_head_creates_every_table_with_pragmas_on(url: str) -> None:
    engine = make_engine(url)
    try:
        assert current_revision(engine) == head_revision()
        assert set(Base.metadata.tables) <= set(sa.inspect(engine).get_table_names())
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()
    upgrade(url)  # idempotent


def test_product_upsert_round_trips_python_types(factory: sessionmaker[Session]) -> None:
    with factory.begin() as s:
        repository.upsert_product(s, "p1", title="Denim jacket", price=49.9, currency="usd",
                                  attributes=["denim", "blue"])
        repository.upsert_product(s, "p1", title="Denim jacket", price="39.90", currency="USD", in_stock=False)
    with factory() as s:
        product = repository.get_product(s, "p1")
    assert product.price == Decimal("39.90") and isinstance(product.price, Decimal)
    assert product.attributes == ["denim", "blue"] and product.in_stock is False
    assert product.created_at.tzinfo is UTC and product.created_at <= datetime.now(UTC)


def test_claim_event_holds_across_engines_on_one_file(url: str) -> None:
    """Two processes of the local default share one file; the ledger must dedupe across them."""
    engines = [make_engine(url), make_engine(url)]
    try:
        claims = []
        for engine in engines + engines:
            with session_factory(engine).begin() as s:
                claims.append(repository.claim_event(s, "evt-1", "catalog.uploads", 0, 5))
        assert claims == [True, False, False, False]
    finally:
        for engine in engines:
            engine.dispose()


def test_foreign_keys_are_enforced(factory: sessionmaker[Session]) -> None:
    with pytest.raises(sa.exc.IntegrityError), factory.begin() as s:
        s.execute(sa.insert(Base.metadata.tables["images"]).values(image_id="i", product_id="missing"))


def test_fallback_picks_sqlite_without_a_postgres_server(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fallback = tmp_path / "local.db"
    with caplog.at_level(logging.WARNING):
        chosen = database_url_or_fallback("postgresql+psycopg://postgres@127.0.0.1:9/fashion", fallback)
    assert chosen == sqlite_url(fallback)
    assert "falling back to SQLite" in caplog.text
    assert database_url_or_fallback(None, fallback) == sqlite_url(fallback)
    assert database_url_or_fallback("sqlite:///elsewhere.db", fallback) == "sqlite:///elsewhere.db"


def test_make_engine_names_the_supported_urls() -> None:
    with pytest.raises(ValueError, match="expected postgresql\\+psycopg://.* or sqlite:///"):
        make_engine("mysql://localhost/fashion")
