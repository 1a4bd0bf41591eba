"""Each deployable runs alone through its own `build`: `python -m services.NAME` as a real process, the store
services analysing through a separate model process over gRPC (FASHION_ANALYSIS_ADDRESS), then SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.db.session import create_database_if_missing, drop_database

ROOT = Path(__file__).parents[2]
SERVICE_NAMES = {
    "search": ["fashion.v1.SearchService"],
    "ingest": [],  # a consumer: health and reflection only
    "admin": ["fashion.v1.AdminService"],
}


def _start(name: str, env: dict[str, str], data_dir: Path) -> tuple[subprocess.Popen, dict]:
    log = (data_dir.parent / f"{name}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env={**env, "FASHION_DATA_DIR": str(data_dir)},
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    state_file = data_dir / "stack.json"
    deadline = time.monotonic() + 120
    while not state_file.exists():
        assert proc.poll() is None, f"services.{name} exited with {proc.returncode}: {_log(data_dir, name)}"
        assert time.monotonic() < deadline, f"services.{name} did not start: {_log(data_dir, name)}"
        time.sleep(0.3)
    return proc, json.loads(state_file.read_text())


def _log(data_dir: Path, name: str) -> str:
    return (data_dir.parent / f"{name}.log").read_text()[-3000:]


def _health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                         timeout=5).status


def _stop(proc: subprocess.Popen, data_dir: Path, name: str) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, _log(data_dir, name)
    assert not (data_dir / "stack.json").exists()


@pytest.fixture(scope="module")
def model_process(tiny_checkpoint, tmp_path_factory) -> Iterator[str]:
    """The four model services alone, from a checkpoint, with no database (no registry to follow)."""
    data_dir = tmp_path_factory.mktemp("models") / "var"
    env = {**os.environ, "FASHION_PORT": "0", "FASHION_CHECKPOINT": str(tiny_checkpoint),
           "FASHION_GRACE_SECONDS": "2"}
    env.pop("FASHION_DATABASE_URL", None)
    proc, state = _start("models", env, data_dir)
    try:
        assert state["targets"] == ["landmark", "attributes", "embedding", "analysis"]
        for service in ("fashion.v1.LandmarkService", "fashion.v1.AttributeService", "fashion.v1.EmbeddingService",
                        "fashion.v1.AnalysisService"):
            assert _health(state["grpc"], service) == health_pb2.HealthCheckResponse.SERVING
        yield state["grpc"]
        _stop(proc, data_dir, "models")
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/fashion_builds_{uuid.uuid4().hex[:8]}"
    create_database_if_missing(url)
    yield url
    drop_database(url)


@pytest.mark.parametrize("name", sorted(SERVICE_NAMES))
def test_a_service_runs_alone_against_a_remote_model_service(name, model_process, database, tiny_checkpoint,
                                                            tmp_path) -> None:
    env = {**os.environ, "FASHION_PORT": "0", "FASHION_DATABASE_URL": database, "FASHION_GRACE_SECONDS": "2",
           "FASHION_ANALYSIS_ADDRESS": model_process, "FASHION_CHECKPOINT": str(tiny_checkpoint)}
    data_dir = tmp_path / "var"
    proc, state = _start(name, env, data_dir)
    try:
        assert state["targets"] == [name]
        for service in ["", *SERVICE_NAMES[name]]:
            assert _health(state["grpc"], service) == health_pb2.HealthCheckResponse.SERVING, service
        if name == "search":  # only the named service is hosted here
            with pytest.raises(grpc.RpcError):
                _health(state["grpc"], "fashion.v1.AdminService")
        _stop(proc, data_dir, name)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_process_hands_out_database_sessions_like_a_sessionmaker(tmp_path) -> None:
    """What the demo and the benchmarks use: `with stack.sessions() as session:`."""
    import sqlalchemy as sa

    from services.process import Process, ProcessSettings
    from services.resources import ResourceSettings
    from shared.config import StoreSettings
    from shared.db import sqlite_url

    stores = StoreSettings(data_dir=tmp_path, database_url=sqlite_url(tmp_path / "fashion.db"))
    process = Process(ProcessSettings(resources=ResourceSettings(stores=stores)), {})
    try:
        with process.sessions() as session:
            assert session.execute(sa.text("select count(*) from products")).scalar() == 0
    finally:
        process.resources.stop()
