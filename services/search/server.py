"""SearchService over gRPC: translate messages to and from `SearchCore`; typed errors map to codes on their own.

Request size is bounded by the server's max message size (RESOURCE_EXHAUSTED before this code runs), and the
image by the core's ImageIntake (which also fetches a uri query within the call's deadline).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from fashion.v1 import common_pb2, search_pb2, search_pb2_grpc
from services.search.catalogue import CatalogueBrowser, CatalogueProductInfo, StoredPrediction
from services.search.core import DEFAULT_ANALYZE_TIMEOUT_S, SearchCore, SearchHit, SearchResult
from shared.errors import Unavailable
from shared.serving.convert import VISIBILITY_TO_PROTO, analysis_pb, garment_pb, model_info
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


def stored_analysis_pb(prediction: StoredPrediction) -> common_pb2.ImageAnalysis:
    """A prediction as stored at indexing time, in the shape FindSimilar reports a query's analysis."""
    attributes = sorted(prediction.attributes.items(), key=lambda item: -item[1])
    category = common_pb2.ScoredLabel(name=prediction.category or "", group="category",
                                      score=prediction.category_score or 0.0)
    return common_pb2.ImageAnalysis(
        landmarks=[common_pb2.Landmark(name=lm["name"], x=lm["x"], y=lm["y"],
                                       visibility=VISIBILITY_TO_PROTO.get(int(lm["visibility"]), 0))
                   for lm in prediction.landmarks],
        category=category, categories=[category],
        attributes=[common_pb2.ScoredLabel(name=name, score=score) for name, score in attributes])


def product_pb(product: CatalogueProductInfo) -> search_pb2.CatalogProduct:
    return search_pb2.CatalogProduct(
        product_id=product.product_id, title=product.title, brand=product.brand or "", price=product.price or 0.0,
        currency=product.currency or "", in_stock=product.in_stock, category=product.category or "",
        attributes=list(product.attributes),
        images=[search_pb2.CatalogImage(image_id=i.image_id, domain=i.domain,
                                        prediction=stored_analysis_pb(i.prediction) if i.prediction else None)
                for i in product.images])


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    """`catalogue`: ListProducts and GetImage (None: they answer UNAVAILABLE)."""

    def __init__(self, core: SearchCore, *, default_top_k: int = DEFAULT_TOP_K,
                 catalogue: CatalogueBrowser | None = None) -> None:
        if not 1 <= default_top_k <= core.max_top_k:
            raise ValueError(f"expected default_top_k between 1 and {core.max_top_k}, got {default_top_k}")
        self.core = core
        self.default_top_k = default_top_k
        self.catalogue = catalogue

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

    def ListProducts(self, request, context):  # noqa: N802
        page = self._catalogue().list_products(request.query, limit=request.limit, offset=request.offset)
        return search_pb2.ListProductsResponse(products=[product_pb(p) for p in page.products], total=page.total,
                                               model_version=page.model_version)

    def GetImage(self, request, context):  # noqa: N802
        jpeg = self._catalogue().thumbnail(request.image_id, request.max_px)
        return search_pb2.GetImageResponse(image_id=request.image_id, jpeg=jpeg)

    def _catalogue(self) -> CatalogueBrowser:
        if self.catalogue is None:
            raise Unavailable("catalogue browsing is not served by this process")
        return self.catalogue


def _time_left(context: grpc.ServicerContext | None) -> float:
    remaining = context.time_remaining() if context is not None else None
    return DEFAULT_ANALYZE_TIMEOUT_S if remaining is None else max(0.001, min(remaining, DEFAULT_ANALYZE_TIMEOUT_S))


Registration = tuple[Callable, object]


def search_servicers(core: SearchCore, *, default_top_k: int = DEFAULT_TOP_K,
                     catalogue: CatalogueBrowser | None = None) -> list[Registration]:
    """(add_fn, servicer) pairs for `shared.grpc.create_server`."""
    return [(search_pb2_grpc.add_SearchServiceServicer_to_server,
             SearchServicer(core, default_top_k=default_top_k, catalogue=catalogue))]
