"""CatalogEvent on the wire: JSON bytes -> validated `fashion.v1.CatalogEvent`, and back for producers.

`decode_event` goes one step further, to the plain `domain.CatalogEvent` the ingest core takes; `event_to_json`
also writes the core's `domain.ProductIndexed` as its message.

The worker never trusts a payload: every rule a later step relies on (ids present and short enough for their
columns, images present and capped, prices finite, currency codes well formed) is checked here, so a bad
event fails as a whole before anything is written, with a message that says what was expected. No Kafka
imports: producers, the worker and tests all use these helpers.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf import json_format

from fashion.v1 import common_pb2, events_pb2
from services.ingest.domain import CatalogEvent, CatalogProduct, EventType, ProductIndexed
from shared.errors import InvalidInput, TooLarge
from shared.serving.inputs import image_source

UPLOADS_TOPIC = "catalog.uploads"
UPLOADS_DLQ_TOPIC = "catalog.uploads.dlq"
INDEXED_TOPIC = "catalog.indexed"
CLICKS_TOPIC = "search.clicks"

UPSERT = events_pb2.CatalogEvent.EVENT_TYPE_UPSERT
DELETE = events_pb2.CatalogEvent.EVENT_TYPE_DELETE

# Column sizes of shared.db.models (longer values would fail inside the Postgres transaction instead of here).
MAX_EVENT_ID_CHARS = 256
MAX_PRODUCT_ID_CHARS = 128
MAX_TITLE_CHARS = 512
MAX_BRAND_CHARS = 256
MAX_CATEGORY_HINT_CHARS = 128

_EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://fashionnet.local/ingest/events")


@dataclass(frozen=True)
class EventLimits:
    """Caps on one catalogue event. Inline images count before decoding; URIs are capped when fetched."""

    max_images: int = 32
    max_inline_bytes: int = 2 * 1024 * 1024
    max_event_bytes: int = 16 * 1024 * 1024


DEFAULT_EVENT_LIMITS = EventLimits()


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def parse_event(data: bytes | None, limits: EventLimits = DEFAULT_EVENT_LIMITS) -> events_pb2.CatalogEvent:
    """Kafka value bytes -> a validated CatalogEvent; InvalidInput / TooLarge say what was expected."""
    if not data:
        raise InvalidInput("expected a CatalogEvent as a JSON object, got an empty message")
    if len(data) > limits.max_event_bytes:
        raise TooLarge(f"expected a CatalogEvent of at most {limits.max_event_bytes} bytes, got {len(data)}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"expected UTF-8 encoded JSON, got an invalid byte at position {exc.start}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"expected a CatalogEvent as a JSON object, got invalid JSON: {exc.msg} "
                           f"(line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise InvalidInput("expected a CatalogEvent as a JSON object, got JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise InvalidInput(f"expected a CatalogEvent as a JSON object, got a JSON {type(obj).__name__}")
    event = events_pb2.CatalogEvent()
    try:
        # Unknown fields are ignored, as the proto3 JSON mapping allows: producers may add fields before we do.
        json_format.ParseDict(obj, event, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise InvalidInput(f"expected a fashion.v1.CatalogEvent in its JSON mapping: {_one_line(exc)}") from None
    # An unknown enum name is ignored too (type stays UNSPECIFIED): say what was sent, not the default.
    validate_event(event, limits, sent_type=obj.get("type"))
    return event


def decode_event(data: bytes | None, limits: EventLimits = DEFAULT_EVENT_LIMITS) -> CatalogEvent:
    """Kafka value bytes -> the validated event as the ingest core takes it (InvalidInput / TooLarge as above)."""
    return catalog_event(parse_event(data, limits))


def catalog_event(event: events_pb2.CatalogEvent) -> CatalogEvent:
    """A validated message as a plain event; a delete keeps only its product id and time (nothing else of it is
    read)."""
    p = event.product
    occurred_at = event.occurred_at.ToDatetime(tzinfo=UTC) if event.HasField("occurred_at") else None
    if event.type != UPSERT:
        return CatalogEvent(event.event_id, EventType.DELETE, CatalogProduct(p.product_id), occurred_at=occurred_at)
    product = CatalogProduct(p.product_id, p.title, p.brand, p.price, p.currency, p.in_stock, p.category_hint)
    return CatalogEvent(event.event_id, EventType.UPSERT, product, tuple(image_source(im) for im in event.images),
                        occurred_at)


def validate_event(event: events_pb2.CatalogEvent, limits: EventLimits = DEFAULT_EVENT_LIMITS, *,
                   sent_type: object = None) -> None:
    """The rules every event must meet before the worker touches a store (also used for built events).

    `sent_type`: the JSON `type` value as sent, named in the error when it is not a type we apply.
    """
    if not event.event_id.strip():
        raise InvalidInput("expected a non-empty event_id (a unique id per event, used to skip replays)")
    if len(event.event_id) > MAX_EVENT_ID_CHARS:
        raise InvalidInput(f"expected an event_id of at most {MAX_EVENT_ID_CHARS} characters, "
                           f"got {len(event.event_id)}")
    where = f"event {event.event_id}"
    if event.type not in (UPSERT, DELETE):
        got = sent_type if sent_type is not None else _type_name(event.type)
        raise InvalidInput(f"{where}: expected type EVENT_TYPE_UPSERT or EVENT_TYPE_DELETE, got {_one_line(got)}")
    product = event.product
    if not event.HasField("product") or not product.product_id.strip():
        raise InvalidInput(f"{where}: expected product.product_id (the catalogue's id of the product)")
    if len(product.product_id) > MAX_PRODUCT_ID_CHARS:
        raise InvalidInput(f"{where}: expected a product_id of at most {MAX_PRODUCT_ID_CHARS} characters, "
                           f"got {len(product.product_id)}")
    if event.type == DELETE:
        return  # only product.product_id is read; images, if any, are ignored
    where = f"{where} (product {product.product_id})"
    _validate_product(product, where)
    if not event.images:
        raise InvalidInput(f"{where}: expected at least one image in an upsert event, got none")
    if len(event.images) > limits.max_images:
        raise TooLarge(f"{where}: expected at most {limits.max_images} images per event, got {len(event.images)}")
    for index, image in enumerate(event.images):
        _validate_image(image, index, limits, where)


def _type_name(value: int) -> str:
    """The enum name of `value`; proto3 enums are open, so a number without a name (type 99) is valid JSON."""
    try:
        return events_pb2.CatalogEvent.EventType.Name(value)
    except ValueError:
        return str(value)


def _validate_product(product: events_pb2.Product, where: str) -> None:
    for name, value, cap in (("title", product.title, MAX_TITLE_CHARS), ("brand", product.brand, MAX_BRAND_CHARS),
                             ("category_hint", product.category_hint, MAX_CATEGORY_HINT_CHARS)):
        if len(value) > cap:
            raise InvalidInput(f"{where}: expected a {name} of at most {cap} characters, got {len(value)}")
    if not math.isfinite(product.price) or product.price < 0:
        raise InvalidInput(f"{where}: expected a finite price >= 0, got {product.price}")
    if product.price >= 1e10:
        raise InvalidInput(f"{where}: expected a price below 10,000,000,000, got {product.price}")
    currency = product.currency
    if currency and not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
        raise InvalidInput(f"{where}: expected a 3-letter ISO 4217 currency code such as 'EUR', got {currency!r}")


def _validate_image(image: common_pb2.ImageInput, index: int, limits: EventLimits, where: str) -> None:
    name = f"image #{index}" + (f" ({image.id})" if image.id else "")
    kind = image.WhichOneof("source")
    if kind is None:
        raise InvalidInput(f"{where}: {name}: expected `data` (base64 image bytes) or `uri`, got neither")
    if kind == "data":
        if not image.data:
            raise InvalidInput(f"{where}: {name}: expected non-empty inline image data (base64)")
        if len(image.data) > limits.max_inline_bytes:
            raise TooLarge(f"{where}: {name}: expected inline image data of at most {limits.max_inline_bytes} "
                           f"bytes (send larger images by uri), got {len(image.data)}")
    elif not image.uri.strip():
        raise InvalidInput(f"{where}: {name}: expected a non-empty uri")


def event_label(event: events_pb2.CatalogEvent) -> str:
    """`upsert`/`delete` for logs and metrics."""
    return {UPSERT: "upsert", DELETE: "delete"}.get(event.type, "unspecified")


# -- building events (producers) --------------------------------------------------------------------------------


ImageSource = str | Path | bytes | common_pb2.ImageInput


def image_input(source: ImageSource, index: int = 0) -> common_pb2.ImageInput:
    """A path (made absolute, as a file:// URI), a URI string, raw bytes (inline) or a ready ImageInput."""
    if isinstance(source, common_pb2.ImageInput):
        return source
    if isinstance(source, bytes | bytearray):
        return common_pb2.ImageInput(data=bytes(source), id=f"#{index}")
    if isinstance(source, Path):
        path = source.expanduser().resolve()
        return common_pb2.ImageInput(uri=path.as_uri(), id=path.name)
    return common_pb2.ImageInput(uri=source, id=source.rstrip("/").rsplit("/", 1)[-1])


def content_event_id(event: events_pb2.CatalogEvent, revision: str = "") -> str:
    """A uuid5 of the event's content (everything but event_id and occurred_at) and `revision`.

    Publishing the same content twice gives the same id, so the worker skips the second copy; a new
    `revision` forces the content through again.
    """
    copy = events_pb2.CatalogEvent()
    copy.CopyFrom(event)
    copy.ClearField("event_id")
    copy.ClearField("occurred_at")
    digest = hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{revision}\x1f{event.product.product_id}\x1f{digest}"))


def build_upsert_event(
    product_id: str,
    images: Iterable[ImageSource],
    *,
    title: str = "",
    brand: str = "",
    price: float = 0.0,
    currency: str = "EUR",
    in_stock: bool = True,
    category_hint: str = "",
    event_id: str | None = None,
    occurred_at: datetime | None = None,
    limits: EventLimits = DEFAULT_EVENT_LIMITS,
) -> events_pb2.CatalogEvent:
    """A validated upsert event; `event_id` defaults to a fresh uuid4 (unique per event, as the proto asks)."""
    event = events_pb2.CatalogEvent(
        event_id=event_id or str(uuid.uuid4()),
        type=UPSERT,
        product=events_pb2.Product(product_id=product_id, title=title, brand=brand, price=price, currency=currency,
                                   in_stock=in_stock, category_hint=category_hint),
        images=[image_input(source, i) for i, source in enumerate(images)],
    )
    if occurred_at is not None:
        event.occurred_at.FromDatetime(occurred_at)
    validate_event(event, limits)
    return event


def build_delete_event(product_id: str, *, event_id: str | None = None,
                       occurred_at: datetime | None = None) -> events_pb2.CatalogEvent:
    event = events_pb2.CatalogEvent(event_id=event_id or str(uuid.uuid4()), type=DELETE,
                                    product=events_pb2.Product(product_id=product_id))
    if occurred_at is not None:
        event.occurred_at.FromDatetime(occurred_at)
    validate_event(event)
    return event


def indexed_pb(indexed: ProductIndexed) -> events_pb2.ProductIndexed:
    return events_pb2.ProductIndexed(product_id=indexed.product_id, model_version=indexed.model_version,
                                     images=indexed.images, event_id=indexed.event_id)


def event_to_json(event: events_pb2.CatalogEvent | events_pb2.ProductIndexed | ProductIndexed) -> bytes:
    """The proto3 JSON mapping as compact UTF-8 bytes with sorted keys (same message, same bytes)."""
    if isinstance(event, ProductIndexed):
        event = indexed_pb(event)
    return json.dumps(json_format.MessageToDict(event), separators=(",", ":"), sort_keys=True).encode()


def parse_indexed(data: bytes) -> events_pb2.ProductIndexed:
    """A catalog.indexed value -> ProductIndexed (for consumers of that topic and tests)."""
    message = events_pb2.ProductIndexed()
    json_format.Parse(data.decode("utf-8"), message, ignore_unknown_fields=True)
    return message
