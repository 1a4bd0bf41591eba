"""AdminService over gRPC: check the admin token, translate messages to and from `AdminCore`.

Every RPC needs the metadata `authorization: Bearer <admin token>`, compared in constant time. With no
token configured the service refuses every call: admin is never open by default. Admin rights exist only
here; storefront services (search) have no admin RPCs and never look at this token.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import timestamp_pb2

from fashion.v1 import admin_pb2, admin_pb2_grpc
from services.admin.core import AdminCore, ModelInfo, RunInfo
from shared.errors import Unauthenticated

if TYPE_CHECKING:
    from shared.messaging.dlq import DeadLetter

AUTH_METADATA = "authorization"
EXPECTED = "expected metadata authorization: Bearer <admin token>"
DISABLED = ("the admin API is disabled: expected FASHION_ADMIN_TOKEN to be set on the server, and calls to carry "
            "metadata authorization: Bearer <admin token>")


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying `token`, for clients."""
    return ((AUTH_METADATA, f"Bearer {token}"),)


def check_token(metadata: Any, token: str | None) -> None:
    """Raise Unauthenticated unless `metadata` carries `Bearer <token>` (constant-time comparison)."""
    if not token:
        raise Unauthenticated(DISABLED)
    values = [value for key, value in (metadata or ()) if key.lower() == AUTH_METADATA]
    if len(values) != 1 or not isinstance(values[0], str):
        raise Unauthenticated(EXPECTED)
    scheme, _, given = values[0].strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthenticated(EXPECTED)


def _admin_only(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(self: AdminServicer, request: Any, context: grpc.ServicerContext) -> Any:
        check_token(context.invocation_metadata(), self._token)
        return method(self, request, context)

    return guarded


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def run_pb(run: RunInfo) -> admin_pb2.TrainingRun:
    return admin_pb2.TrainingRun(
        run_id=run.run_id, state=run.state, epoch=run.epoch, epochs=run.epochs,
        loss=run.loss or 0.0, eta_seconds=run.eta_seconds or 0.0, message=run.message, metrics=run.metrics,
        candidate_version=run.candidate_version or "", created_at=_timestamp(run.created_at),
        updated_at=_timestamp(run.updated_at), stalled=run.stalled, heartbeat_at=_timestamp(run.heartbeat_at))


def model_pb(model: ModelInfo) -> admin_pb2.ModelVersion:
    return admin_pb2.ModelVersion(version=model.version, architecture=model.architecture, state=model.state,
                                  metrics=model.metrics, created_at=_timestamp(model.created_at),
                                  serving=model.serving)


def dead_letter_pb(letter: DeadLetter) -> admin_pb2.DeadLetter:
    when = None
    if letter.dead_lettered_ms >= 0:
        when = timestamp_pb2.Timestamp()
        when.FromMilliseconds(letter.dead_lettered_ms)
    return admin_pb2.DeadLetter(
        dlq_topic=letter.dlq_topic, source_topic=letter.source_topic, source_partition=letter.source_partition,
        source_offset=letter.source_offset, error_type=letter.error_type, reason=letter.reason,
        dead_lettered_at=when, key=letter.key, value_truncated=letter.value_truncated)


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, core: AdminCore, token: str | None) -> None:
        self.core = core
        self._token = token or None

    @_admin_only
    def TriggerRetrain(self, request, context):  # noqa: N802 (gRPC method name)
        run_id, created = self.core.trigger_retrain({"reason": request.reason, "epochs": request.epochs,
                                                     "min_improvement": request.min_improvement})
        return admin_pb2.TriggerRetrainResponse(run_id=run_id, created=created)

    @_admin_only
    def GetTrainingRun(self, request, context):  # noqa: N802
        return run_pb(self.core.get_run(request.run_id))

    @_admin_only
    def ListTrainingRuns(self, request, context):  # noqa: N802
        return admin_pb2.ListTrainingRunsResponse(runs=[run_pb(r) for r in self.core.list_runs(request.limit)])

    @_admin_only
    def ListModels(self, request, context):  # noqa: N802
        return admin_pb2.ListModelsResponse(models=[model_pb(m) for m in self.core.list_models()])

    @_admin_only
    def PromoteModel(self, request, context):  # noqa: N802
        return model_pb(self.core.promote_model(request.version))

    @_admin_only
    def Rollback(self, request, context):  # noqa: N802
        return model_pb(self.core.rollback())

    @_admin_only
    def ListDeadLetters(self, request, context):  # noqa: N802
        found = self.core.list_dead_letters(request.topic, request.limit)
        return admin_pb2.ListDeadLettersResponse(dead_letters=[dead_letter_pb(d) for d in found.records],
                                                 missing_topics=found.missing_topics)


Registration = tuple[Callable, object]


def admin_servicers(core: AdminCore, token: str | None) -> list[Registration]:
    """(add_fn, servicer) pairs for `shared.grpc.create_server`."""
    return [(admin_pb2_grpc.add_AdminServiceServicer_to_server, AdminServicer(core, token))]
