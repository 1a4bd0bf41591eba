"""CLI side of the admin API: `fashion models`, `fashion retrain [--wait]`, `fashion promote`, `fashion rollback`.

Each function calls AdminService with the admin token and a deadline, prints a rich table, and returns the
response. Failures raise the typed error matching the status code (the CLI prints its message).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fashion.v1 import admin_pb2, admin_pb2_grpc
from services.admin.server import bearer_metadata
from shared.errors import FashionError, InvalidInput
from shared.grpc.client import call_with_deadline, channel
from shared.grpc.errors import error_from_rpc
from shared.grpc.tls import client_credentials, warn_if_clear_text_secret

DEFAULT_TIMEOUT_S = 600.0  # a promotion may re-index the catalogue before it answers
TERMINAL_RUN_STATES = frozenset({"promoted", "rejected", "failed"})


def _call(address: str, token: str | None, method: str, request: Any, timeout: float) -> Any:
    if not token:
        raise InvalidInput("expected an admin token: set FASHION_ADMIN_TOKEN (the server's admin token)")
    credentials = client_credentials()
    warn_if_clear_text_secret(address, credentials, "the admin token")
    with channel(address, credentials=credentials) as ch:
        stub = admin_pb2_grpc.AdminServiceStub(ch)
        try:
            return call_with_deadline(getattr(stub, method), request, timeout, metadata=bearer_metadata(token))
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None


def _metrics(metrics: Any) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items())) or "-"


def print_models(models: list[admin_pb2.ModelVersion], console: Console) -> None:
    table = Table(title=f"{len(models)} model versions")
    table.add_column("version")
    table.add_column("state")
    table.add_column("architecture")
    table.add_column("created")
    table.add_column("metrics")
    for model in models:
        state = f"[bold green]{model.state}[/]" if model.serving else model.state
        created = model.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M") if model.HasField("created_at") else "-"
        table.add_row(model.version, state, model.architecture, created, _metrics(model.metrics))
    console.print(table)


def run_state(run: admin_pb2.TrainingRun) -> str:
    """The state to show: "stalled" instead of what the run was doing once its worker fell silent (the server
    judges that against its own threshold; older servers never set the flag)."""
    return "stalled" if run.stalled else run.state


def print_run(run: admin_pb2.TrainingRun, console: Console) -> None:
    table = Table(title=f"training run {run.run_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    state = f"[bold red]stalled[/] (was {run.state})" if run.stalled else run.state
    rows = [("state", state), ("epoch", f"{run.epoch}/{run.epochs}"), ("loss", f"{run.loss:.4f}"),
            ("candidate", run.candidate_version or "-"), ("message", run.message or "-"),
            ("metrics", _metrics(run.metrics))]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def models_cli(address: str, token: str | None, *, timeout: float = 30.0,
               console: Console | None = None) -> list[admin_pb2.ModelVersion]:
    response = _call(address, token, "ListModels", admin_pb2.ListModelsRequest(), timeout)
    print_models(list(response.models), console or Console())
    return list(response.models)


def retrain_cli(address: str, token: str | None, wait: bool, *, reason: str = "", epochs: int = 0,
                min_improvement: float = 0.0, poll_s: float = 2.0, timeout: float = 30.0,
                max_wait_s: float | None = None, console: Console | None = None,
                sleep: Callable[[float], None] = time.sleep,
                ) -> admin_pb2.TrainingRun | admin_pb2.TriggerRetrainResponse:
    """Trigger a run and print its id; with `wait`, follow it (state, epoch, loss, ETA) until it ends."""
    console = console or Console()
    request = admin_pb2.TriggerRetrainRequest(reason=reason, epochs=epochs, min_improvement=min_improvement)
    started = _call(address, token, "TriggerRetrain", request, timeout)
    note = "started" if started.created else "already active (not started again)"
    console.print(f"training run [bold]{started.run_id}[/] {note}")
    if not wait:
        return started
    run = follow_run(address, token, started.run_id, poll_s=poll_s, timeout=timeout, max_wait_s=max_wait_s,
                     console=console, sleep=sleep)
    print_run(run, console)
    return run


def follow_run(address: str, token: str | None, run_id: str, *, poll_s: float = 2.0, timeout: float = 30.0,
               max_wait_s: float | None = None, console: Console | None = None,
               sleep: Callable[[float], None] = time.sleep) -> admin_pb2.TrainingRun:
    """Poll GetTrainingRun with a live progress line until the run reaches a terminal state."""
    console = console or Console()
    deadline = None if max_wait_s is None else time.monotonic() + max_wait_s
    request = admin_pb2.GetTrainingRunRequest(run_id=run_id)
    columns = (TextColumn("[bold]{task.fields[state]:<11}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("epochs  loss {task.fields[loss]}  eta {task.fields[eta]}  {task.fields[message]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("run", total=None, state="queued", loss="-", eta="-", message="")
        while True:
            run = _call(address, token, "GetTrainingRun", request, timeout)
            progress.update(task, total=run.epochs or None, completed=run.epoch, state=run_state(run),
                            loss=f"{run.loss:.4f}" if run.loss else "-",
                            eta=f"{run.eta_seconds:.0f}s" if run.eta_seconds else "-", message=run.message[:60])
            if run.state in TERMINAL_RUN_STATES:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise FashionError(f"run {run_id} is still {run_state(run)} after {max_wait_s:.0f}s; expected it to "
                                   "finish sooner (follow it again with GetTrainingRun)")
            sleep(poll_s)


def promote_cli(address: str, token: str | None, version: str, *, timeout: float = DEFAULT_TIMEOUT_S,
                console: Console | None = None) -> admin_pb2.ModelVersion:
    model = _call(address, token, "PromoteModel", admin_pb2.PromoteModelRequest(version=version), timeout)
    (console or Console()).print(f"model [bold]{model.version}[/] is serving")
    return model


def rollback_cli(address: str, token: str | None, *, timeout: float = DEFAULT_TIMEOUT_S,
                 console: Console | None = None) -> admin_pb2.ModelVersion:
    model = _call(address, token, "Rollback", admin_pb2.RollbackRequest(), timeout)
    (console or Console()).print(f"rolled back: model [bold]{model.version}[/] is serving again")
    return model
