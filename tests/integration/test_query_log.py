"""The background search-log writer against the real PostgreSQL: nothing answered is ever lost.

Outages are injected at the session factory (its `begin()` fails or waits on a gate before reaching the
real database); every write that happens is a real transaction.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from services.search.query_log import QueryLog
from shared.db import create_database_if_missing, drop_database, make_engine, session_factory, upgrade
from shared.db.models import Impression, SearchQuery
from shared.db.repository import QueryLogEntry
from shared.errors import Unavailable

POSTGRES_SERVER = os.environ.get("FASHION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


class FaultySessions:
    """A real session factory whose `begin()` can first fail (an outage) or wait on a gate (a slow database)."""

    def __init__(self, real: sessionmaker[Session]) -> None:
        self.real = real
        self.failures_left = 0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.begins = 0

    def begin(self) -> AbstractContextManager[Session]:
        self.begins += 1
        self.entered.set()
        assert self.gate.wait(30), "test gate never opened"
        if self.failures_left:
            self.failures_left -= 1
            raise sa.exc.OperationalError("INSERT", {}, ConnectionError("server closed the connection"))
        return self.real.begin()


@pytest.fixture
def sessions() -> Iterator[FaultySessions]:
    url = make_url(POSTGRES_SERVER).set(database=f"fashion_test_{uuid.uuid4().hex[:12]}").render_as_string(
        hide_password=False)
    create_database_if_missing(url)
    upgrade(url)
    engine = make_engine(url)
    try:
        yield FaultySessions(session_factory(engine))
    finally:
        engine.dispose()
        drop_database(url)


def entry(query_id: str | None = None, *, positions: tuple[int, ...] = (0, 1, 2)) -> QueryLogEntry:
    return QueryLogEntry(query_id or str(uuid.uuid4()), "v1", 3,
                         [{"position": p, "product_id": f"p{p}", "image_id": f"i{p}", "score": 1 - p / 10}
                          for p in positions], query_image=b"photo", filters={"in_stock_only": False})


def stored(sessions: FaultySessions) -> dict[str, int]:
    """query_id -> number of impressions, for every logged query."""
    with sessions.real() as session:
        queries = session.scalars(sa.select(SearchQuery.query_id)).all()
        counts = dict(session.execute(sa.select(Impression.query_id, sa.func.count())
                                      .group_by(Impression.query_id)).all())
    return {q: counts.get(q, 0) for q in queries}


def test_concurrent_submissions_are_all_stored_with_their_impressions(sessions: FaultySessions) -> None:
    log = QueryLog(sessions)
    ids = [str(uuid.uuid4()) for _ in range(200)]
    threads = [threading.Thread(target=lambda part=ids[i::8]: [log.submit(entry(q)) for q in part]) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.flush(timeout=30)
    assert stored(sessions) == {q: 3 for q in ids}
    assert sessions.begins < len(ids)  # queries that queued up together shared a transaction
    log.close()


def test_an_outage_is_retried_and_nothing_is_lost(sessions: FaultySessions) -> None:
    sessions.failures_left = 2
    log = QueryLog(sessions)
    first = entry()
    log.submit(first)
    assert log.flush(first.query_id, timeout=30)
    assert stored(sessions) == {first.query_id: 3} and sessions.begins == 3
    log.close()


def test_a_rejected_entry_is_dropped_alone(sessions: FaultySessions) -> None:
    log = QueryLog(sessions)
    sessions.gate.clear()
    log.submit(entry())  # the writer takes this one and waits at the gate ...
    assert sessions.entered.wait(10)
    good, bad, also_good = entry(), entry(positions=(0, 0)), entry()
    for e in (good, bad, also_good):  # ... while these three queue up as one batch
        log.submit(e)
    sessions.gate.set()
    assert log.flush(timeout=30)
    assert {good.query_id, also_good.query_id} <= set(stored(sessions))
    assert bad.query_id not in stored(sessions) and len(stored(sessions)) == 3
    log.close()


def test_a_full_queue_pushes_back_instead_of_dropping(sessions: FaultySessions) -> None:
    log = QueryLog(sessions, max_pending=2, submit_timeout_s=0.2)
    sessions.gate.clear()
    kept = [entry(), entry()]
    for e in kept:
        log.submit(e)
    with pytest.raises(Unavailable, match="retry shortly"):
        log.submit(entry())
    sessions.gate.set()
    assert log.flush(timeout=30)
    assert set(stored(sessions)) == {e.query_id for e in kept}
    log.close()


def test_close_writes_what_is_queued_then_refuses_more(sessions: FaultySessions) -> None:
    log = QueryLog(sessions)
    sessions.gate.clear()
    queued = [entry() for _ in range(5)]
    for e in queued:
        log.submit(e)
    closer = threading.Thread(target=log.close)
    closer.start()
    sessions.gate.set()
    closer.join(30)
    assert not closer.is_alive()
    assert set(stored(sessions)) == {e.query_id for e in queued}
    with pytest.raises(Unavailable, match="shutting down"):
        log.submit(entry())


def test_photo_retention_by_age_clicks_and_total_size(sessions: FaultySessions) -> None:
    """Unclicked photos go after a day, clicked ones (training data) after 90; then the oldest go until the
    total fits. Query rows, their sha256 and clicks stay, so click pairs stop only where the photo went."""
    from datetime import timedelta

    from services.search.photo_janitor import PhotoJanitor
    from shared.db import repository
    from shared.db.models import utcnow

    now = utcnow()
    ages = {"fresh": timedelta(hours=1), "day-old": timedelta(hours=30), "clicked-old": timedelta(days=30),
            "clicked-ancient": timedelta(days=100), "clicked-new": timedelta(hours=2)}
    ids = {name: str(uuid.uuid4()) for name in ages}
    with sessions.real.begin() as session:
        repository.record_queries(session, [
            QueryLogEntry(ids[name], "v1", 3, [{"position": 0, "product_id": "p0", "image_id": "i0", "score": 1.0}],
                          query_image=bytes(1000), created_at=now - age) for name, age in ages.items()])
        for name in ("clicked-old", "clicked-ancient", "clicked-new"):
            repository.record_click(session, click_id=str(uuid.uuid4()), query_id=ids[name], product_id="p0",
                                    position=0)

    def photos() -> set[str]:
        with sessions.real() as session:
            kept = set(session.scalars(sa.select(SearchQuery.query_id).where(SearchQuery.query_image.is_not(None))))
        return {name for name, query_id in ids.items() if query_id in kept}

    janitor = PhotoJanitor(sessions.real, unclicked_retention=timedelta(hours=24),
                           clicked_retention=timedelta(days=90), max_total_bytes=10_000, interval_s=3600)
    result = janitor.run_once()
    assert photos() == {"fresh", "clicked-old", "clicked-new"}
    assert (result.cleared, result.bytes_freed, result.bytes_kept) == (2, 2000, 3000)

    janitor.max_total_bytes = 2000  # over the size budget: the oldest photo goes first
    assert janitor.run_once().cleared == 1
    assert photos() == {"fresh", "clicked-new"}
    with sessions.real() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(SearchQuery)) == len(ages)
        assert {p.query_id for p in repository.click_training_pairs(session)} == {ids["clicked-new"]}
