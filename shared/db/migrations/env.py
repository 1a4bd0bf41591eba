"""Alembic environment: used by shared.db.session.upgrade (which passes a connection) and by the CLI.

SQLite cannot ALTER most things in place, so migrations render in batch mode there (copy-and-move
tables); foreign keys are switched off for those connections so recreating a table cannot cascade.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context

from shared.db.models import Base
from shared.db.session import make_engine

config = context.config
target_metadata = Base.metadata


def _configure_and_run(connection) -> None:  # noqa: ANN001 - alembic hands us a Connection
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url_from_cli() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("FASHION_DATABASE_URL") \
        or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: pass `-x url=postgresql+psycopg://...` or set FASHION_DATABASE_URL")
    return url


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    if context.is_offline_mode():
        context.configure(url=_url_from_cli(), target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url_from_cli(), sqlite_foreign_keys=False)
    try:
        with engine.connect() as connection:
            _configure_and_run(connection)
    finally:
        engine.dispose()


run_migrations()
