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
    """gRPC stubs on one channel to `address()` (a callable: `fashion up` knows its port only once serving)."""

    address: Callable[[], str]
    timeout_s: float = 30.0
    admin_timeout_s: float = 600.0
    _channel: grpc.Channel | None = field(default=None, init=False, repr=False)
    _target: str | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _stubs(self) -> tuple[search_pb2_grpc.SearchServiceStub, admin_pb2_grpc.AdminServiceStub]:
        target = dial_address(self.address())
        with self._lock:
            if self._channel is None or target != self._target:
                if self._channel is not None:
                    self._channel.close()
                self._channel, self._target = channel(target, credentials=client_credentials()), target
            ch = self._channel
        return search_pb2_grpc.SearchServiceStub(ch), admin_pb2_grpc.AdminServiceStub(ch)

    def _call(self, service: int, method: str, request: Any, *, token: str | None = None,
              timeout: float | None = None) -> Any:
        stub = self._stubs()[service]
        metadata = bearer_metadata(token) if token else None
        try:
            return call_with_deadline(getattr(stub, method), request, timeout or self.timeout_s, metadata=metadata)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = None

    # -- SearchService ----------------------------------------------------------------------------------------
    def find_similar(self, *, image: bytes | None = None, product_id: str | None = None,
                     form: SearchForm = SearchForm()) -> search_pb2.FindSimilarResponse:
        request = search_pb2.FindSimilarRequest(top_k=form.top_k, filters=form.filters_pb())
        if image is not None:
            request.image.CopyFrom(common_pb2.ImageInput(data=image, id="console upload"))
        else:
            request.product_id = product_id or ""
        return self._call(0, "FindSimilar", request)

    def record_click(self, query_id: str, product_id: str, position: int) -> bool:
        request = search_pb2.RecordClickRequest(query_id=query_id, product_id=product_id, position=position)
        return self._call(0, "RecordClick", request).accepted

    def list_products(self, query: str, *, limit: int, offset: int) -> search_pb2.ListProductsResponse:
        return self._call(0, "ListProducts", search_pb2.ListProductsRequest(query=query, limit=limit, offset=offset))

    def image(self, image_id: str, max_px: int) -> bytes:
        return self._call(0, "GetImage", search_pb2.GetImageRequest(image_id=image_id, max_px=max_px)).jpeg

    # -- AdminService (every call carries the session's admin token) ---------------------------------------
    def list_models(self, token: str) -> Sequence[admin_pb2.ModelVersion]:
        return self._call(1, "ListModels", admin_pb2.ListModelsRequest(), token=token).models

    def list_runs(self, token: str, limit: int = 20) -> Sequence[admin_pb2.TrainingRun]:
        return self._call(1, "ListTrainingRuns", admin_pb2.ListTrainingRunsRequest(limit=limit), token=token).runs

    def trigger_retrain(self, token: str, *, reason: str, epochs: int) -> admin_pb2.TriggerRetrainResponse:
        request = admin_pb2.TriggerRetrainRequest(reason=reason, epochs=epochs)
        return self._call(1, "TriggerRetrain", request, token=token)

    def promote(self, token: str, version: str) -> admin_pb2.ModelVersion:
        return self._call(1, "PromoteModel", admin_pb2.PromoteModelRequest(version=version), token=token,
                          timeout=self.admin_timeout_s)

    def rollback(self, token: str) -> admin_pb2.ModelVersion:
        return self._call(1, "Rollback", admin_pb2.RollbackRequest(), token=token, timeout=self.admin_timeout_s)


def dial_address(address: str) -> str:
    """Where to connect for a server bound to `address`: a wildcard host means this machine."""
    host, _, port = address.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "[::]", "::", "") else address
