"""Engines, session factories, database selection and Alembic migrations, run programmatically.

Sessions are opened at the edge, one per RPC / message / task, never shared across threads or forks::

    engine = make_engine(url)
    factory = session_factory(engine)
    with factory.begin() as session:      # commits on success, rolls back on error
        repository.upsert_product(session, ...)
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from shared.config import DEFAULT_POSTGRES_URL, StoreSettings

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
MIGRATIONS_DIR = PACKAGE_DIR / "migrations"
ALEMBIC_INI = PACKAGE_DIR / "alembic.ini"
CONNECT_TIMEOUT_S = 2
SQLITE_BUSY_TIMEOUT_S = 30.0
# Any constant: the advisory lock that serialises concurrent `upgrade` calls (services starting together).
_MIGRATION_LOCK_ID = 0x46415348  # "FASH"


def make_engine(url: str | URL, *, echo: bool = False, sqlite_foreign_keys: bool = True, **kwargs: Any) -> Engine:
    """An engine for ``postgresql+psycopg://...`` or ``sqlite:///path`` with the project's connection settings.

    SQLite gets foreign keys on, WAL (readers never block the writer) and ``BEGIN IMMEDIATE``
    transactions: a transaction takes the write lock when it starts, so two sessions that read then write
    wait for each other (busy timeout) instead of failing with "database is locked" when the second one
    upgrades a stale read snapshot. That is what makes the check-then-insert helpers safe on SQLite.
    ``sqlite_foreign_keys=False`` is for migrations: batch mode recreates tables, which must not cascade.
    """
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        return _make_sqlite_engine(url, echo=echo, foreign_keys=sqlite_foreign_keys, **kwargs)
    if url.get_backend_name() == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S * 5, **kwargs.pop("connect_args", {})}
        # No pool_pre_ping: it cost a round trip per session, a tenth of a FindSimilar call (profiled). A
        # connection that died with a database restart fails one call, which maps to UNAVAILABLE (retryable),
        # and SQLAlchemy then replaces every pooled connection of that generation.
        return sa.create_engine(url, echo=echo, connect_args=connect_args, **kwargs)
    raise ValueError(f"unsupported database URL {url.render_as_string()!r}: "
                     "expected postgresql+psycopg://user@host:port/db or sqlite:///path/to/file.db")


def _make_sqlite_engine(url: URL, *, echo: bool, foreign_keys: bool, **kwargs: Any) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    if not in_memory:
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False,
                    **kwargs.pop("connect_args", {})}
    if in_memory:
        kwargs.setdefault("poolclass", StaticPool)
    engine = sa.create_engine(url, echo=echo, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose loaded objects stay readable after commit (repository results outlive the block)."""
    return sessionmaker(engine, expire_on_commit=False)


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).expanduser().resolve()}"


def _libpq_conninfo(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _postgres_answers(url: URL) -> Exception | None:
    try:
        with psycopg.connect(_libpq_conninfo(url), connect_timeout=CONNECT_TIMEOUT_S):
            return None
    except psycopg.Error as exc:
        return exc


def database_url_or_fallback(url: str | None, sqlite_path: Path) -> str:
    """The Postgres URL when that server answers within 2 s, otherwise a SQLite URL at ``sqlite_path``.

    For the local default only (deployed services pass their URL straight to :func:`make_engine`). A server
    that answers but lacks the database still counts as reachable: call :func:`create_database_if_missing`.
    """
    if url:
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            return url
        error = _postgres_answers(parsed)
        if error is None:
            return url
        if parsed.database != "postgres" and _postgres_answers(parsed.set(database="postgres")) is None:
            return url
        log.warning("PostgreSQL at %s is not reachable (%s); falling back to SQLite at %s",
                    parsed.render_as_string(), str(error).splitlines()[0], sqlite_path)
    return sqlite_url(sqlite_path)


def create_database_if_missing(url: str | URL) -> bool:
    """Create a Postgres URL's database when it does not exist; True when it was created. SQLite: no-op."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return False
    if not parsed.database:
        raise ValueError(f"expected a database name in {parsed.render_as_string()!r}")
    admin = parsed.set(database="postgres")
    with psycopg.connect(_libpq_conninfo(admin), connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,)).fetchone()
        if exists:
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(parsed.database)))
        except psycopg.errors.DuplicateDatabase:  # created by a concurrent caller in between
            return False
    log.info("created database %s", parsed.database)
    return True


def drop_database(url: str | URL) -> None:
    """Drop a Postgres database (closing its connections) or delete a SQLite file. For tests and tooling."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                Path(parsed.database + suffix).unlink(missing_ok=True)
        return
    admin = parsed.set(database="postgres")
    with psycopg.connect(_libpq_conninfo(admin), connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(parsed.database)))


def alembic_config() -> Config:
    """Alembic configuration pointing at the packaged migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    return config


def _run_alembic(url: str | URL, action: Any, revision: str) -> None:
    engine = make_engine(url, sqlite_foreign_keys=False)
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_ID)))
            config = alembic_config()
            config.attributes["connection"] = connection
            action(config, revision)
    finally:
        engine.dispose()


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (default: the newest). Safe to call from several processes."""
    _run_alembic(url, command.upgrade, revision)


def downgrade(url: str | URL, revision: str) -> None:
    """Migrate down to ``revision`` (``"base"`` drops every table)."""
    _run_alembic(url, command.downgrade, revision)


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, f"no migrations under {MIGRATIONS_DIR}"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision a database is at, or None when it was never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def resolve_database_url(stores: StoreSettings) -> str:
    """The configured URL, else the machine's Postgres when it answers, else SQLite under data_dir."""
    url = stores.database_url or database_url_or_fallback(DEFAULT_POSTGRES_URL, stores.data_dir / "fashion.db")
    if url.startswith("postgresql"):
        create_database_if_missing(url)
    return url


def fresh_stores(state: Path, postgres_database: str) -> StoreSettings:
    """Empty stores of a tool's own (demo, benchmarks): its Postgres database (or SQLite file) and Qdrant
    folder are recreated, so every run measures the same thing from scratch. Never the user's stores."""
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    url = database_url_or_fallback(DEFAULT_POSTGRES_URL.rsplit("/", 1)[0] + f"/{postgres_database}",
                                   state / "fashion.db")
    if url.startswith("postgresql"):
        drop_database(url)
    return StoreSettings(data_dir=state, database_url=url)
