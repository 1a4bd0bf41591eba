"""Retraining end to end: a real Celery worker process on the real Redis, a real PostgreSQL database.

Each test gets its own Postgres database (migrated with Alembic, dropped afterwards), its own Celery queue and
Redis key prefix on DB 5 (only those keys are deleted afterwards) and its own worker process(es). The
catalogue is a small synthetic consumer-to-shop folder seeded through the repository; clicks are logged
through ``record_query`` + ``record_click`` with consumer photos as queries and the true item clicked; the
serving model is the 64-px ``tiny_checkpoint``. Simulated shoppers run against a real gRPC server.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import redis
from sqlalchemy.engine import make_url

from fashion.v1 import search_pb2, search_pb2_grpc
from services.retrain.celery_app import RetrainCelery, enqueue_training, make_celery
from services.retrain.config import RetrainConfig
from services.retrain.runs import trigger_run
from services.retrain.settings import RetrainSettings
from services.simulate import simulate_clicks
from shared.data.deepfashion import load_benchmark
from shared.db import create_database_if_missing, drop_database, make_engine, repository, session_factory, upgrade
from shared.fashionnet.checkpoint import load_checkpoint
from shared.grpc.server import create_server

REPO = Path(__file__).resolve().parents[2]
POSTGRES_SERVER = os.environ.get("FASHION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("FASHION_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
SERVING = "tiny-1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
FINISHED = {"reindexing", "rejected", "failed", "promoted"}


@pytest.fixture(scope="module")
def catalogue_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.data.synth import generate

    root = tmp_path_factory.mktemp("c2s")
    generate("consumer2shop", root, 16, seed=7, image_size=96, workers=1, progress=False)
    return root


@dataclass
class Harness:
    """One test's stores, queue and workers."""

    tmp: Path
    catalogue: Path
    checkpoint: Path
    db_url: str
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    workers: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = make_engine(self.db_url)
        self.sessions = session_factory(self.engine)
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.env = {
            "FASHION_DATABASE_URL": self.db_url, "FASHION_REDIS_URL": REDIS_URL,
            "FASHION_RETRAIN_QUEUE": f"retrain-test-{self.uid}", "FASHION_RETRAIN_KEY_PREFIX": f"test-{self.uid}:",
            "FASHION_RUNS_DIR": str(self.tmp / "runs"), "FASHION_RETRAIN_DEVICE": "cpu",
            "FASHION_RETRAIN_LOCK_TIMEOUT_S": "3", "FASHION_RETRAIN_STALE_AFTER_S": "4",
            "FASHION_RETRAIN_RESTORE_INTERVAL_S": "1", "FASHION_RETRAIN_TIME_LIMIT_S": "300",
            "FASHION_RETRAIN_VISIBILITY_TIMEOUT_S": "600",
            "FASHION_IMAGE_ROOTS": str(self.catalogue),  # the worker reads the catalogue's stored file URIs
        }
        self.app: RetrainCelery = make_celery(RetrainSettings(**self._settings_kwargs()))
        self.task_ids: list[str] = []

    def _settings_kwargs(self) -> dict[str, str]:
        return {k.removeprefix("FASHION_").lower(): v for k, v in self.env.items()}

    @property
    def prefix(self) -> str:
        return self.env["FASHION_RETRAIN_KEY_PREFIX"]

    def enqueue(self, run_id: str) -> None:
        self.task_ids.append(enqueue_training(self.app, run_id))

    def start_worker(self, name: str, pool: str = "solo", **env: str) -> subprocess.Popen:
        """A worker in its own process group (``kill_worker`` takes the whole of it: the prefork pool's child
        too, as when a pod is deleted)."""
        log = (self.tmp / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "services.retrain.celery_app", "worker", "--pool", pool,
             "--concurrency", "1", "-Q", self.env["FASHION_RETRAIN_QUEUE"], "-n", f"{name}-{self.uid}@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"],
            cwd=REPO, env={**os.environ, **self.env, **env, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.workers.append(proc)
        return proc

    def wait_ready(self, name: str, timeout: float = 120) -> None:
        """Until the worker listens on the queue (`celery@<name> ready.`)."""
        deadline = time.monotonic() + timeout
        while " ready." not in self.log(name):
            assert time.monotonic() < deadline, f"worker {name} not ready within {timeout:.0f} s:\n{self.log(name)}"
            time.sleep(0.1)

    @staticmethod
    def kill_worker(proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def run(self, run_id: str):
        with self.sessions() as s:
            return repository.get_run(s, run_id)

    def wait_for(self, run_id: str, done: Callable, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if done(run):
                return run
            crashed = any(w.poll() not in (None, -signal.SIGKILL) for w in self.workers)
            assert not crashed, f"a worker exited by itself; logs:\n{self.logs()}"
            time.sleep(0.05)
        raise AssertionError(f"expected {what} within {timeout:.0f} s, run is {run.state} at epoch {run.epoch} "
                             f"({run.message}); worker logs:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.tmp.glob("*.log"))

    def close(self) -> None:
        for proc in self.workers:
            self.kill_worker(proc)
        keys = list(self.redis.scan_iter(match=f"{self.prefix}*", count=500))
        if keys:
            self.redis.delete(*keys)
        self.redis.close()
        self.engine.dispose()


@pytest.fixture
def harness(tmp_path: Path, catalogue_root: Path, tiny_checkpoint: Path) -> Iterator[Harness]:
    url = make_url(POSTGRES_SERVER).set(database=f"fashion_retrain_{uuid.uuid4().hex[:12]}").render_as_string(
        hide_password=False)
    assert create_database_if_missing(url)
    h = None
    try:
        upgrade(url)
        h = Harness(tmp_path, catalogue_root, Path(tiny_checkpoint), url)
        seed_catalogue(h)
        yield h
    finally:
        if h is not None:
            h.close()
        drop_database(url)


def seed_catalogue(h: Harness) -> None:
    """Products and shop images straight through the repository; the tiny checkpoint serving."""
    bench = load_benchmark(h.catalogue, "consumer2shop")
    meta = load_checkpoint(h.checkpoint)[1]
    with h.sessions.begin() as s:
        for item in sorted({r.item_id for r in bench.records}):
            repository.upsert_product(s, item, title=f"item {item}")
        for r in bench.records:
            if r.domain == "shop":
                repository.upsert_image(s, hashlib.sha1(r.image.encode()).hexdigest(), r.item_id,
                                        uri=str(bench.path(r).resolve()), domain="shop")
        repository.register_model_version(s, SERVING, architecture=meta.architecture,
                                          checkpoint_path=str(h.checkpoint), embedding_dim=meta.embedding_dim)
        repository.set_serving(s, SERVING)


def seed_clicks(h: Harness, limit: int | None = None) -> int:
    """Every consumer photo (or the first ``limit``) searched once, shown 8 products, its true item clicked."""
    bench = load_benchmark(h.catalogue, "consumer2shop")
    items = sorted({r.item_id for r in bench.records})
    photos = [r for r in bench.records if r.domain == "consumer"][:limit]
    rng = np.random.default_rng(0)
    with h.sessions.begin() as s:
        for i, record in enumerate(photos):
            shown = [p for p in rng.permutation(items) if p != record.item_id][:7]
            shown.insert(int(rng.integers(8)), record.item_id)
            query_id = str(uuid.uuid4())
            repository.record_query(s, query_id, model_version=SERVING, top_k=8,
                                    query_image=bench.path(record).read_bytes(),
                                    impressions=[{"position": p, "product_id": pid, "score": 1 - p / 10}
                                                 for p, pid in enumerate(shown)],
                                    created_at=T0 + timedelta(minutes=i))
            repository.record_click(s, str(uuid.uuid4()), query_id, record.item_id, shown.index(record.item_id),
                                    clicked_at=T0 + timedelta(minutes=i, seconds=5))
    return len(photos)


def test_accepted_run_reaches_reindexing_with_a_registered_candidate(harness: Harness) -> None:
    h = harness
    pairs = seed_clicks(h)
    h.start_worker("w1")
    config = RetrainConfig(epochs=2, batch_pairs=8, min_pairs=10, min_improvement=-1.0,
                                audit_data=str(h.catalogue))
    run_id, created = trigger_run(h.sessions, h.enqueue, config=config)
    assert created
    run = h.wait_for(run_id, lambda r: r.state in FINISHED, 80, "the run to finish")
    # With an audit set, the gate judges on its labelled val-split photos; click metrics are kept beside.
    assert run.metrics["gate"]["on"] == "audit" and run.metrics["audit"]["photos"] > 0
    assert set(run.metrics["audit"]["candidate"]) == {"top1", "top20"}

    assert run.state == "reindexing", run.message
    assert (run.epoch, run.epochs, run.base_version) == (2, 2, SERVING)
    assert run.loss is not None and run.heartbeat_at is not None and run.message.startswith("accepted")
    assert run.metrics["pairs"] == {"train": pairs - round(pairs * 0.2), "holdout": round(pairs * 0.2)}
    for model in ("candidate", "serving"):
        assert set(run.metrics[model]) == {"top1", "top20"}
        assert all(0.0 <= v <= 1.0 for v in run.metrics[model].values())
    assert re.fullmatch(rf"fn-\d{{8}}-{run_id[:8]}", run.candidate_version)
    with h.sessions() as s:
        candidate = repository.get_model_version(s, run.candidate_version)
        assert (candidate.state, candidate.parent_version, candidate.metrics) == ("candidate", SERVING, run.metrics)
    _, meta = load_checkpoint(candidate.checkpoint_path)  # a normal serving checkpoint
    assert (meta.version, meta.parent_version, meta.notes["run_id"]) == (run.candidate_version, SERVING, run_id)
    assert (h.tmp / "runs" / run_id / "last.pt").is_file()
    # Trained on the frozen backbone's features, computed once per image into the cache every run shares.
    computed = re.search(rf"training run {run_id}: backbone features (\S+): (\d+) images, 0 cached before "
                         r"\(0% hit rate\), (\d+) computed", h.log("w1"))
    assert computed and computed[2] == computed[3] and Path(computed[1]).parent == h.tmp / "runs" / "trunk-cache"
    assert len(list(Path(computed[1]).glob("*/*.npz"))) == int(computed[3])
    assert h.app.AsyncResult(h.task_ids[0]).get(timeout=10) == "reindexing"

    # Delivered again (a duplicate or a replay): nothing is trained twice.
    h.enqueue(run_id)
    assert h.app.AsyncResult(h.task_ids[1]).get(timeout=30) == "reindexing"
    again = h.run(run_id)
    assert (again.state, again.metrics, again.finished_at) == ("reindexing", run.metrics, run.finished_at)
    assert h.log("w1").count(f"training run {run_id}: epoch 1/2") == 1
    with h.sessions() as s:
        assert len(repository.list_model_versions(s)) == 2


def test_rejected_run_records_its_numbers(harness: Harness) -> None:
    h = harness
    seed_clicks(h)
    h.start_worker("w1")
    config = RetrainConfig(epochs=1, batch_pairs=8, min_pairs=10, min_improvement=2.0, unfreeze="top")
    run_id, _ = trigger_run(h.sessions, h.enqueue, config=config)
    run = h.wait_for(run_id, lambda r: r.state in FINISHED, 80, "the run to finish")

    assert run.state == "rejected", run.message
    assert run.message.startswith("rejected: candidate top-20") and "min_improvement 2" in run.message
    assert run.metrics["gate"] == {"min_improvement": 2.0, "accepted": False, "on": "held-out clicks"}
    assert {"top1", "top20"} <= set(run.metrics["candidate"]) and {"top1", "top20"} <= set(run.metrics["serving"])
    assert run.finished_at is not None
    with h.sessions() as s:
        assert repository.get_model_version(s, run.candidate_version).state == "rejected"
        assert repository.serving_version(s).version == SERVING


def test_killed_worker_is_redelivered_and_resumes_from_its_last_epoch(harness: Harness) -> None:
    h = harness
    seed_clicks(h)
    short = {"FASHION_RETRAIN_VISIBILITY_TIMEOUT_S": "8", "FASHION_RETRAIN_TIME_LIMIT_S": "6"}
    first = h.start_worker("w1", **short)
    config = RetrainConfig(epochs=8, batch_pairs=8, min_pairs=10, min_improvement=-1.0)
    run_id, _ = trigger_run(h.sessions, h.enqueue, config=config)
    run = h.wait_for(run_id, lambda r: r.epoch >= 1, 60, "a first finished epoch")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = h.run(run_id)
    assert killed_at.state == "training" and 1 <= killed_at.epoch < 8, "the run must be mid-training when killed"

    h.start_worker("w2", **short)  # the task comes back once the visibility timeout has passed
    run = h.wait_for(run_id, lambda r: r.state in FINISHED, 85, "the redelivered run to finish")
    assert run.state == "reindexing", run.message
    resumed = run.progress["resumed_from_epoch"]
    assert killed_at.epoch <= resumed < 8
    assert f"resuming training run {run_id} from epoch {resumed} of 8" in h.log("w2")
    # The second worker read every backbone feature the first one computed; it ran the backbone on none.
    assert re.search(rf"training run {run_id}: backbone features \S+: (\d+) images, \1 cached before "
                     r"\(100% hit rate\), 0 computed", h.log("w2")), h.log("w2")
    assert run.epoch == 8


class NoPromotion:
    """The promotion worker's promoter, doing nothing: only its reaper is under test here."""

    def promote(self, version: str, *, run_id: str | None = None) -> None:
        pass

    def recheck_tail(self) -> None:
        pass

    def interrupt(self) -> None:
        pass


def test_a_run_whose_whole_worker_died_is_reaped_and_resumes_on_a_new_worker(harness: Harness) -> None:
    """SIGKILL the worker's process group (pod deleted): its message stays unacknowledged in Redis for the
    visibility timeout (600 s here, hours in production), so only the admin's reaper can bring the run back."""
    from prometheus_client import REGISTRY

    from services.admin.promotion_worker import PromotionWorker
    from services.retrain.trigger import Retraining

    h = harness
    seed_clicks(h)
    settings = RetrainSettings(**h._settings_kwargs())
    poll_s = 0.5
    reaped_before = REGISTRY.get_sample_value("fashion_retrain_runs_reaped_total") or 0.0
    # Two workers as deployed (a main process and one pool child each), both listening before the trigger: the
    # one that takes the run is killed, the other replaces it. Up before the kill because a 4 s threshold is
    # shorter than a worker's start on a busy machine, and a reap nobody answers is repeated (harmless
    # duplicates, but then the reaps would not be countable).
    workers = {name: h.start_worker(name, pool="prefork") for name in ("w1", "w2")}
    for name in workers:
        h.wait_ready(name)
    run_id, _ = trigger_run(h.sessions, h.enqueue,
                            config=RetrainConfig(epochs=8, batch_pairs=8, min_pairs=10, min_improvement=-1.0))
    h.wait_for(run_id, lambda r: r.epoch >= 1, 60, "a first finished epoch")
    [(dead, dead_proc)] = [(name, proc) for name, proc in workers.items() if f"training run {run_id}" in h.log(name)]
    survivor = next(name for name in workers if name != dead)
    reaper = PromotionWorker(NoPromotion(), h.sessions, poll_s,  # type: ignore[arg-type]
                             reaper=Retraining(settings, enqueue=h.enqueue).reap).start()
    try:
        h.kill_worker(dead_proc)
        killed = h.run(run_id)
        assert killed.state == "training" and 1 <= killed.epoch < 8, "the run must be mid-training when killed"

        resumed = h.wait_for(run_id, lambda r: r.heartbeat_at > killed.heartbeat_at, 30, "the new worker to take it")
        reaped_at = datetime.fromisoformat(resumed.progress["reaped_at"])
        silence = (reaped_at - killed.heartbeat_at).total_seconds()
        # Reaped once the heartbeat was stale, within one poll of that (plus slack for a loaded machine), and
        # taken by the waiting worker at once.
        assert settings.retrain_stale_after_s < silence <= settings.retrain_stale_after_s + poll_s + 2.0, silence
        assert (resumed.heartbeat_at - reaped_at).total_seconds() < 5.0
        run = h.wait_for(run_id, lambda r: r.state in FINISHED, 90, "the resumed run to finish")
    finally:
        reaper.stop()
    assert run.state == "reindexing" and run.epoch == 8, run.message
    assert run.message.startswith("accepted")  # the reap note was the run's message only until a worker took it
    assert (run.progress["reaps"], len(h.task_ids)) == (1, 2)
    assert killed.epoch <= run.progress["resumed_from_epoch"] < 8
    assert f"resuming training run {run_id} from epoch {run.progress['resumed_from_epoch']} of 8" in h.log(survivor)
    assert REGISTRY.get_sample_value("fashion_retrain_runs_reaped_total") == reaped_before + 1
    with h.sessions() as s:
        assert len(repository.list_model_versions(s)) == 2  # the serving model and exactly one candidate

    # The dead worker's own message, handed out at last by Redis (sent here as the same task): a no-op.
    h.enqueue(run_id)
    assert h.app.AsyncResult(h.task_ids[-1]).get(timeout=30) == "reindexing"
    assert h.log(survivor).count(f"training run {run_id}: epoch 8/8") == 1
    assert f"training run {run_id}: epoch 8/8" not in h.log(dead)
    assert h.run(run_id).finished_at == run.finished_at


def test_concurrent_triggers_create_one_run_and_one_task(harness: Harness) -> None:
    h = harness
    barrier = threading.Barrier(6)

    def trigger() -> tuple[str, bool]:
        barrier.wait()
        return trigger_run(h.sessions, h.enqueue, config=RetrainConfig(epochs=1))

    with futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: trigger(), range(6)))
    assert len({run_id for run_id, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * 5 + [True]
    assert len(h.task_ids) == 1
    assert h.redis.llen(h.prefix + h.env["FASHION_RETRAIN_QUEUE"]) == 1  # one message waits on the broker
    with h.sessions() as s:
        assert len(repository.list_runs(s)) == 1


def test_too_little_data_fails_the_run_with_the_reason(harness: Harness) -> None:
    h = harness
    seed_clicks(h, limit=3)
    h.start_worker("w1")
    run_id, _ = trigger_run(h.sessions, h.enqueue, config=RetrainConfig(min_pairs=20))
    run = h.wait_for(run_id, lambda r: r.state in FINISHED, 60, "the run to fail")
    assert run.state == "failed"
    assert run.message == ("expected at least 20 click pairs to retrain, found 3 "
                           "(run `fashion simulate-clicks` or wait for more traffic)")
    assert h.app.AsyncResult(h.task_ids[0]).get(timeout=10) == "failed"
    run_id2, created = trigger_run(h.sessions, h.enqueue)  # a failed run blocks no later trigger
    assert created and run_id2 != run_id


# ------------------------------------------------------------------------------------------------ simulated shoppers


class FakeSearch(search_pb2_grpc.SearchServiceServicer):
    """FindSimilar ranks a fixed catalogue with each photo's true item at a photo-dependent position."""

    def __init__(self, items: list[str], truth: dict[str, str]) -> None:
        self.items = items
        self.truth = truth  # photo sha256 -> item id
        self.clicks: list[tuple[str, str, int]] = []
        self.shown: dict[str, list[str]] = {}

    def FindSimilar(self, request, context):  # noqa: N802
        digest = hashlib.sha256(request.image.data).hexdigest()
        true = self.truth[digest]
        others = [i for i in self.items if i != true]
        position = int(digest, 16) % (request.top_k + 5)  # sometimes not shown at all
        ranked = (others[:position] + [true] + others[position:])[:request.top_k]
        query_id = str(uuid.uuid4())
        self.shown[query_id] = ranked
        return search_pb2.FindSimilarResponse(query_id=query_id, hits=[
            search_pb2.SearchHit(product_id=p, position=i, score=1 - i / 100) for i, p in enumerate(ranked)])

    def RecordClick(self, request, context):  # noqa: N802
        assert self.shown[request.query_id][request.position] == request.product_id
        self.clicks.append((request.query_id, request.product_id, request.position))
        return search_pb2.RecordClickResponse(accepted=True)


def test_simulated_shoppers_click_through_the_real_grpc_api(catalogue_root: Path) -> None:
    bench = load_benchmark(catalogue_root, "consumer2shop")
    truth = {hashlib.sha256(bench.path(r).read_bytes()).hexdigest(): r.item_id
             for r in bench.records if r.domain == "consumer"}
    items = sorted({r.item_id for r in bench.records}) + [f"filler{i:02d}" for i in range(20)]
    fake = FakeSearch(items, truth)
    server, port = create_server([(search_pb2_grpc.add_SearchServiceServicer_to_server, fake)])
    try:
        address = f"127.0.0.1:{port}"
        photos = sum(r.domain == "consumer" and r.split == "train" for r in bench.records)
        runs = [simulate_clicks(address, catalogue_root, sessions=photos, seed=5, noise=0.1, progress=False)
                for _ in range(2)]
    finally:
        server.stop(0)
    first, second = runs
    assert (first.queries, first.shown, first.clicks, first.true_clicks) == (
        second.queries, second.shown, second.clicks, second.true_clicks)  # deterministic per seed
    assert first.queries == photos and 0 < first.shown < first.queries
    assert 0 < first.true_clicks <= first.clicks <= first.queries and first.true_clicks <= first.shown
    assert len(fake.clicks) == 2 * first.clicks
    assert [c[1:] for c in fake.clicks[:first.clicks]] == [c[1:] for c in fake.clicks[first.clicks:]]
