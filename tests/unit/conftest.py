"""Unit fixtures: a migrated SQLite database (file-backed, per test), for logic that reads and writes rows."""

from __future__ import annotations

import pytest

from shared.db import make_engine, session_factory, sqlite_url, upgrade


@pytest.fixture
def sessions(tmp_path):
    url = sqlite_url(tmp_path / "fashion.db")
    upgrade(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()
