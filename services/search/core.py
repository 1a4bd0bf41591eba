"""Search logic: FindSimilar and RecordClick as plain code over injected stores (no gRPC, no Kafka).

`SearchCore` is what `server.py` exposes over gRPC. It reads the serving model version from the vector store's
alias once per query and uses that version for everything that query does (embedding, vector search, the
log), so a promotion swapping the alias or the analyzer's default mid-request cannot mix two models'
vectors. Clicks are validated here, synchronously, and handed to a `ClickSink` as plain `Click`s (the Kafka
producer of clicks.py in production; click_writer.py stores them from the topic). The query log (photo,
impressions) is written off the request path by `QueryLog` (see query_log.py).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from prometheus_client import Counter
from sqlalchemy.orm import Session, sessionmaker

from services.search.garments import GarmentSearch, crop, garment_filters, jpeg
from services.search.query_log import QueryLog
from shared.db import repository
from shared.db.repository import QueryLogEntry
from shared.detection.crop import validate_box
from shared.errors import FashionError, InvalidInput, NotFound, Unavailable
from shared.fashionnet.checkpoint import ModelMetadata
from shared.imaging import ImageIntake, ImageSource, deadline_after
from shared.serving.analyzer import Analyzer, analyze_pinned
from shared.serving.runtime import Analysis
from shared.vectorstore import MAX_TOP_K, Hit, SearchFilters, VectorStore
from shared.vectorstore.payload import ProductPayload

log = logging.getLogger(__name__)

DEFAULT_MAX_TOP_K = 100
DEFAULT_ANALYZE_TIMEOUT_S = 60.0
_CLICK_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://fashionnet.local/search/clicks")

SEARCHES = Counter("fashion_search_queries_total", "FindSimilar queries answered.", ["kind"])


@dataclass(frozen=True, slots=True)
class Click:
    """A shopper's click on a result, validated against the query that showed it."""

    click_id: str  # derived from query and product (`click_id`), so a repeated click is one click
    query_id: str
    product_id: str
    position: int  # 0-based, as FindSimilar returned it
    clicked_at: datetime | None = None


class ClickSink(Protocol):
    def __call__(self, click: Click) -> None:
        """Keep the click durably, or raise (Unavailable): RecordClick answers `accepted` once this returns."""


class CatalogueNotIndexed(FashionError):
    """The serving alias points nowhere yet. Not one of the typed codes, so it maps to FAILED_PRECONDITION:
    retrying will not help until a catalogue has been indexed and promoted."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One product in a result list, as its best image's payload shows it. `position` is 0-based (search.proto)."""

    product_id: str
    image_id: str
    score: float
    position: int
    title: str
    brand: str | None
    price: float | None
    currency: str | None
    in_stock: bool
    category: str | None
    attributes: tuple[str, ...]
    image_uri: str | None


@dataclass(frozen=True, slots=True)
class SearchResult:
    query_id: str
    hits: list[SearchHit]
    query_analysis: Analysis | None  # None for a query by product id (no photo was analysed)
    model_version: str
    model_metadata: ModelMetadata | None  # None when a product query ran on a version this process has not loaded
    garments: tuple[GarmentSearch, ...] = ()  # one per detected garment, best detection first


def click_id(query_id: str, product_id: str) -> str:
    """Deterministic id of a click: a shopper clicking the same result twice (or a replay) is one click."""
    return str(uuid.uuid5(_CLICK_NAMESPACE, f"{query_id}\x1f{product_id}"))


def validate_filters(filters: SearchFilters | None) -> SearchFilters:
    """Filters with sane values, or InvalidInput saying what was expected."""
    filters = filters or SearchFilters()
    for name in ("min_price", "max_price"):
        value = getattr(filters, name)
        if value is not None and (not math.isfinite(value) or value < 0):
            raise InvalidInput(f"expected {name} to be a finite number >= 0, got {value}")
    if filters.min_price is not None and filters.max_price is not None and filters.min_price > filters.max_price:
        raise InvalidInput(f"expected min_price <= max_price, got {filters.min_price} > {filters.max_price}")
    for name in ("categories", "attributes_all"):
        if any(not isinstance(v, str) or not v.strip() for v in getattr(filters, name)):
            raise InvalidInput(f"expected non-empty strings in filter {name}, got {list(getattr(filters, name))}")
    return filters


class SearchCore:
    """FindSimilar and RecordClick over an analyzer, a session factory, the vector store and a click sink."""

    def __init__(
        self,
        analyzer: Analyzer,
        session_factory: sessionmaker[Session],
        store: VectorStore,
        intake: ImageIntake,
        *,
        click_sink: ClickSink,
        max_top_k: int = DEFAULT_MAX_TOP_K,
        query_log: QueryLog | None = None,
    ) -> None:
        if not 1 <= max_top_k <= MAX_TOP_K:
            raise ValueError(f"expected max_top_k between 1 and {MAX_TOP_K}, got {max_top_k}")
        self.analyzer = analyzer
        self.sessions = session_factory
        self.store = store
        self.intake = intake
        self.click_sink = click_sink
        self.max_top_k = max_top_k
        self.query_log = query_log or QueryLog(session_factory)

    def close(self) -> None:
        """Store every query answered so far (the log is written in the background); call after the server stops."""
        self.query_log.close()

    # -- FindSimilar ---------------------------------------------------------------------------------------

    def find_similar(
        self,
        *,
        image: ImageSource | None,
        product_id: str | None,
        top_k: int,
        filters: SearchFilters | None = None,
        timeout: float | None = DEFAULT_ANALYZE_TIMEOUT_S,
        region: tuple[float, float, float, float] | None = None,
    ) -> SearchResult:
        """Rank catalogue products like a photo or like an indexed product; log the query and what it showed.

        `timeout`: what is left of the caller's deadline; reading the photo (a uri is fetched) and embedding it
        both fit in it. A photo's detected garments are searched one by one too (`SearchResult.garments`);
        `region` (fractions of the image) searches just that part of the photo instead, with no detection.
        """
        if (image is None) == (product_id is None):
            got = "both" if image is not None else "neither"
            raise InvalidInput(f"expected exactly one query: an image or a product_id, got {got}")
        if product_id is not None and not product_id.strip():
            raise InvalidInput("expected a non-empty product_id")
        if not 1 <= top_k <= self.max_top_k:
            raise InvalidInput(f"expected top_k between 1 and {self.max_top_k}, got {top_k}")
        filters = validate_filters(filters)
        if region is not None:
            if image is None:
                raise InvalidInput("expected an image query with a region, got a product_id")
            region = validate_box(region)
        photo = (self.intake.load(image, deadline=deadline_after(timeout), name="query image")
                 if image is not None else None)

        version = self.store.alias_target()
        if version is None:
            raise CatalogueNotIndexed(
                f"no catalogue indexed yet: expected the {self.store.serving_alias!r} alias to point at an indexed "
                "model version (publish a catalogue and let ingestion finish first)")
        metadata = self._metadata(version, required=photo is not None)
        analysis: Analysis | None = None
        garments: tuple[GarmentSearch, ...] = ()
        if photo is not None:
            query_image = crop(photo.image, region) if region is not None else photo.image
            analysis = self._embed(query_image, version, timeout)
            vector = analysis.embedding
            if region is None:
                garments = self._garments(photo.image, analysis, version, metadata, top_k, filters, timeout)
        else:
            assert product_id is not None
            vector = self._product_vector(version, product_id)

        hits = self._ranked(version, vector, top_k, filters, source_product_id=product_id)
        query_id = str(uuid.uuid4())
        self.query_log.submit(QueryLogEntry(query_id, version, top_k, hits,
                                            query_image=photo.raw if photo is not None else None,
                                            source_product_id=product_id, filters=_filters_log(filters),
                                            created_at=datetime.now(UTC)))
        SEARCHES.labels("image" if photo is not None else "product").inc()
        return SearchResult(query_id, hits, analysis, version, metadata, garments)

    def _garments(self, image: Any, analysis: Analysis, version: str, metadata: ModelMetadata | None, top_k: int,
                  filters: SearchFilters, timeout: float | None) -> tuple[GarmentSearch, ...]:
        """Every detected garment's crop, analysed in one batch (the runtime's batcher groups them with other
        callers' images), then searched within its clothes type; each gets its own logged query."""
        if not analysis.garments:
            return ()
        crops = [crop(image, g.box) for g in analysis.garments]
        analyses = analyze_pinned(self.analyzer, crops, version, timeout=timeout)
        out = []
        for garment, picture, found in zip(analysis.garments, crops, analyses, strict=True):
            narrowed = garment_filters(filters, garment.garment_class, metadata)
            hits = self._ranked(version, found.embedding, top_k, narrowed, source_product_id=None)
            query_id = str(uuid.uuid4())
            self.query_log.submit(QueryLogEntry(query_id, version, top_k, hits, query_image=jpeg(picture),
                                                filters={**_filters_log(narrowed), "garment": list(garment.box)},
                                                created_at=datetime.now(UTC)))
            out.append(GarmentSearch(garment, found, hits, query_id))
        return tuple(out)

    def _metadata(self, version: str, *, required: bool) -> ModelMetadata | None:
        try:
            return self.analyzer.get(version).metadata
        except NotFound:
            if not required:
                return None
            raise Unavailable(
                f"the catalogue is indexed with model {version!r}, which this server has not loaded: expected it "
                "to be loaded before the alias was switched; retry shortly") from None

    def _embed(self, image: Any, version: str, timeout: float | None) -> Analysis:
        # Pinned: the analyzer's default may already be a newer, unindexed model.
        (analysis,) = analyze_pinned(self.analyzer, [image], version, timeout=timeout)
        return analysis

    def _product_vector(self, version: str, product_id: str) -> np.ndarray:
        try:
            return self.store.get_vector(version, product_id)
        except NotFound:
            raise NotFound(f"unknown product_id {product_id!r}: expected the id of a product indexed by model "
                           f"{version!r}") from None

    def _search(self, version: str, vector: np.ndarray, k: int, filters: SearchFilters,
                exclude: str | None) -> list[Hit]:
        try:
            return self.store.search(version, vector, k, filters=filters, exclude_product_id=exclude)
        except NotFound:  # the collection went away between reading the alias and searching it
            raise Unavailable(f"the collection of model {version!r} is no longer available; retry") from None

    def _ranked(self, version: str, vector: np.ndarray, top_k: int, filters: SearchFilters, *,
                source_product_id: str | None) -> list[SearchHit]:
        """The vector store's top products, shown from their points' payload: no database read.

        The payload is the search read model: ingestion writes it (title, price, stock, ...) before the
        database, re-indexing copies it from the database and catches up the tail, and a deleted product's
        points are removed from every collection. So filters run in the store, and reading Postgres here would
        only repeat what the payload says (it was a sixth of a FindSimilar call, profiled).
        """
        raw = self._search(version, vector, top_k, filters, source_product_id)
        return [_search_hit(hit, position) for position, hit in enumerate(raw)]

    # -- RecordClick ---------------------------------------------------------------------------------------

    def _shown_positions(self, query_id: str, product_id: str) -> list[int]:
        with self.sessions() as session:
            repository.validate_click(session, query_id, product_id)
            return [i.position for i in repository.query_impressions(session, query_id) if i.product_id == product_id]

    def record_click(self, query_id: str, product_id: str, position: int) -> bool:
        """Validate a click against the logged query now, then hand it to the sink (which must not lose it)."""
        if not query_id or not product_id:
            raise InvalidInput("expected a query_id (from FindSimilar) and a product_id, got an empty one")
        if position < 0:
            raise InvalidInput(f"expected position >= 0 (0-based, as FindSimilar returned it), got {position}")
        if not self.query_log.flush(query_id):  # a click on a query still queued for the log waits for it
            raise Unavailable(f"query_id {query_id!r} is not stored yet: the search log is behind; retry shortly")
        try:
            shown = self._shown_positions(query_id, product_id)
        except NotFound:
            # Another replica may have answered the query and still hold it in its log queue (at most one
            # linger): look once more after that long before calling the id unknown.
            time.sleep(2 * self.query_log.linger_s)
            shown = self._shown_positions(query_id, product_id)
        if position not in shown:
            raise InvalidInput(f"product_id {product_id!r} was shown at position {shown[0]} for query_id "
                               f"{query_id!r}, got position {position}")
        self.click_sink(Click(click_id(query_id, product_id), query_id, product_id, position, datetime.now(UTC)))
        return True


def _search_hit(hit: Hit, position: int) -> SearchHit:
    shown = ProductPayload.from_dict(hit.payload)
    return SearchHit(
        product_id=hit.product_id, image_id=hit.image_id, score=hit.score, position=position, title=shown.title,
        brand=shown.brand, price=shown.price, currency=shown.currency, in_stock=shown.in_stock,
        category=shown.category, attributes=shown.attributes, image_uri=shown.image_uri)


def _filters_log(filters: SearchFilters) -> dict[str, Any]:
    return {"categories": list(filters.categories), "attributes": list(filters.attributes_all),
            "min_price": filters.min_price, "max_price": filters.max_price, "in_stock_only": filters.in_stock_only}
