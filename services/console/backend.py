"""The console's only way to the system: gRPC calls to SearchService and AdminService, each with a deadline.

A failed call raises the typed error for its status code (`shared.grpc.errors.error_from_rpc`), whose message
is what the server said; the pages show that message, never a traceback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from fashion.v1 import admin_pb2, admin_pb2_grpc, common_pb2, search_pb2, search_pb2_grpc
from services.admin.server import bearer_metadata
from shared.grpc.client import call_with_deadline, channel
from shared.grpc.errors import error_from_rpc
from shared.grpc.tls import client_credentials

SEARCH, ADMIN = 0, 1


@dataclass(frozen=True)
class SearchForm:
    """The search page's filters, as the form sends them."""

    categories: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    min_price: float | None = None
    max_price: float | None = None
    in_stock_only: bool = False
    top_k: int = 12

    def filters_pb(self) -> search_pb2.Filters:
        return search_pb2.Filters(categories=list(self.categories), attributes=list(self.attributes),
                                  min_price=self.min_price, max_price=self.max_price,
                                  in_stock_only=self.in_stock_only)


@dataclass
class Backend:
    """Stubs on channels to `address()` (SearchService) and `admin_address()` (AdminService; default: the same),
    callables because `fashion up` knows its own port only once it serves."""

    address: Callable[[], str]
    admin_address: Callable[[], str] | None = None
    timeout_s: float = 30.0
    admin_timeout_s: float = 600.0
    _channels: dict[str, grpc.Channel] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _channel(self, address: str) -> grpc.Channel:
        target = dial_address(address)
        with self._lock:
            if target not in self._channels:
                self._channels[target] = channel(target, credentials=client_credentials())
            return self._channels[target]

    def _stub(self, service: int) -> Any:
        if service == SEARCH:
            return search_pb2_grpc.SearchServiceStub(self._channel(self.address()))
        return admin_pb2_grpc.AdminServiceStub(self._channel((self.admin_address or self.address)()))

    def _call(self, service: int, method: str, request: Any, *, token: str | None = None,
              timeout: float | None = None) -> Any:
        stub = self._stub(service)
        metadata = bearer_metadata(token) if token else None
        try:
            return call_with_deadline(getattr(stub, method), request, timeout or self.timeout_s, metadata=metadata)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None

    def close(self) -> None:
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()

    # -- SearchService ----------------------------------------------------------------------------------------
    def find_similar(self, *, image: bytes | None = None, product_id: str | None = None,
                     form: SearchForm | None = None) -> search_pb2.FindSimilarResponse:
        form = form or SearchForm()
        request = search_pb2.FindSimilarRequest(top_k=form.top_k, filters=form.filters_pb())
        if image is not None:
            request.image.CopyFrom(common_pb2.ImageInput(data=image, id="console upload"))
        else:
            request.product_id = product_id or ""
        return self._call(SEARCH, "FindSimilar", request)

    def record_click(self, query_id: str, product_id: str, position: int) -> bool:
        request = search_pb2.RecordClickRequest(query_id=query_id, product_id=product_id, position=position)
        return self._call(SEARCH, "RecordClick", request).accepted

    def list_products(self, query: str, *, limit: int, offset: int) -> search_pb2.ListProductsResponse:
        request = search_pb2.ListProductsRequest(query=query, limit=limit, offset=offset)
        return self._call(SEARCH, "ListProducts", request)

    def image(self, image_id: str, max_px: int) -> bytes:
        return self._call(SEARCH, "GetImage", search_pb2.GetImageRequest(image_id=image_id, max_px=max_px)).jpeg

    # -- AdminService (every call carries the session's admin token) ---------------------------------------
    def list_models(self, token: str) -> Sequence[admin_pb2.ModelVersion]:
        return self._call(ADMIN, "ListModels", admin_pb2.ListModelsRequest(), token=token).models

    def list_runs(self, token: str, limit: int = 20) -> Sequence[admin_pb2.TrainingRun]:
        return self._call(ADMIN, "ListTrainingRuns", admin_pb2.ListTrainingRunsRequest(limit=limit), token=token).runs

    def trigger_retrain(self, token: str, *, reason: str, epochs: int) -> admin_pb2.TriggerRetrainResponse:
        request = admin_pb2.TriggerRetrainRequest(reason=reason, epochs=epochs)
        return self._call(ADMIN, "TriggerRetrain", request, token=token)

    def promote(self, token: str, version: str) -> admin_pb2.ModelVersion:
        return self._call(ADMIN, "PromoteModel", admin_pb2.PromoteModelRequest(version=version), token=token,
                          timeout=self.admin_timeout_s)

    def rollback(self, token: str) -> admin_pb2.ModelVersion:
        return self._call(ADMIN, "Rollback", admin_pb2.RollbackRequest(), token=token, timeout=self.admin_timeout_s)

    def list_dead_letters(self, token: str, limit: int = 20) -> admin_pb2.ListDeadLettersResponse:
        return self._call(ADMIN, "ListDeadLetters", admin_pb2.ListDeadLettersRequest(limit=limit), token=token)


def dial_address(address: str) -> str:
    """Where to connect for a server bound to `address`: a wildcard host means this machine."""
    host, _, port = address.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "[::]", "::", "") else address
