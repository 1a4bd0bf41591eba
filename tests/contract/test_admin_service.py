"""AdminService through a real in-process gRPC server on port 0, over SQLite, Qdrant Edge and a tiny model.

The admin token is checked on every RPC; a server without a token refuses everything. TriggerRetrain goes
through the production trigger (services.retrain.trigger.Retraining) with a fake enqueue that counts calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from rich.console import Console

from fashion.v1 import admin_pb2, admin_pb2_grpc
from services.admin.client import follow_run, models_cli, print_run, promote_cli, retrain_cli, rollback_cli
from services.admin.core import AdminCore
from services.admin.promoter import Promoter
from services.admin.server import admin_servicers, bearer_metadata
from services.retrain.settings import RetrainSettings
from services.retrain.trigger import Retraining
from shared.db import make_engine, repository, session_factory, sqlite_url, upgrade
from shared.db.models import ModelState, RunState, utcnow
from shared.errors import FashionError, NotFound, Unauthenticated
from shared.grpc.server import create_server
from shared.imaging import ImageIntake
from shared.serving.runtime import ModelRuntime
from shared.vectorstore import open_store

TOKEN = "s3cret-admin-token"
SERVING = "tiny-1"
CANDIDATE = "tiny-2"
TIMEOUT = 30
STALE_S = 300.0


@dataclasses.dataclass
class Env:
    stub: admin_pb2_grpc.AdminServiceStub
    open_stub: admin_pb2_grpc.AdminServiceStub  # a server started without a token
    address: str
    sessions: object
    enqueued: list[str]


@pytest.fixture(scope="module")
def env(tiny_checkpoint: Path, perturbed_checkpoint: Callable[..., Path],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("admin")
    url = sqlite_url(root / "fashion.db")
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    candidate = perturbed_checkpoint(CANDIDATE)
    with sessions.begin() as session:
        repository.register_model_version(session, SERVING, architecture="fashionnet_efficientnet_lite0",
                                          checkpoint_path=str(tiny_checkpoint), embedding_dim=32)
        repository.set_serving(session, SERVING)
        repository.register_model_version(session, CANDIDATE, architecture="fashionnet_efficientnet_lite0",
                                          checkpoint_path=str(candidate), embedding_dim=32,
                                          metrics={"top20": 0.5, "note": "not a number"},
                                          state=ModelState.CANDIDATE)
    runtime = ModelRuntime(engine="eager", max_batch=8, max_wait_ms=2)
    runtime.load(tiny_checkpoint)
    qdrant = open_store(root / "qdrant")
    promoter = Promoter(runtime, sessions, qdrant, intake=ImageIntake(), batch_size=4, preload_wait_s=0)
    enqueued: list[str] = []
    retraining = Retraining(RetrainSettings(retrain_stale_after_s=STALE_S), enqueue=enqueued.append)
    core = AdminCore(sessions, promoter, retraining.trigger, stale_after_s=retraining.stale_after_s)
    server, port = create_server(admin_servicers(core, TOKEN))
    open_server, open_port = create_server(admin_servicers(core, None))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, grpc.insecure_channel(f"127.0.0.1:{open_port}") as och:
            yield Env(admin_pb2_grpc.AdminServiceStub(ch), admin_pb2_grpc.AdminServiceStub(och),
                      f"127.0.0.1:{port}", sessions, enqueued)
    finally:
        server.stop(0)
        open_server.stop(0)
        runtime.close()
        qdrant.close()
        engine.dispose()


CALLS: dict[str, Callable[[admin_pb2_grpc.AdminServiceStub], Callable]] = {
    "TriggerRetrain": lambda s: lambda **kw: s.TriggerRetrain(admin_pb2.TriggerRetrainRequest(reason="x"), **kw),
    "GetTrainingRun": lambda s: lambda **kw: s.GetTrainingRun(admin_pb2.GetTrainingRunRequest(run_id="r"), **kw),
    "ListModels": lambda s: lambda **kw: s.ListModels(admin_pb2.ListModelsRequest(), **kw),
    "ListTrainingRuns": lambda s: lambda **kw: s.ListTrainingRuns(admin_pb2.ListTrainingRunsRequest(), **kw),
    "PromoteModel": lambda s: lambda **kw: s.PromoteModel(admin_pb2.PromoteModelRequest(version=CANDIDATE), **kw),
    "Rollback": lambda s: lambda **kw: s.Rollback(admin_pb2.RollbackRequest(), **kw),
    "ListDeadLetters": lambda s: lambda **kw: s.ListDeadLetters(admin_pb2.ListDeadLettersRequest(), **kw),
}
BAD_METADATA = {
    "none": None,
    "wrong-token": bearer_metadata("not-the-token"),
    "token-prefix": bearer_metadata(TOKEN[:-1]),
    "no-scheme": (("authorization", TOKEN),),
    "basic-scheme": (("authorization", f"Basic {TOKEN}"),),
    "twice": (*bearer_metadata(TOKEN), *bearer_metadata("other")),
}


def _fails(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


@pytest.mark.parametrize("method", CALLS)
@pytest.mark.parametrize("metadata", BAD_METADATA.values(), ids=BAD_METADATA.keys())
def test_every_rpc_needs_the_admin_token(env: Env, method: str, metadata) -> None:
    err = _fails(lambda: CALLS[method](env.stub)(metadata=metadata, timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details() == "expected metadata authorization: Bearer <admin token>"


@pytest.mark.parametrize("method", CALLS)
def test_a_server_without_a_token_refuses_every_call(env: Env, method: str) -> None:
    err = _fails(lambda: CALLS[method](env.open_stub)(metadata=bearer_metadata(TOKEN), timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "admin API is disabled" in err.details()
    err = _fails(lambda: CALLS[method](env.open_stub)(metadata=bearer_metadata(""), timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_list_models(env: Env) -> None:
    response = env.stub.ListModels(admin_pb2.ListModelsRequest(), metadata=bearer_metadata(TOKEN), timeout=TIMEOUT)
    by_version = {m.version: m for m in response.models}
    assert set(by_version) == {SERVING, CANDIDATE}
    assert by_version[SERVING].serving and by_version[SERVING].state == "serving"
    assert not by_version[CANDIDATE].serving and by_version[CANDIDATE].state == "candidate"
    assert dict(by_version[CANDIDATE].metrics) == {"top20": 0.5}  # non-numeric metrics are left out
    assert by_version[CANDIDATE].architecture == "fashionnet_efficientnet_lite0"
    assert by_version[CANDIDATE].HasField("created_at")


def test_models_cli_prints_a_table(env: Env) -> None:
    console = Console(record=True, width=160)
    models = models_cli(env.address, TOKEN, console=console)
    text = console.export_text()
    assert len(models) == 2 and SERVING in text and CANDIDATE in text and "top20 0.500" in text
    with pytest.raises(Unauthenticated, match="expected metadata authorization"):
        models_cli(env.address, "wrong", console=console)


def test_get_training_run_unknown_is_not_found(env: Env) -> None:
    err = _fails(lambda: env.stub.GetTrainingRun(admin_pb2.GetTrainingRunRequest(run_id="no-such-run"),
                                                 metadata=bearer_metadata(TOKEN), timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "unknown run_id 'no-such-run'" in err.details()
    err = _fails(lambda: env.stub.GetTrainingRun(admin_pb2.GetTrainingRunRequest(),
                                                 metadata=bearer_metadata(TOKEN), timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "expected a run_id" in err.details()


def test_promote_unknown_version_is_not_found(env: Env) -> None:
    err = _fails(lambda: env.stub.PromoteModel(admin_pb2.PromoteModelRequest(version="nope"),
                                               metadata=bearer_metadata(TOKEN), timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "unknown model version 'nope'" in err.details()
    err = _fails(lambda: env.stub.PromoteModel(admin_pb2.PromoteModelRequest(), metadata=bearer_metadata(TOKEN),
                                               timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "expected a model version" in err.details()


def test_rollback_without_a_previous_version_is_failed_precondition(env: Env) -> None:
    err = _fails(lambda: env.stub.Rollback(admin_pb2.RollbackRequest(), metadata=bearer_metadata(TOKEN),
                                           timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "nothing to roll back to" in err.details()


def test_list_dead_letters_without_a_broker_is_unavailable(env: Env) -> None:
    """This server has no dead-letter reader (tests/integration/test_dead_letters.py reads a real broker)."""
    err = _fails(lambda: env.stub.ListDeadLetters(admin_pb2.ListDeadLettersRequest(),
                                                  metadata=bearer_metadata(TOKEN), timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "expected a Kafka broker" in err.details()


def test_trigger_retrain_twice_gives_one_run(env: Env) -> None:
    request = admin_pb2.TriggerRetrainRequest(reason="more clicks", epochs=2, min_improvement=0.01)
    first = env.stub.TriggerRetrain(request, metadata=bearer_metadata(TOKEN), timeout=TIMEOUT)
    second = env.stub.TriggerRetrain(request, metadata=bearer_metadata(TOKEN), timeout=TIMEOUT)
    assert first.created and not second.created and first.run_id == second.run_id
    assert env.enqueued == [first.run_id]
    run = env.stub.GetTrainingRun(admin_pb2.GetTrainingRunRequest(run_id=first.run_id),
                                  metadata=bearer_metadata(TOKEN), timeout=TIMEOUT)
    assert (run.run_id, run.state, run.epochs, run.epoch) == (first.run_id, "queued", 2, 0)
    assert run.HasField("created_at") and run.candidate_version == ""
    with env.sessions() as session:
        params = repository.get_run(session, first.run_id).config
    assert params["epochs"] == 2 and params["min_improvement"] == pytest.approx(0.01)
    runs = env.stub.ListTrainingRuns(admin_pb2.ListTrainingRunsRequest(limit=5), metadata=bearer_metadata(TOKEN),
                                     timeout=TIMEOUT).runs
    assert runs[0].run_id == first.run_id and runs[0].state == "queued" and len(runs) <= 5
    err = _fails(lambda: env.stub.ListTrainingRuns(admin_pb2.ListTrainingRunsRequest(limit=-1),
                                                   metadata=bearer_metadata(TOKEN), timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(("request_", "message"), [
    (admin_pb2.TriggerRetrainRequest(epochs=-1), "expected epochs >= 0"),
    (admin_pb2.TriggerRetrainRequest(min_improvement=-0.5), "expected min_improvement >= 0"),
])
def test_trigger_retrain_rejects_bad_parameters(env: Env, request_, message: str) -> None:
    err = _fails(lambda: env.stub.TriggerRetrain(request_, metadata=bearer_metadata(TOKEN), timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.details()


def test_retrain_cli_follows_the_run_until_it_ends(env: Env) -> None:
    console = Console(record=True, width=160)
    started = retrain_cli(env.address, TOKEN, wait=False, console=console)
    assert f"training run {started.run_id}" in console.export_text()
    polls: list[float] = []

    def progress_then_finish(seconds: float) -> None:  # stands in for time.sleep between polls
        polls.append(seconds)
        with env.sessions.begin() as session:
            if len(polls) == 1:
                repository.move_run(session, started.run_id, RunState.TRAINING, epoch=1, epochs=2, loss=0.25,
                                    eta_seconds=30.0, message="epoch 1/2")
            else:
                repository.move_run(session, started.run_id, RunState.EVALUATING, epoch=2, loss=0.2)
                repository.move_run(session, started.run_id, RunState.REJECTED,
                                    metrics={"top20": 0.4, "serving_top20": 0.5}, message="not better")

    run = retrain_cli(env.address, TOKEN, wait=True, poll_s=0.01, console=console, sleep=progress_then_finish)
    text = console.export_text()
    assert (run.run_id, run.state, run.epoch, run.epochs) == (started.run_id, "rejected", 2, 2) and len(polls) == 2
    assert dict(run.metrics) == pytest.approx({"top20": 0.4, "serving_top20": 0.5})
    assert "rejected" in text and "not better" in text and "serving_top20 0.500" in text


def test_a_run_whose_worker_fell_silent_is_shown_stalled(env: Env) -> None:
    with env.sessions.begin() as session:
        run, _ = repository.create_or_get_active_run(session, "stalled-test", epochs=4)
        repository.move_run(session, run.run_id, RunState.TRAINING, epoch=1, heartbeat=True)
        run_id = run.run_id
    get = admin_pb2.GetTrainingRunRequest(run_id=run_id)
    alive = env.stub.GetTrainingRun(get, metadata=bearer_metadata(TOKEN), timeout=TIMEOUT)
    assert (alive.state, alive.stalled, alive.message) == ("training", False, "") and alive.HasField("heartbeat_at")
    with env.sessions.begin() as session:  # its worker's pod was deleted 10 minutes ago
        repository.get_run(session, run_id).heartbeat_at = utcnow() - timedelta(minutes=10)

    stalled = env.stub.GetTrainingRun(get, metadata=bearer_metadata(TOKEN), timeout=TIMEOUT)
    assert (stalled.state, stalled.stalled) == ("training", True)  # what it was doing; no new state
    assert stalled.message.startswith("stalled: no heartbeat from a retrain worker for 6")
    console = Console(record=True, width=160)
    with pytest.raises(FashionError, match=f"run {run_id} is still stalled after 0s"):
        follow_run(env.address, TOKEN, run_id, max_wait_s=0, console=console, sleep=lambda _: None)
    print_run(stalled, console)
    text = console.export_text()
    assert "stalled " in text and "stalled (was training)" in text
    with env.sessions.begin() as session:
        repository.move_run(session, run_id, RunState.FAILED, message="ended by the test")


def test_run_states_are_spelled_as_the_api_documents() -> None:
    """admin.proto lists the run states; the database stores exactly those words, so the server maps nothing."""
    import re

    proto = (Path(__file__).resolve().parents[2] / "protos/fashion/v1/admin.proto").read_text()
    message = proto[proto.index("message TrainingRun {"):]
    documented = re.search(r"// Lower-case state: (.*)\n\s*string state = 2;", message)[1]
    assert re.findall(r'"([a-z]+)"', documented) == [s.value for s in RunState]


def test_promote_and_rollback_cli_report_errors(env: Env) -> None:
    console = Console(record=True, width=160)
    with pytest.raises(NotFound, match="unknown model version 'nope'"):
        promote_cli(env.address, TOKEN, "nope", console=console)
    with pytest.raises(FashionError, match="nothing to roll back to"):
        rollback_cli(env.address, TOKEN, console=console)
