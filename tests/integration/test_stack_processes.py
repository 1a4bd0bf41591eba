"""The system as a user runs it: `fashion up` and `fashion publish` as real processes, real gRPC, real
Kafka (the broker `fashion up` starts), Postgres, Qdrant Edge, a trained checkpoint; then SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fashion.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    detection_pb2,
    detection_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)
from services.admin.server import bearer_metadata
from services.ingest.events import UPLOADS_TOPIC
from shared.data.deepfashion import load_benchmark
from shared.data.outfits import load_outfits
from shared.data.synth import CATEGORIES, generate
from shared.db.session import make_engine
from shared.messaging import make_producer
from shared.training.train import TrainConfig, train

FASHION = [sys.executable, "-m", "services.cli"]
ITEMS = 10  # the `catalogue` fixture's (conftest.py)
TOKEN = "stack-admin-token"


def _wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} while waiting for {what}")
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _count(url: str, sql: str) -> int:
    from sqlalchemy import text

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar())
    finally:
        engine.dispose()


@contextmanager
def _fashion_up(checkpoint: Path, env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    """`fashion up --checkpoint` as a user starts it, logging to tmp_path/up.log; yields it once its stack.json is
    written. The test stops it (and checks how); one still running at the end is killed."""
    state_file = tmp_path / "var" / "stack.json"
    with (tmp_path / "up.log").open("w") as log:
        proc = subprocess.Popen([*FASHION, "up", "--checkpoint", str(checkpoint)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
        try:
            _wait_for(state_file.exists, 120, "fashion up to start", proc)
            yield proc, state_file
        finally:
            if proc.poll() is None:
                proc.kill()


def test_up_publish_search_click_and_sigterm(catalogue, postgres_url, tmp_path) -> None:
    root, checkpoint = catalogue
    env = {**os.environ, "FASHION_DATA_DIR": str(tmp_path / "var"), "FASHION_DATABASE_URL": postgres_url,
           "FASHION_PORT": "0", "FASHION_GRACE_SECONDS": "5", "FASHION_IMAGE_ROOTS": str(root),
           "FASHION_ADMIN_TOKEN": TOKEN,
           "COLUMNS": "400"}  # the CLI's error box wraps at the terminal width: where depends on tmp_path's length
    with _fashion_up(checkpoint, env, tmp_path) as (proc, state_file):
        state = json.loads(state_file.read_text())
        with grpc.insecure_channel(state["grpc"]) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING

            # A folder the stack's ingest may not read is refused before anything is published.
            elsewhere = tmp_path / "elsewhere"
            elsewhere.mkdir()
            (elsewhere / "shirt.jpg").write_bytes(next(root.rglob("*.jpg")).read_bytes())
            refused = subprocess.run([*FASHION, "publish", str(elsewhere)], env=env, capture_output=True, text=True,
                                     timeout=120, check=False)
            assert refused.returncode != 0 and "expected a folder under the catalogue roots" in refused.stderr

            published = subprocess.run([*FASHION, "publish", str(root)], env=env, capture_output=True, text=True,
                                       timeout=120, check=False)
            assert published.returncode == 0, published.stderr
            assert f"published {ITEMS} catalogue events" in published.stderr + published.stdout
            _wait_for(lambda: _count(postgres_url, "select count(*) from products") == ITEMS, 120,
                      "the catalogue to be indexed", proc)

            stub = search_pb2_grpc.SearchServiceStub(channel)
            bench = load_benchmark(root, "consumer2shop")
            consumers = [r for r in bench.records if r.domain == "consumer"]
            hits_at_3 = 0
            for record in consumers:
                response = stub.FindSimilar(search_pb2.FindSimilarRequest(
                    image=common_pb2.ImageInput(data=bench.path(record).read_bytes()), top_k=ITEMS), timeout=30)
                ranked = [h.product_id for h in response.hits]
                assert sorted(ranked) == sorted({r.item_id for r in bench.records})  # every product, once
                hits_at_3 += record.item_id in ranked[:3]
            # Chance would be 3/10; the trained checkpoint finds a consumer photo's shop item far more often.
            assert hits_at_3 / len(consumers) >= 0.6, hits_at_3 / len(consumers)

            # The attack: a catalogue file, a file outside it and a loopback URL as the query image. FindSimilar
            # reads none (the default allows no URLs) and answers each alike.
            for uri in (str(bench.path(consumers[0])), "/etc/hostname", "http://127.0.0.1:9/a.jpg"):
                with pytest.raises(grpc.RpcError) as refused_query:
                    stub.FindSimilar(search_pb2.FindSimilarRequest(image=common_pb2.ImageInput(uri=uri)), timeout=30)
                assert refused_query.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert refused_query.value.details() == "query image: expected inline image bytes"

            click = search_pb2.RecordClickRequest(query_id=response.query_id, product_id=response.hits[1].product_id,
                                                  position=response.hits[1].position)
            assert stub.RecordClick(click, timeout=10).accepted
            assert stub.RecordClick(click, timeout=10).accepted  # a retried click is not counted twice
            _wait_for(lambda: _count(postgres_url, "select count(*) from clicks") == 1, 60, "the click", proc)
            time.sleep(1.0)
            assert _count(postgres_url, "select count(*) from clicks") == 1

            # A poison event goes to the DLQ, and AdminService reads it back from the broker the stack started.
            producer = make_producer(state["kafka_bootstrap"])
            try:
                producer.send(UPLOADS_TOPIC, key=b"poison-1", value=b'{"eventId": "x", "type": ').get(timeout=10)
            finally:
                producer.close()
            admin = admin_pb2_grpc.AdminServiceStub(channel)

            def dead_letters() -> admin_pb2.ListDeadLettersResponse:
                return admin.ListDeadLetters(admin_pb2.ListDeadLettersRequest(limit=5),
                                             metadata=bearer_metadata(TOKEN), timeout=30)

            newest = _wait_for(lambda: dead_letters().dead_letters, 60, "the poison event's dead letter", proc)[0]
            assert (newest.key, newest.source_topic, newest.error_type) == ("poison-1", UPLOADS_TOPIC, "InvalidInput")
            assert "invalid JSON" in newest.reason
            assert not dead_letters().missing_topics  # the ingest and click consumers created their DLQ topics

            # The embedded store belongs to the running stack: `fashion reindex` says so and changes nothing.
            busy = subprocess.run([*FASHION, "reindex"], env=env, capture_output=True, text=True, timeout=120,
                                  check=False)
            assert busy.returncode == 2 and "stop it first" in busy.stderr, busy.stderr

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not state_file.exists()
        assert "stopped cleanly" in (tmp_path / "up.log").read_text()

    # The vector store is lost; `fashion reindex` rebuilds the serving version's collection from Postgres.
    import shutil

    from shared.vectorstore import open_store

    shutil.rmtree(tmp_path / "var" / "qdrant")
    rebuilt = subprocess.run([*FASHION, "reindex"], env=env, capture_output=True, text=True, timeout=300,
                             check=False)
    assert rebuilt.returncode == 0, rebuilt.stderr
    shop_images = _count(postgres_url, "select count(*) from images where domain = 'shop'")
    store = open_store(tmp_path / "var" / "qdrant")
    try:
        serving = store.alias_target()
        assert serving is not None and store.count(serving) == shop_images > 0
        assert f"{shop_images} vectors from {shop_images} catalogue images" in rebuilt.stderr
    finally:
        store.close()


def test_a_sigkilled_stack_leaves_no_orphan_broker_and_no_trusted_state(catalogue, postgres_url, tmp_path) -> None:
    """SIGKILL `fashion up`: its broker dies with it, `fashion publish` refuses the stale stack.json instead of
    "succeeding" into nothing, and the next `fashion up` clears the file and serves."""
    root, checkpoint = catalogue
    # COLUMNS: the CLI's error box wraps at the terminal width, and where it wraps depends on tmp_path's length.
    env = {**os.environ, "FASHION_DATA_DIR": str(tmp_path / "var"), "FASHION_DATABASE_URL": postgres_url,
           "FASHION_PORT": "0", "FASHION_GRACE_SECONDS": "2", "COLUMNS": "400"}
    state_file = tmp_path / "var" / "stack.json"
    with (tmp_path / "up.log").open("w") as log:
        first = subprocess.Popen([*FASHION, "up", "--target", "ingest", "--checkpoint", str(checkpoint)], env=env,
                                 stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
        try:
            _wait_for(state_file.exists, 120, "fashion up to start", first)
            state = json.loads(state_file.read_text())
            assert state["pid"] == first.pid and state["broker_pid"]
        finally:
            first.kill()
            first.wait(timeout=30)
        _wait_for(lambda: not Path(f"/proc/{state['broker_pid']}").exists()
                  or b"zombie" in Path(f"/proc/{state['broker_pid']}/status").read_bytes().lower(),
                  10, "the broker to die with its parent")
        assert state_file.exists()

        published = subprocess.run([*FASHION, "publish", str(root)], env=env, capture_output=True, text=True,
                                   timeout=120, check=False)
        assert published.returncode != 0
        assert f"(pid {first.pid}) is not running" in published.stderr + published.stdout

        second = subprocess.Popen([*FASHION, "up", "--target", "ingest", "--checkpoint", str(checkpoint)], env=env,
                                  stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
        try:
            _wait_for(lambda: state_file.exists() and json.loads(state_file.read_text()).get("pid") == second.pid,
                      120, "the second fashion up to replace the stale state", second)
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=60) == 0
        finally:
            if second.poll() is None:
                second.kill()
    assert "left by pid" in (tmp_path / "up.log").read_text()


# -- shopper photos with several garments (issue 13) ----------------------------------------------------------

OUTFIT_ITEMS = 24
TYPE_OF = {c.name: c.clothes_type.name.lower() for c in CATEGORIES}


@pytest.fixture(scope="module")
def outfit_stack_data(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A consumer-to-shop catalogue, a checkpoint trained on it, outfits, and the detector trained into it (then
    the embedding fine-tuned on the outfits' garment crops)."""
    root = tmp_path_factory.mktemp("c2s") / "data"
    generate("consumer2shop", root, OUTFIT_ITEMS, seed=12, image_size=128, workers=1, progress=False)
    run = tmp_path_factory.mktemp("run")
    base = train(TrainConfig(data=root, out=run, benchmark="consumer2shop", input_size=128, embedding_dim=32,
                             items_per_batch=4, images_per_item=2, landmark_epochs=0, epochs=5, views=1,
                             finetune_epochs=0, workers=0, cache_dir=run / "cache"), progress=False)
    outfits = tmp_path_factory.mktemp("outfits") / "data"
    generate("outfits", outfits, 60, seed=2, image_size=128, workers=1, progress=False)
    detector_run = tmp_path_factory.mktemp("detector")
    trained = subprocess.run([*FASHION, "train", "--data", str(outfits), "--init-checkpoint", str(base),
                              "--out", str(detector_run), "--cache-dir", str(run / "cache"), "--workers", "0",
                              "--detector-epochs", "30",
                              # then the embedding on the garments' crops, as by default, kept short:
                              "--items-per-batch", "4", "--images-per-item", "2", "--epochs", "3",
                              "--finetune-epochs", "1"], capture_output=True, text=True, timeout=900, check=False,
                             cwd=Path(__file__).parents[2])
    assert trained.returncode == 0, trained.stderr[-2000:]
    return root, outfits, detector_run / "model.pt"


def test_detect_garments_and_search_each_one(outfit_stack_data, postgres_url, tmp_path) -> None:
    root, outfits, checkpoint = outfit_stack_data
    env = {**os.environ, "FASHION_DATA_DIR": str(tmp_path / "var"), "FASHION_DATABASE_URL": postgres_url,
           "FASHION_PORT": "0", "FASHION_GRACE_SECONDS": "5", "FASHION_IMAGE_ROOTS": str(root)}
    with _fashion_up(checkpoint, env, tmp_path) as (proc, state_file):
        published = subprocess.run([*FASHION, "publish", str(root)], env=env, capture_output=True, text=True,
                                   timeout=120, check=False)
        assert published.returncode == 0, published.stderr
        _wait_for(lambda: _count(postgres_url, "select count(*) from products") == OUTFIT_ITEMS, 120,
                  "the catalogue to be indexed", proc)
        bench = load_outfits(outfits)
        photos = [i for i in bench.images if i.domain == "consumer" and len(i.garments) >= 2][:12]
        address = json.loads(state_file.read_text())["grpc"]
        with grpc.insecure_channel(address) as channel:
            search = search_pb2_grpc.SearchServiceStub(channel)
            detect = detection_pb2_grpc.GarmentServiceStub(channel)
            images = [common_pb2.ImageInput(id=p.image, data=bench.path(p).read_bytes()) for p in photos]
            detected = detect.DetectGarments(detection_pb2.DetectGarmentsRequest(images=images), timeout=60)
            assert [r.image_id for r in detected.results] == [p.image for p in photos]
            assert all(r.error == "" for r in detected.results)
            found = 0
            for image, result in zip(images, detected.results, strict=True):
                request = search_pb2.FindSimilarRequest(image=image, top_k=OUTFIT_ITEMS)
                response = search.FindSimilar(request, timeout=60)
                assert len(response.hits) == OUTFIT_ITEMS  # the whole-image results, as before: every product
                # The catalogue's categories are what the model predicted for each product (ingest votes).
                stocked = {TYPE_OF[h.category] for h in response.hits}
                # The same forward pass answers both RPCs: the same garments, in the same order.
                assert [(g.garment.garment_class, round(g.garment.score, 4)) for g in response.garments] == \
                    [(g.garment_class, round(g.score, 4)) for g in result.garments]
                for g in response.garments:
                    found += 1
                    assert g.query_id and g.analysis.category.name
                    assert {TYPE_OF[h.category] for h in g.hits} <= {g.garment.clothes_type}
                    assert bool(g.hits) == (g.garment.clothes_type in stocked)
                    box = g.garment.box
                    assert 0 <= box.x1 < box.x2 <= 1 and 0 <= box.y1 < box.y2 <= 1
            assert found >= len(photos), f"the trained detector found {found} garments in {len(photos)} photos"
            with pytest.raises(grpc.RpcError) as refused:
                search.FindSimilar(search_pb2.FindSimilarRequest(
                    image=images[0], region=common_pb2.Box(x1=0.8, y1=0.1, x2=0.2, y2=0.5)), timeout=30)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "inverted" in refused.value.details()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
