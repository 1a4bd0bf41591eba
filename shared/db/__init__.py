"""The relational store: SQLAlchemy 2.0 models, sessions, Alembic migrations and repository functions.

PostgreSQL in production and CI, SQLite (same models, same migrations) as the no-server local fallback::

    from shared.db import make_engine, session_factory, upgrade, repository

    url = database_url_or_fallback(settings.database_url, Path("var/fashion.db"))
    create_database_if_missing(url)
    upgrade(url)
    factory = session_factory(make_engine(url))
"""

from shared.db import repository
from shared.db.models import (
    Base,
    Click,
    Image,
    ImageDomain,
    ImagePrediction,
    Impression,
    ModelState,
    ModelVersion,
    ProcessedEvent,
    Product,
    RunState,
    SearchQuery,
    TrainingRun,
)
from shared.db.session import (
    create_database_if_missing,
    current_revision,
    database_url_or_fallback,
    downgrade,
    drop_database,
    head_revision,
    make_engine,
    session_factory,
    sqlite_url,
    upgrade,
)

__all__ = [
    "Base",
    "Click",
    "Image",
    "ImageDomain",
    "ImagePrediction",
    "Impression",
    "ModelState",
    "ModelVersion",
    "ProcessedEvent",
    "Product",
    "RunState",
    "SearchQuery",
    "TrainingRun",
    "create_database_if_missing",
    "current_revision",
    "database_url_or_fallback",
    "downgrade",
    "drop_database",
    "head_revision",
    "make_engine",
    "repository",
    "session_factory",
    "sqlite_url",
    "upgrade",
]
