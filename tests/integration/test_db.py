"""The relational store against the real PostgreSQL and against SQLite, through the same tests.

Every test body runs on both backends (``db`` is parametrised). The Postgres database is created with a
unique name for this test session, migrated with Alembic, and dropped at the end. Set
FASHION_TEST_POSTGRES_URL to point at another server (any database on it: it is only used to connect).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from shared.db import (
    Base,
    create_database_if_missing,
    current_revision,
    database_url_or_fallback,
    downgrade,
    drop_database,
    head_revision,
    make_engine,
    repository,
    session_factory,
    sqlite_url,
    upgrade,
)
from shared.db.models import RUN_TRANSITIONS, TERMINAL_RUN_STATES, RunState
from shared.db.repository import runs as runs_module
from shared.errors import InvalidInput, NotFound

POSTGRES_SERVER = os.environ.get("FASHION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["postgresql", "sqlite"]


def _new_postgres_url() -> str:
    return make_url(POSTGRES_SERVER).set(database=f"fashion_test_{uuid.uuid4().hex[:12]}").render_as_string(
        hide_password=False)


@dataclass
class Db:
    backend: str
    url: str
    engine: Engine
    factory: sessionmaker[Session]

    @property
    def concurrent_writers(self) -> bool:
        """Postgres interleaves transactions; SQLite (BEGIN IMMEDIATE) runs writers one after the other."""
        return self.backend == "postgresql"


@pytest.fixture(scope="session")
def migrated_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Db]]:
    postgres_url = _new_postgres_url()
    assert create_database_if_missing(postgres_url), f"could not create {postgres_url}"
    urls = {"postgresql": postgres_url, "sqlite": sqlite_url(tmp_path_factory.mktemp("db") / "fashion.db")}
    databases: dict[str, Db] = {}
    try:
        for backend, url in urls.items():
            upgrade(url)
            engine = make_engine(url)
            databases[backend] = Db(backend, url, engine, session_factory(engine))
        yield databases
    finally:
        for db in databases.values():
            db.engine.dispose()
        drop_database(postgres_url)


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, migrated_databases: dict[str, Db]) -> Iterator[Db]:
    """A migrated, empty database; rows are deleted after each test so tests stay independent."""
    database = migrated_databases[request.param]
    yield database
    with database.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, never-migrated database of each backend, for migration round trips."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "fresh.db")
        return
    url = _new_postgres_url()
    create_database_if_missing(url)
    try:
        yield url
    finally:
        drop_database(url)


def _table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


# --- migrations ---------------------------------------------------------------------------------------


def test_migrations_build_exactly_the_models(db: Db) -> None:
    assert current_revision(db.engine) == head_revision()
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    assert diff == [], f"migrations and models disagree on {db.backend}: {diff}"


def test_downgrade_to_base_then_upgrade_again(fresh_url: str) -> None:
    upgrade(fresh_url)
    tables = set(Base.metadata.tables)
    assert tables <= _table_names(fresh_url)
    downgrade(fresh_url, "base")
    assert _table_names(fresh_url) & tables == set()
    upgrade(fresh_url)
    upgrade(fresh_url)  # already at head: a no-op
    assert tables <= _table_names(fresh_url)


def test_a_reachable_postgres_is_chosen_over_sqlite(tmp_path: Path) -> None:
    missing_database = _new_postgres_url()  # the server answers, the database is created on demand
    for url in (POSTGRES_SERVER, missing_database):
        assert database_url_or_fallback(url, tmp_path / "fallback.db") == url
    try:
        assert create_database_if_missing(missing_database) is True
        assert create_database_if_missing(missing_database) is False
    finally:
        drop_database(missing_database)


# --- catalogue ----------------------------------------------------------------------------------------


def test_upsert_product_twice_keeps_one_row_and_updates_fields(db: Db) -> None:
    with db.factory.begin() as s:
        repository.upsert_product(s, "p1", title="Red dress", brand="Acme", price="19.99", currency="eur",
                                  category="Dress", attributes=["red", "floral"])
    with db.factory.begin() as s:
        repository.upsert_product(s, "p1", title="Red midi dress", price=Decimal("24.50"), currency="EUR",
                                  in_stock=False)
    with db.factory() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Base.metadata.tables["products"])) == 1
        product = repository.get_product(s, "p1")
    assert (product.title, product.brand, product.price, product.currency, product.in_stock) == (
        "Red midi dress", None, Decimal("24.50"), "EUR", False)
    # Predictions were not given the second time, so they are kept.
    assert (product.category, product.attributes) == ("Dress", ["red", "floral"])
    assert product.updated_at >= product.created_at and product.updated_at.tzinfo is not None


def test_deleted_products_disappear_and_come_back_on_upsert(db: Db) -> None:
    with db.factory.begin() as s:
        repository.upsert_product(s, "p1", title="Coat")
        repository.upsert_product(s, "p2", title="Scarf")
    with db.factory.begin() as s:
        assert repository.mark_product_deleted(s, "p1") is True
        assert repository.mark_product_deleted(s, "p1") is False
        assert repository.mark_product_deleted(s, "never-seen") is False
    with db.factory() as s:
        assert set(repository.get_products(s, ["p1", "p2", "p3"])) == {"p2"}
        assert repository.get_products(s, ["p1"], include_deleted=True)["p1"].deleted_at is not None
        with pytest.raises(NotFound, match="unknown product_id 'p1'"):
            repository.get_product(s, "p1")
    with db.factory.begin() as s:
        repository.upsert_product(s, "p1", title="Coat")
    with db.factory() as s:
        assert not repository.get_product(s, "p1").deleted


def test_changed_products_and_catalogue_counts_page_by_key(db: Db) -> None:
    """What a re-index resumes from (images up to a cursor) and catches up on (products changed since)."""
    with db.factory.begin() as s:
        for product_id in ("p1", "p2", "p3"):
            repository.upsert_product(s, product_id, title=product_id)
            repository.upsert_image(s, f"{product_id}-a", product_id, uri=f"/{product_id}.jpg")
        repository.upsert_image(s, "p1-b", "p1", domain="consumer")
    with db.factory() as s:
        since = repository.get_product(s, "p3").updated_at
    with db.factory.begin() as s:
        repository.mark_product_deleted(s, "p2")
        repository.upsert_product(s, "p1", title="p1 again")
    with db.factory() as s:
        assert repository.count_catalog_images(s) == 2  # shop images of live products
        assert repository.count_catalog_images(s, through_image_id="p1-a") == 1
        changed = repository.products_changed_since(s, since, limit=2)
        assert [p.product_id for p in changed] == ["p1", "p2"] and changed[1].deleted
        assert [p.product_id for p in repository.products_changed_since(s, since, after="p2")] == ["p3"]


def test_images_and_predictions_are_idempotent(db: Db) -> None:
    landmarks = [{"name": "left_collar", "x": 0.2, "y": 0.1, "visibility": 0}, {"name": "right_collar", "x": 0.8,
                                                                                "y": 0.1, "visibility": 1}]
    with db.factory.begin() as s:
        repository.upsert_product(s, "p1", title="Shirt")
        for _ in range(2):
            repository.upsert_image(s, "img-1", "p1", uri="file:///a.jpg", sha256="ab" * 32, width=10, height=20)
        repository.upsert_image(s, "img-2", "p1", uri="file:///b.jpg", domain="consumer")
        repository.save_predictions(s, "img-1", "v1", "Tee", 0.5, {"cotton": 0.4}, landmarks)
        repository.save_predictions(s, "img-1", "v1", "Shirt", 0.9, [("cotton", 0.7), ("striped", 0.6)],
                                    landmarks[:1])
        with pytest.raises(NotFound, match="unknown product_id 'nope'"):
            repository.upsert_image(s, "img-3", "nope")
        with pytest.raises(NotFound, match="unknown image_id 'img-9'"):
            repository.save_predictions(s, "img-9", "v1", None, None, {}, [])
        with pytest.raises(InvalidInput, match="expected image domain 'shop' or 'consumer'"):
            repository.upsert_image(s, "img-4", "p1", domain="street")
    with db.factory() as s:
        assert [i.image_id for i in repository.get_product_images(s, "p1")] == ["img-1", "img-2"]
        assert [i.image_id for i in repository.get_product_images(s, "p1", domain="shop")] == ["img-1"]
        assert [i.image_id for i in repository.catalog_images_page(s)] == ["img-1"]
        assert repository.count_catalog_images(s, domain=None) == 2
        prediction = repository.get_predictions(s, "img-1", "v1")
    assert prediction is not None
    assert (prediction.category, prediction.category_score) == ("Shirt", 0.9)
    assert prediction.attributes == {"cotton": 0.7, "striped": 0.6}
    assert prediction.landmarks == [{"name": "left_collar", "x": 0.2, "y": 0.1, "visibility": 0.0}]


# --- idempotency ledger -------------------------------------------------------------------------------


def test_claim_event_is_idempotent(db: Db) -> None:
    with db.factory.begin() as s:
        assert repository.claim_event(s, "evt-1", "catalog.uploads", 0, 41) is True
        assert repository.claim_event(s, "evt-1", "catalog.uploads", 0, 41) is False
    with db.factory.begin() as s:
        assert repository.claim_event(s, "evt-1", "catalog.uploads", 2, 7) is False
        assert repository.claim_event(s, "evt-2", "catalog.uploads", 0, 42) is True
    # A transaction that rolls back leaves its event unclaimed, so the redelivery is processed.
    with pytest.raises(RuntimeError), db.factory.begin() as s:
        assert repository.claim_event(s, "evt-3", "catalog.uploads", 0, 43) is True
        raise RuntimeError("sink failed")
    with db.factory.begin() as s:
        assert repository.claim_event(s, "evt-3", "catalog.uploads", 0, 43) is True


def test_product_locks_keep_the_newest_event_time_and_leave_tombstones(db: Db) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    with db.factory.begin() as s:
        repository.upsert_products(s, [{"product_id": "p1", "title": "Coat", "event_occurred_at": t0}])
    with db.factory.begin() as s:
        # p1 exists with its time; p2 was never seen: it gets a deleted, untitled row to lock.
        assert repository.lock_products(s, ["p2", "p1", "p1"]) == {"p1": t0, "p2": None}
        assert repository.mark_product_deleted(s, "p2", occurred_at=t0 + timedelta(minutes=1)) is False
        # An upsert without a time keeps the product's.
        repository.upsert_products(s, [{"product_id": "p1", "title": "Coat 2"}])
    with db.factory() as s:
        assert repository.get_products(s, ["p2"]) == {}  # a tombstone is no product
        tombstone = repository.get_products(s, ["p2"], include_deleted=True)["p2"]
        assert (tombstone.title, tombstone.deleted) == ("", True)
        assert tombstone.event_occurred_at == t0 + timedelta(minutes=1)
        assert repository.get_product(s, "p1").event_occurred_at == t0
    with db.factory.begin() as s:
        assert repository.lock_products(s, []) == {}
        repository.upsert_products(s, [{"product_id": "p2", "title": "Scarf", "event_occurred_at": t0 + timedelta(
            minutes=2)}])
    with db.factory() as s:
        product = repository.get_product(s, "p2")  # a later upsert lists it again
        assert (product.title, product.deleted, product.event_occurred_at) == ("Scarf", False, t0 + timedelta(
            minutes=2))


# --- outbox -------------------------------------------------------------------------------------------


def test_outbox_rows_are_pending_until_marked_then_purged(db: Db) -> None:
    def announcement(n: int) -> dict[str, object]:
        return {"event_id": f"e{n}", "product_id": f"p{n}", "model_version": "v1", "images": n}

    with db.factory.begin() as s:
        repository.add_announcements(s, [announcement(n) for n in (1, 2, 3)])
        repository.add_announcements(s, [{**announcement(1), "images": 9}])  # queued before: left as it was
    with db.factory.begin() as s:
        pending = repository.pending_announcements(s)
        assert [(a.event_id, a.images, a.sent_at) for a in pending] == [("e1", 1, None), ("e2", 2, None),
                                                                        ("e3", 3, None)]
        assert repository.pending_announcements(s, created_before=pending[0].created_at) == []
        assert [a.event_id for a in repository.pending_announcements(s, limit=1)] == ["e1"]
        assert repository.mark_announced(s, ["e1", "e2", "e9"]) == 2
    with db.factory.begin() as s:
        assert [a.event_id for a in repository.pending_announcements(s)] == ["e3"]
        assert repository.mark_announced(s, ["e1"]) == 0  # marked once
        assert repository.purge_announced(s, datetime.now(UTC) - timedelta(hours=1)) == 0  # sent just now: kept
        assert repository.purge_announced(s, datetime.now(UTC) + timedelta(seconds=1)) == 2
        assert [a.event_id for a in repository.pending_announcements(s)] == ["e3"]


def test_pending_outbox_rows_locked_by_one_sweeper_are_skipped_by_another(db: Db) -> None:
    if not db.concurrent_writers:
        pytest.skip("SQLite runs writers one after the other: a second sweeper waits instead")
    with db.factory.begin() as s:
        repository.add_announcements(s, [{"event_id": f"e{n}", "product_id": "p", "model_version": "v1",
                                          "images": 1} for n in range(4)])
    with db.factory.begin() as first:
        taken = [a.event_id for a in repository.pending_announcements(first, limit=2)]
        with db.factory.begin() as second:
            assert [a.event_id for a in repository.pending_announcements(second)] == ["e2", "e3"]
    assert taken == ["e0", "e1"]


# --- search log ---------------------------------------------------------------------------------------


def _shown(*product_ids: str) -> list[dict[str, object]]:
    return [{"position": i, "product_id": p, "image_id": f"{p}-img", "score": 1.0 - i / 10}
            for i, p in enumerate(product_ids)]


def test_record_click_is_idempotent_and_checks_the_query(db: Db) -> None:
    with db.factory.begin() as s:
        assert repository.record_query(s, "q1", model_version="v1", top_k=3, query_image=b"photo",
                                       impressions=_shown("p1", "p2"), filters={"in_stock": True})
        assert not repository.record_query(s, "q1", model_version="v1", top_k=3, query_image=b"photo",
                                           impressions=_shown("p1", "p2"))
    with db.factory.begin() as s:
        assert repository.record_click(s, "c1", "q1", "p2", 1) is True
        assert repository.record_click(s, "c1", "q1", "p2", 1) is False      # same event replayed
        assert repository.record_click(s, "c2", "q1", "p2", 1) is False      # same click, new event id
        with pytest.raises(NotFound, match="unknown query_id 'q-missing': expected the query_id returned by"):
            repository.record_click(s, "c3", "q-missing", "p1", 0)
        with pytest.raises(InvalidInput, match="product_id 'p9' was not shown for query_id 'q1'"):
            repository.record_click(s, "c4", "q1", "p9", 0)
    with db.factory() as s:
        query = repository.get_query(s, "q1")
        assert (query.query_image, query.filters, query.top_k) == (b"photo", {"in_stock": True}, 3)
        assert [i.product_id for i in repository.query_impressions(s, "q1")] == ["p1", "p2"]
        assert s.scalar(sa.select(sa.func.count()).select_from(Base.metadata.tables["clicks"])) == 1


def test_training_pairs_deduplicate_and_use_skipped_results_as_negatives(db: Db) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    log = [  # query id, minutes after t0, photo, shown, clicked
        ("qa1", 0, b"photo-a", ("p1", "p2", "p3"), ("p2",)),
        ("qb1", 1, b"photo-b", ("p3", "p1"), ("p1", "p1")),
        ("qa2", 2, b"photo-a", ("p2", "p4", "p1"), ("p2",)),   # same photo, same click: a duplicate pair
        ("qp1", 3, None, ("p1",), ("p1",)),                  # by product id: no shopper photo
        ("qc1", 4, b"photo-c", ("p1",), ()),                  # no click: no pair
    ]
    with db.factory.begin() as s:
        for query_id, minutes, photo, shown, clicked in log:
            repository.record_query(s, query_id, model_version="v1", top_k=5, query_image=photo,
                                    source_product_id=None if photo else "p1", impressions=_shown(*shown),
                                    created_at=t0 + timedelta(minutes=minutes))
            for n, product_id in enumerate(clicked):
                repository.record_click(s, f"{query_id}-c{n}", query_id, product_id, shown.index(product_id))
    with db.factory() as s:
        pairs = repository.click_training_pairs(s)
        recent = repository.click_training_pairs(s, since=t0 + timedelta(minutes=2))
    assert [(p.query_id, p.query_image, p.positive_product_id, p.negative_product_ids) for p in pairs] == [
        ("qa1", b"photo-a", "p2", ("p1", "p3", "p4")),
        ("qb1", b"photo-b", "p1", ("p3",)),
    ]
    assert pairs[0].created_at == t0 and pairs[0].model_version == "v1"
    assert [(p.query_id, p.positive_product_id, p.negative_product_ids) for p in recent] == [
        ("qa2", "p2", ("p4", "p1"))]


# --- model registry -----------------------------------------------------------------------------------


def _register(s: Session, version: str, **kwargs: object) -> None:
    repository.register_model_version(s, version, architecture="fashionnet_efficientnet_lite0",
                                      checkpoint_path=f"/models/{version}.pt", embedding_dim=256,
                                      collection_name=f"products_{version}", **kwargs)


def test_set_serving_keeps_exactly_one_serving_version(db: Db) -> None:
    with db.factory.begin() as s:
        for version in ("v1", "v2", "v3"):
            _register(s, version)
        _register(s, "v2", metrics={"top20": 0.7}, parent_version="v1")  # a retried registration
        with pytest.raises(InvalidInput, match="already registered as fashionnet_efficientnet_lite0 with "
                                               "embedding_dim 256"):
            repository.register_model_version(s, "v1", architecture="fashionnet_efficientnet_lite0",
                                              checkpoint_path="/x.pt", embedding_dim=128)
    with db.factory() as s:
        assert repository.stopped_serving_at(s, repository.get_model_version(s, "v1")) is None  # never served
    for version in ("v1", "v2", "v2", "v3"):
        with db.factory.begin() as s:
            assert repository.set_serving(s, version).state == "serving"
    with db.factory.begin() as s:
        v1, v2, v3 = (repository.get_model_version(s, v) for v in ("v1", "v2", "v3"))
        assert repository.stopped_serving_at(s, v1) == v2.promoted_at  # replaced by v2's promotion
        assert repository.stopped_serving_at(s, v3) >= v3.promoted_at  # still serving: now
        states = {m.version: m.state for m in repository.list_model_versions(s)}
        assert states == {"v1": "retired", "v2": "retired", "v3": "serving"}
        assert repository.serving_version(s).version == "v3"
        assert repository.previous_serving_version(s).version == "v2"
        assert repository.get_model_version(s, "v2").metrics == {"top20": 0.7}
        with pytest.raises(NotFound, match="unknown model version 'v9'"):
            repository.set_serving(s, "v9")
        with pytest.raises(InvalidInput, match="'v3' is serving"):
            repository.set_model_state(s, "v3", "rejected")
        assert repository.set_model_state(s, "v1", "rejected").state == "rejected"
    # The database itself refuses a second serving row, whatever the application does.
    with pytest.raises(sa.exc.IntegrityError), db.factory.begin() as s:
        s.execute(sa.update(Base.metadata.tables["model_versions"]).values(state="serving"))


# --- training runs ------------------------------------------------------------------------------------


def _force_both_to_check_before_inserting(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make both threads read "no active run" before either inserts: the race the index must win."""
    barrier = threading.Barrier(2, timeout=10)
    real_active_run = runs_module.active_run
    waited = threading.local()

    def racing_active_run(session: Session, key: str):  # noqa: ANN202
        found = real_active_run(session, key)
        if not getattr(waited, "done", False):
            waited.done = True
            barrier.wait()
        return found

    monkeypatch.setattr(runs_module, "active_run", racing_active_run)
    return barrier.reset


def test_two_concurrent_triggers_give_one_run(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    if db.concurrent_writers:
        _force_both_to_check_before_inserting(monkeypatch)
    start = threading.Barrier(2, timeout=10)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def trigger() -> None:
        try:
            start.wait()
            with db.factory.begin() as s:
                run, created = repository.create_or_get_active_run(s, "retrain", epochs=3)
            results.append((run.run_id, created))
        except BaseException as exc:  # reported below, with the thread's traceback
            errors.append(exc)

    threads = [threading.Thread(target=trigger) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert sorted(created for _, created in results) == [False, True]
    assert len({run_id for run_id, _ in results}) == 1
    with db.factory() as s:
        assert len(repository.list_runs(s)) == 1


def test_training_run_progress_and_a_new_run_after_the_last_one_ends(db: Db) -> None:
    with db.factory.begin() as s:
        run, created = repository.create_or_get_active_run(s, "retrain", epochs=5, config={"lr": 1e-4},
                                                           base_version="v1")
        assert created and run.state == "queued" and (run.config, run.progress) == ({"lr": 1e-4}, {})
    with db.factory.begin() as s:
        repository.move_run(s, run.run_id, "training", epoch=2, loss=0.25, eta_seconds=30.0, heartbeat=True)
        repository.update_run(s, run.run_id, progress={"resumed_from_epoch": 1})
        repository.update_run(s, run.run_id, progress={"reindex_cursor": "img-9"})  # notes are merged
        with pytest.raises(InvalidInput, match="expected a run state in"):
            repository.move_run(s, run.run_id, "paused")
        with pytest.raises(InvalidInput, match=r"cannot update training run fields \['state'\] \(state changes go"):
            repository.update_run(s, run.run_id, state="failed")
        with pytest.raises(InvalidInput, match="cannot update training run fields"):
            repository.update_run(s, run.run_id, run_id="other")
        with pytest.raises(NotFound, match="unknown run_id 'missing'"):
            repository.get_run(s, "missing")
        assert [r.run_id for r in repository.runs_in_state(s, RunState.TRAINING)] == [run.run_id]
        assert repository.runs_in_state(s, RunState.REINDEXING) == []
    with db.factory.begin() as s:
        same, created = repository.create_or_get_active_run(s, "retrain")
        assert (same.run_id, created, same.epoch, same.loss, same.state) == (run.run_id, False, 2, 0.25, "training")
        assert same.progress == {"resumed_from_epoch": 1, "reindex_cursor": "img-9"} and same.config == {"lr": 1e-4}
        assert same.heartbeat_at is not None and same.finished_at is None
        repository.move_run(s, run.run_id, "evaluating")
        done = repository.move_run(s, run.run_id, "rejected", metrics={"top20": 0.5})
        assert done.finished_at is not None
    with db.factory.begin() as s:
        second, created = repository.create_or_get_active_run(s, "retrain")
    assert created and second.run_id != run.run_id


def _walk_to(session: Session, run_id: str, state: RunState) -> None:
    """Move a queued run to ``state`` along legal moves (the shortest path through RUN_TRANSITIONS)."""
    paths = {RunState.QUEUED: []}
    todo = [RunState.QUEUED]
    while todo:
        here = todo.pop(0)
        for nxt in sorted(RUN_TRANSITIONS[here]):
            if nxt not in paths:
                paths[nxt] = [*paths[here], nxt]
                todo.append(nxt)
    for step in paths[state]:
        repository.move_run(session, run_id, step)


def test_the_run_state_machine_allows_exactly_its_transitions(db: Db) -> None:
    import grpc

    from shared.grpc.errors import status_for

    for current in RunState:
        for target in RunState:
            with db.factory.begin() as s:
                run, _ = repository.create_or_get_active_run(s, f"{current}-{target}")
                _walk_to(s, run.run_id, current)
            with db.factory.begin() as s:
                if target in RUN_TRANSITIONS[current]:
                    moved = repository.move_run(s, run.run_id, target, message="moved")
                    assert (moved.state, moved.message) == (target, "moved")
                    assert (moved.finished_at is not None) == (target in TERMINAL_RUN_STATES)
                    continue
                with pytest.raises(repository.IllegalRunTransition,
                                   match=f"cannot move from '{current}' to '{target}'"):
                    repository.move_run(s, run.run_id, target, message="refused")
            with db.factory() as s:  # a refused move writes nothing
                kept = repository.get_run(s, run.run_id)
                assert (kept.state, kept.message) == (current, None)
    refused = repository.IllegalRunTransition("r1", RunState.PROMOTED, RunState.TRAINING)
    assert status_for(refused)[0] is grpc.StatusCode.FAILED_PRECONDITION
    assert "expected one of nothing (it has ended)" in str(refused)


def test_migration_0002_splits_config_from_progress_and_renames_running_both_ways(fresh_url: str) -> None:
    from sqlalchemy.dialects import postgresql

    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    upgrade(fresh_url, "0001")
    engine = make_engine(fresh_url)
    runs = sa.table("training_runs", sa.column("run_id"), sa.column("dedup_key"), sa.column("state"),
                    sa.column("params", json), sa.column("metrics", json))
    settings = {"epochs": 3, "lr": 1e-4, "unfreeze": "top"}
    notes = {"resumed_from_epoch": 2, "reindex_cursor": "img-9", "reindex_started_at": "2026-01-01T00:00:00+00:00"}
    before = [("r1", "running", {**settings, "resumed_from_epoch": 2}), ("r2", "promoted", {**settings, **notes}),
              ("r3", "queued", settings)]
    try:
        with engine.begin() as connection:
            connection.execute(runs.insert(), [{"run_id": r, "dedup_key": f"k-{r}", "state": state, "params": params,
                                                "metrics": {}} for r, state, params in before])
        upgrade(fresh_url)
        with session_factory(engine)() as s:
            after = {r.run_id: (r.state, r.config, r.progress) for r in repository.list_runs(s)}
        assert after == {"r1": ("training", settings, {"resumed_from_epoch": 2}),
                         "r2": ("promoted", settings, notes), "r3": ("queued", settings, {})}
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:  # the old spelling is gone
            connection.execute(sa.text("UPDATE training_runs SET state = 'running' WHERE run_id = 'r3'"))
        # The one-active-run index counts "training" as active: r1 (migrated from "running") still blocks its key.
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO training_runs (run_id, dedup_key, state, config, progress, "
                                       "metrics) VALUES ('r4', 'k-r1', 'queued', '{}', '{}', '{}')"))

        downgrade(fresh_url, "0001")
        old = sa.table("training_runs", sa.column("run_id"), sa.column("state"), sa.column("params", json))
        with engine.connect() as connection:
            rows = {r.run_id: (r.state, r.params) for r in connection.execute(sa.select(old))}
        assert rows == {r: (state, params) for r, state, params in before}
        upgrade(fresh_url)
        with session_factory(engine)() as s:
            assert {r.run_id: (r.state, r.config, r.progress) for r in repository.list_runs(s)} == after
    finally:
        engine.dispose()


def test_migration_0003_adds_event_times_and_the_outbox_both_ways(fresh_url: str) -> None:
    upgrade(fresh_url, "0002")
    engine = make_engine(fresh_url)
    products = sa.table("products", sa.column("product_id"), sa.column("title"), sa.column("attributes", sa.JSON))
    try:
        with engine.begin() as connection:
            connection.execute(products.insert(), [{"product_id": "p1", "title": "Coat", "attributes": []}])
        upgrade(fresh_url)
        with session_factory(engine).begin() as s:
            assert repository.get_product(s, "p1").event_occurred_at is None  # the first timed event applies
            repository.add_announcements(s, [{"event_id": "e1", "product_id": "p1", "model_version": "v1",
                                              "images": 1}])
        downgrade(fresh_url, "0002")
        inspector = sa.inspect(engine)
        assert "indexed_announcements" not in inspector.get_table_names()
        assert "event_occurred_at" not in {c["name"] for c in inspector.get_columns("products")}
        with engine.connect() as connection:
            assert connection.execute(sa.select(products.c.title)).scalars().all() == ["Coat"]
        upgrade(fresh_url)
        with session_factory(engine)() as s:
            assert repository.pending_announcements(s) == [] and repository.get_product(s, "p1").title == "Coat"
    finally:
        engine.dispose()


def test_a_connection_killed_by_the_server_fails_one_call_as_unavailable_then_recovers(
        migrated_databases: dict[str, Db]) -> None:
    """Pooled connections are not pinged before use (a round trip per session): a dead one fails once."""
    import grpc

    from shared.grpc.errors import status_for

    engine = make_engine(migrated_databases["postgresql"].url, pool_size=1, max_overflow=0)
    factory = session_factory(engine)
    try:
        with factory() as session:
            pid = session.scalar(sa.text("SELECT pg_backend_pid()"))
        with migrated_databases["postgresql"].engine.connect() as admin:
            assert admin.scalar(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(sa.exc.DBAPIError) as excinfo, factory() as session:
            session.scalar(sa.text("SELECT 1"))
        assert status_for(excinfo.value)[0] is grpc.StatusCode.UNAVAILABLE
        with factory() as session:
            assert session.scalar(sa.text("SELECT pg_backend_pid()")) != pid
    finally:
        engine.dispose()
