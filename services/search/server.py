"""SearchService over gRPC: translate messages to and from `SearchCore`; typed errors map to codes on their own.

Request size is bounded by the server's max message size (RESOURCE_EXHAUSTED before this code runs), and the
image by the core's ImageIntake (which also fetches a uri query within the call's deadline).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from fashion.v1 import common_pb2, search_pb2, search_pb2_grpc
from services.search.core import DEFAULT_ANALYZE_TIMEOUT_S, SearchCore, SearchHit, SearchResult
from shared.serving.convert import analysis_pb, garment_pb, model_info
from shared.serving.inputs import image_source
from shared.vectorstore import SearchFilters

DEFAULT_TOP_K = 10


def filters_from_pb(filters: search_pb2.Filters) -> SearchFilters:
    return SearchFilters(
        categories=tuple(filters.categories),
        attributes_all=tuple(filters.attributes),
        min_price=filters.min_price if filters.HasField("min_price") else None,
        max_price=filters.max_price if filters.HasField("max_price") else None,
        in_stock_only=filters.in_stock_only,
    )


def hit_pb(hit: SearchHit) -> search_pb2.SearchHit:
    return search_pb2.SearchHit(
        product_id=hit.product_id, image_id=hit.image_id, score=hit.score, position=hit.position, title=hit.title,
        brand=hit.brand or "", price=hit.price or 0.0, currency=hit.currency or "", in_stock=hit.in_stock,
        category=hit.category or "", attributes=list(hit.attributes), image_uri=hit.image_uri or "")


def response_pb(result: SearchResult) -> search_pb2.FindSimilarResponse:
    response = search_pb2.FindSimilarResponse(
        query_id=result.query_id, hits=[hit_pb(h) for h in result.hits],
        model=model_info(result.model_metadata) if result.model_metadata is not None
        else common_pb2.ModelInfo(version=result.model_version))
    if result.query_analysis is not None:
        response.query_analysis.CopyFrom(analysis_pb(result.query_analysis))
    for g in result.garments:
        response.garments.append(search_pb2.GarmentResult(
            garment=garment_pb(g.garment), analysis=analysis_pb(g.analysis), hits=[hit_pb(h) for h in g.hits],
            query_id=g.query_id))
    return response


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, core: SearchCore, *, default_top_k: int = DEFAULT_TOP_K) -> None:
        if not 1 <= default_top_k <= core.max_top_k:
            raise ValueError(f"expected default_top_k between 1 and {core.max_top_k}, got {default_top_k}")
        self.core = core
        self.default_top_k = default_top_k

    def FindSimilar(self, request, context):  # noqa: N802 (gRPC method name)
        kind = request.WhichOneof("query")
        result = self.core.find_similar(
            image=image_source(request.image) if kind == "image" else None,
            product_id=request.product_id if kind == "product_id" else None,
            top_k=request.top_k or self.default_top_k,  # proto3: 0 is "not set"
            filters=filters_from_pb(request.filters),
            timeout=_time_left(context),
            region=(request.region.x1, request.region.y1, request.region.x2, request.region.y2)
            if request.HasField("region") else None,
        )
        return response_pb(result)

    def RecordClick(self, request, context):  # noqa: N802
        accepted = self.core.record_click(request.query_id, request.product_id, request.position)
        return search_pb2.RecordClickResponse(accepted=accepted)


def _time_left(context: grpc.ServicerContext | None) -> float:
    remaining = context.time_remaining() if context is not None else None
    return DEFAULT_ANALYZE_TIMEOUT_S if remaining is None else max(0.001, min(remaining, DEFAULT_ANALYZE_TIMEOUT_S))


Registration = tuple[Callable, object]


def search_servicers(core: SearchCore, *, default_top_k: int = DEFAULT_TOP_K) -> list[Registration]:
    """(add_fn, servicer) pairs for `shared.grpc.create_server`."""
    return [(search_pb2_grpc.add_SearchServiceServicer_to_server, SearchServicer(core, default_top_k=default_top_k))]
