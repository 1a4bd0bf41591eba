"""Promotion without downtime, against real stores: Postgres (SQLite if none answers), Qdrant Edge, real
gRPC SearchService and AdminService servers, the tiny model under two versions.

The catalogue is indexed with version A through the real ingest core. A training run left in `reindexing`
with candidate B is promoted by the PromotionWorker while a thread keeps calling FindSimilar: no call may fail,
and every call after the swap must answer with B. Uploads during the re-index must reach B's collection. A
Rollback goes back to A without re-indexing, and a ModelWatcher on a second runtime (another process, no
vector store) follows the registry.
"""

from __future__ import annotations

import dataclasses
import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from fashion.v1 import admin_pb2, admin_pb2_grpc, common_pb2, search_pb2, search_pb2_grpc
from services.admin.core import AdminCore
from services.admin.promoter import Promoter
from services.admin.promotion_worker import PromotionWorker
from services.admin.server import admin_servicers, bearer_metadata
from services.ingest.core import IncomingEvent, IngestCore
from services.ingest.events import build_upsert_event
from services.search.core import SearchCore
from services.search.server import search_servicers
from shared.db import repository
from shared.db.models import ModelState, RunState
from shared.db.session import (
    create_database_if_missing,
    database_url_or_fallback,
    drop_database,
    make_engine,
    session_factory,
    upgrade,
)
from shared.grpc.server import create_server
from shared.imaging import ImageIntake, IntakePolicy
from shared.serving.runtime import ModelRuntime
from shared.serving.watcher import ModelWatcher
from shared.vectorstore import VectorStore, open_store, point_id

A, B, C = "tiny-1", "tiny-2", "tiny-3"
TOKEN = "promotion-test-token"
ARCH = "fashionnet_efficientnet_lite0"
TIMEOUT = 30
# product id -> number of images
CATALOGUE = {"p0": 2, "p1": 1, "p2": 1, "p3": 1, "p4": 2, "p5": 1}
PAGE = 2  # re-index page size: several pages, so searches overlap the re-index
# How far before a re-index or swap the promoter re-checks changed products (30 s in production). The fixture
# waits longer than this after indexing, so only the uploads made during the test count as "changed".
TAIL_MARGIN_S = 0.5


def _png(seed: int, size: int = 80) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 255, 3) + rng.normal(0, 50, (size, size, 3)), 0, 255).astype(np.uint8)
    pixels[size // 3: size // 2] = rng.integers(0, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


class HookedAnalyzer:
    """The promoter's view of the runtime: counts images per version and runs a hook before each call."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self.images: dict[str | None, int] = {}
        self.hook = None

    def analyze(self, images, version=None, timeout=60.0):
        self.images[version] = self.images.get(version, 0) + len(images)
        if self.hook is not None:
            self.hook(version)
        return self.runtime.analyze(images, version, timeout)

    def __getattr__(self, name):
        return getattr(self.runtime, name)


@dataclasses.dataclass
class Env:
    root: Path
    sessions: object
    store: VectorStore
    runtime: ModelRuntime
    promoter_view: HookedAnalyzer
    worker: PromotionWorker
    ingest: IngestCore
    search: search_pb2_grpc.SearchServiceStub
    admin: admin_pb2_grpc.AdminServiceStub
    address: str
    images: dict[str, list[Path]]
    checkpoints: dict[str, Path]

    def upload(self, product_id: str, paths: list[Path], *, price: float) -> None:
        event = build_upsert_event(product_id, paths, title=f"Title of {product_id}", brand="Acme", price=price)
        result = self.ingest.process([IncomingEvent.of(event)])
        assert result.counts() == {"indexed": 1}, result.outcomes

    def payload(self, version: str, product_id: str, image_id: str) -> dict | None:
        found = self.store.payloads(version, [point_id(product_id, image_id, version)])
        return next(iter(found.values()), None)

    def image_ids(self, product_id: str) -> list[str]:
        with self.sessions() as session:
            return [im.image_id for im in repository.get_product_images(session, product_id)]


@pytest.fixture(scope="module")
def env(tiny_checkpoint: Path, perturbed_checkpoint: Callable[..., Path],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("promotion")
    url = database_url_or_fallback(f"postgresql+psycopg://postgres@127.0.0.1:5432/fashion_promo_{uuid.uuid4().hex[:8]}",
                                   root / "fashion.db")
    create_database_if_missing(url)
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    checkpoints = {A: tiny_checkpoint,
                   B: perturbed_checkpoint(B, seed=1),
                   C: perturbed_checkpoint(C, seed=2)}
    with sessions.begin() as session:
        repository.register_model_version(session, A, architecture=ARCH, checkpoint_path=str(checkpoints[A]),
                                          embedding_dim=32)
        repository.set_serving(session, A)
    runtime = ModelRuntime(engine="eager", max_batch=8, max_wait_ms=2)
    runtime.load(checkpoints[A])
    store = open_store(root / "qdrant")
    intake = ImageIntake(policy=IntakePolicy(roots=(root,)))  # the catalogue intake: images under root
    ingest = IngestCore(runtime, sessions, store, intake)
    images: dict[str, list[Path]] = {}
    seed = 0
    for pid, count in {**CATALOGUE, "p9": 1, "p7": 1}.items():
        for j in range(count):
            path = root / "images" / f"{pid}-{j}.png"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(_png(seed))
            seed += 1
            images.setdefault(pid, []).append(path)
    env_view = HookedAnalyzer(runtime)
    promoter = Promoter(env_view, sessions, store, intake=intake, batch_size=PAGE, preload_wait_s=0,
                        tail_margin_s=TAIL_MARGIN_S)
    worker = PromotionWorker(promoter, sessions, interval_s=60)  # polled by hand
    search_core = SearchCore(runtime, sessions, store, ImageIntake(), click_sink=lambda click: None)
    admin_core = AdminCore(sessions, promoter, trigger=None)
    server, port = create_server([*search_servicers(search_core), *admin_servicers(admin_core, TOKEN)])
    address = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(address) as channel:
            built = Env(root, sessions, store, runtime, env_view, worker, ingest,
                        search_pb2_grpc.SearchServiceStub(channel), admin_pb2_grpc.AdminServiceStub(channel),
                        address, images, checkpoints)
            for pid in CATALOGUE:
                built.upload(pid, images[pid], price=10.0 + int(pid[1:]))
            time.sleep(TAIL_MARGIN_S + 0.2)
            yield built
    finally:
        server.stop(0)
        search_core.close()
        runtime.close()
        store.close()
        engine.dispose()
        drop_database(url)


@dataclasses.dataclass
class Call:
    started: float
    version: str | None
    error: str | None


class Searcher(threading.Thread):
    """Calls FindSimilar in a loop over its own channel, recording each call's model version or error."""

    def __init__(self, address: str, query: bytes) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.query = query
        self.calls: list[Call] = []
        self.stop = threading.Event()

    def run(self) -> None:
        request = search_pb2.FindSimilarRequest(image=common_pb2.ImageInput(data=self.query), top_k=3)
        with grpc.insecure_channel(self.address) as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    response = stub.FindSimilar(request, timeout=TIMEOUT)
                    self.calls.append(Call(started, response.model.version, None))
                except grpc.RpcError as err:
                    self.calls.append(Call(started, None, f"{err.code().name}: {err.details()}"))

    def wait_for(self, count: int, after: float = 0.0, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(c.started > after for c in self.calls) < count:
            assert time.monotonic() < deadline, f"FindSimilar made fewer than {count} calls in {timeout}s"
            time.sleep(0.01)


def _find(env: Env, path: Path) -> search_pb2.FindSimilarResponse:
    request = search_pb2.FindSimilarRequest(image=common_pb2.ImageInput(data=path.read_bytes()), top_k=3)
    return env.search.FindSimilar(request, timeout=TIMEOUT)


def _serving(env: Env) -> str:
    with env.sessions() as session:
        return repository.serving_version(session).version


def test_promotion_under_load_rollback_and_a_second_process(env: Env) -> None:
    other = ModelRuntime(engine="eager", max_batch=4)  # "another process": its own runtime, no vector store
    other.load(env.checkpoints[A])
    watcher = ModelWatcher(other, env.sessions, None, interval_s=60)
    try:
        _promote_under_load(env, watcher, other)
        _rollback(env, watcher, other)
        _promote_again_and_unload(env, watcher, other)
    finally:
        other.close()


def _promote_under_load(env: Env, watcher: ModelWatcher, other: ModelRuntime) -> None:
    # Training's hand-over: candidate B registered, its run in `reindexing` with its metrics.
    with env.sessions.begin() as session:
        repository.register_model_version(session, B, architecture=ARCH, checkpoint_path=str(env.checkpoints[B]),
                                          embedding_dim=32, state=ModelState.CANDIDATE)
        run, _ = repository.create_or_get_active_run(session, "retrain", epochs=1, config={"epochs": 1})
        run_id = run.run_id
        repository.move_run(session, run_id, RunState.TRAINING)
        repository.move_run(session, run_id, RunState.EVALUATING)
        repository.move_run(session, run_id, RunState.REINDEXING, candidate_version=B,
                              metrics={"top20": 0.9, "serving_top20": 0.8})
    assert watcher.poll_once().loaded == [B]  # a candidate is loaded ahead of its promotion
    assert other.default_version == A

    # While B re-indexes: p2's price changes and p9 is new; both land in A's collection (the alias target).
    uploads_done = threading.Event()

    def during_reindex(version: str | None) -> None:
        if version == B and not uploads_done.is_set():
            uploads_done.set()
            env.upload("p2", env.images["p2"], price=99.0)
            env.upload("p9", env.images["p9"], price=19.0)
        if version == B:
            time.sleep(0.05)  # keep the re-index going across several searches

    env.promoter_view.hook = during_reindex
    searcher = Searcher(env.address, env.images["p1"][0].read_bytes())
    searcher.start()
    try:
        searcher.wait_for(3)
        t_start = time.monotonic()
        assert env.worker.poll_once() == [run_id]
        t_end = time.monotonic()
        searcher.wait_for(5, after=t_end)
    finally:
        searcher.stop.set()
        searcher.join(TIMEOUT)
        env.promoter_view.hook = None

    calls = searcher.calls
    assert [c.error for c in calls if c.error] == []
    assert sum(t_start <= c.started <= t_end for c in calls) >= 1, "no search overlapped the promotion"
    assert {c.version for c in calls if c.started < t_start} == {A}
    assert {c.version for c in calls if c.started > t_end} == {B}
    assert uploads_done.is_set()

    # The run ended promoted with its metrics; the registry, the alias and the runtime all say B.
    with env.sessions() as session:
        run = repository.get_run(session, run_id)
        assert run.state == RunState.PROMOTED and run.metrics == {"top20": 0.9, "serving_top20": 0.8}
        assert f"promoted {B} (was {A})" in run.message and run.progress["reindex_cursor"]
        assert run.config == {"epochs": 1} and run.finished_at is not None  # progress notes stay out of it
        states = {m.version: m.state for m in repository.list_model_versions(session)}
        total = repository.count_catalog_images(session)
    assert states == {A: ModelState.RETIRED, B: ModelState.SERVING}
    assert env.store.alias_target() == B and env.runtime.default_version == B
    assert env.store.count(B) == env.store.count(A) == total == sum(CATALOGUE.values()) + 1  # old collection kept

    # Uploads during the re-index reached B: p2's new price (the tail re-check) and p9; payloads as ingest's.
    p2_image = env.image_ids("p2")[0]
    assert env.payload(B, "p2", p2_image)["price"] == 99.0
    for pid in ("p0", "p2", "p9"):
        image_id = env.image_ids(pid)[0]
        from_ingest, from_reindex = env.payload(A, pid, image_id), env.payload(B, pid, image_id)
        assert from_ingest.pop("model_version") == A and from_reindex.pop("model_version") == B
        assert from_reindex == from_ingest
    response = _find(env, env.images["p9"][0])
    assert response.model.version == B and response.hits[0].product_id == "p9"

    # The other process follows: B becomes its default without a restart, A stays loaded (rollback target).
    result = watcher.poll_once()
    assert result.default == B and result.loaded == [] and other.versions() == [A, B]


def _rollback(env: Env, watcher: ModelWatcher, other: ModelRuntime) -> None:
    env.upload("p7", env.images["p7"], price=7.0)  # while B serves: written to B's collection only
    p7_image = env.image_ids("p7")[0]
    assert env.payload(B, "p7", p7_image) is not None and env.payload(A, "p7", p7_image) is None
    embedded_before = dict(env.promoter_view.images)
    alias_when_embedding: list[str | None] = []
    env.promoter_view.hook = lambda version: alias_when_embedding.append(env.store.alias_target())
    try:
        model = env.admin.Rollback(admin_pb2.RollbackRequest(), metadata=bearer_metadata(TOKEN), timeout=TIMEOUT)
    finally:
        env.promoter_view.hook = None
    # Instant: the alias is back on A before anything is embedded; only what was uploaded while B served (p7,
    # and what changed within the re-check margin of B's swap) is embedded into A afterwards.
    assert alias_when_embedding and set(alias_when_embedding) == {A}
    assert env.payload(A, "p7", p7_image)["price"] == 7.0
    assert (model.version, model.state, model.serving) == (A, "serving", True)
    assert _find(env, env.images["p1"][0]).model.version == A
    assert env.store.alias_target() == A and env.runtime.default_version == A and _serving(env) == A
    assert env.promoter_view.images.get(A, 0) - embedded_before.get(A, 0) < sum(CATALOGUE.values())
    assert env.promoter_view.images.get(B) == embedded_before.get(B)
    result = watcher.poll_once()
    assert result.default == A and other.versions() == [A, B]  # B is now the rollback target: kept loaded


def _promote_again_and_unload(env: Env, watcher: ModelWatcher, other: ModelRuntime) -> None:
    # B served before: promoting it again is a swap plus a catch-up, not a re-index.
    embedded_before = env.promoter_view.images.get(B, 0)
    model = env.admin.PromoteModel(admin_pb2.PromoteModelRequest(version=B), metadata=bearer_metadata(TOKEN),
                                   timeout=TIMEOUT)
    assert (model.version, model.serving) == (B, True) and _find(env, env.images["p1"][0]).model.version == B
    assert env.promoter_view.images.get(B, 0) - embedded_before < sum(CATALOGUE.values())  # a catch-up only

    # A candidate is loaded; once rejected, it is unloaded on the second poll that finds it unwanted.
    with env.sessions.begin() as session:
        repository.register_model_version(session, C, architecture=ARCH, checkpoint_path=str(env.checkpoints[C]),
                                          embedding_dim=32, state=ModelState.CANDIDATE)
    assert watcher.poll_once().loaded == [C] and other.default_version == B
    with env.sessions.begin() as session:
        repository.set_model_state(session, C, ModelState.REJECTED)
    assert watcher.poll_once().unloaded == []
    assert watcher.poll_once().unloaded == [C]
    assert other.versions() == [A, B]  # A: the rollback target


def test_worker_fails_a_run_whose_candidate_is_unknown(env: Env) -> None:
    with env.sessions.begin() as session:
        run, created = repository.create_or_get_active_run(session, "retrain-ghost")
        assert created
        for state in (RunState.TRAINING, RunState.EVALUATING):
            repository.move_run(session, run.run_id, state)
        repository.move_run(session, run.run_id, RunState.REINDEXING, candidate_version="ghost")
    assert env.worker.poll_once() == []
    with env.sessions() as session:
        run = repository.get_run(session, run.run_id)
    assert run.state == RunState.FAILED and "unknown model version 'ghost'" in run.message


def test_a_late_commit_after_the_swap_is_caught_by_the_recheck(env: Env) -> None:
    """An ingest batch that read the old alias before a swap and commits after it: the delayed re-check fixes it."""
    promoter = Promoter(env.promoter_view, env.sessions, env.store, intake=env.ingest.intake, batch_size=PAGE,
                        preload_wait_s=0, tail_margin_s=TAIL_MARGIN_S, tail_recheck_after_s=0)
    version = _serving(env)
    promoter.promote(version)  # already serving: a swap to itself, which schedules the re-check
    image_id = env.image_ids("p3")[0]
    assert env.payload(version, "p3", image_id)["price"] == 13.0
    with env.sessions.begin() as session:  # the batch's database commit; its vectors went elsewhere
        repository.upsert_product(session, "p3", title="Title of p3", brand="Acme", price=55.0, currency="EUR")
    assert promoter.recheck_tail() >= 1
    assert env.payload(version, "p3", image_id)["price"] == 55.0
    assert promoter.recheck_tail() == 0  # once per swap
