"""CatalogEvent wire format: every way a payload can be wrong gets a clear error; built events round-trip."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fashion.v1 import events_pb2
from services.ingest.domain import CatalogEvent, CatalogProduct, EventType, ProductIndexed
from services.ingest.events import (
    CLICKS_TOPIC,
    DELETE,
    INDEXED_TOPIC,
    UPLOADS_DLQ_TOPIC,
    UPLOADS_TOPIC,
    UPSERT,
    EventLimits,
    build_delete_event,
    build_upsert_event,
    content_event_id,
    decode_event,
    event_to_json,
    parse_event,
    parse_indexed,
    validate_event,
)
from services.ingest.publish import events_from_folder, roots_error, synthetic_fields
from shared.errors import InvalidInput, TooLarge
from shared.imaging import ImageSource

BIG_INLINE = base64.b64encode(b"x" * 2_100_000).decode()


def _upsert(**overrides: object) -> dict:
    event = {"eventId": "e1", "type": "EVENT_TYPE_UPSERT",
             "product": {"productId": "p1", "title": "Tee", "price": 19.5, "currency": "EUR"},
             "images": [{"uri": "file:///tmp/p1.jpg"}]}
    event.update(overrides)
    return event


def _bytes(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_topic_names() -> None:
    assert (UPLOADS_TOPIC, UPLOADS_DLQ_TOPIC, INDEXED_TOPIC, CLICKS_TOPIC) == (
        "catalog.uploads", "catalog.uploads.dlq", "catalog.indexed", "search.clicks")


def test_valid_upsert_parses_in_both_field_spellings() -> None:
    camel = parse_event(_bytes(_upsert()))
    snake = parse_event(_bytes({"event_id": "e1", "type": "EVENT_TYPE_UPSERT",
                                "product": {"product_id": "p1", "title": "Tee", "price": 19.5, "currency": "EUR"},
                                "images": [{"uri": "file:///tmp/p1.jpg"}]}))
    assert camel == snake
    assert camel.type == UPSERT and camel.product.product_id == "p1" and camel.images[0].uri == "file:///tmp/p1.jpg"


@pytest.mark.parametrize(("payload", "error", "message"), [
    (b"", InvalidInput, "got an empty message"),
    (None, InvalidInput, "got an empty message"),
    (b"\xff\xfe{}", InvalidInput, "expected UTF-8 encoded JSON, got an invalid byte at position 0"),
    (b'{"eventId": "e1",', InvalidInput, "got invalid JSON"),
    (b"[1, 2]", InvalidInput, "expected a CatalogEvent as a JSON object, got a JSON list"),
    (_bytes(_upsert(type="EVENT_TYPE_RENAME")), InvalidInput,
     "event e1: expected type EVENT_TYPE_UPSERT or EVENT_TYPE_DELETE, got EVENT_TYPE_RENAME"),
    (_bytes(_upsert(type=99)), InvalidInput, "event e1: expected type EVENT_TYPE_UPSERT or EVENT_TYPE_DELETE, got 99"),
    (_bytes(_upsert(product={"productId": "p1", "price": "cheap"})), InvalidInput,
     "expected a fashion.v1.CatalogEvent in its JSON mapping"),
    (_bytes(_upsert(eventId="")), InvalidInput, "expected a non-empty event_id"),
    (_bytes({k: v for k, v in _upsert().items() if k != "eventId"}), InvalidInput, "expected a non-empty event_id"),
    (_bytes(_upsert(eventId="x" * 300)), InvalidInput, "event_id of at most 256 characters, got 300"),
    (_bytes(_upsert(type="EVENT_TYPE_UNSPECIFIED")), InvalidInput,
     "event e1: expected type EVENT_TYPE_UPSERT or EVENT_TYPE_DELETE, got EVENT_TYPE_UNSPECIFIED"),
    (_bytes({k: v for k, v in _upsert().items() if k != "product"}), InvalidInput,
     "event e1: expected product.product_id"),
    (_bytes(_upsert(product={"title": "no id"})), InvalidInput, "event e1: expected product.product_id"),
    (_bytes(_upsert(images=[])), InvalidInput,
     "event e1 (product p1): expected at least one image in an upsert event, got none"),
    (_bytes(_upsert(images=[{"id": "front"}])), InvalidInput,
     "image #0 (front): expected `data` (base64 image bytes) or `uri`, got neither"),
    (_bytes(_upsert(images=[{"data": ""}])), InvalidInput, "image #0: expected non-empty inline image data (base64)"),
    (_bytes(_upsert(images=[{"uri": "a", "data": "aGk="}])), InvalidInput, 'multiple "source" oneof fields'),
    (_bytes(_upsert(images=[{"uri": "  "}])), InvalidInput, "image #0: expected a non-empty uri"),
    (_bytes(_upsert(images=[{"uri": f"/tmp/{i}.jpg"} for i in range(33)])), TooLarge,
     "expected at most 32 images per event, got 33"),
    (_bytes(_upsert(images=[{"uri": "/tmp/a.jpg"}, {"id": "big", "data": BIG_INLINE}])),
     TooLarge, "image #1 (big): expected inline image data of at most 2097152 bytes (send larger images by uri), "
               "got 2100000"),
    (_bytes(_upsert(product={"productId": "p1", "price": -1})), InvalidInput, "expected a finite price >= 0, got -1"),
    (_bytes(_upsert(product={"productId": "p1", "price": "NaN"})), InvalidInput, "expected a finite price >= 0"),
    (_bytes(_upsert(product={"productId": "p1", "currency": "EURO"})), InvalidInput,
     "expected a 3-letter ISO 4217 currency code such as 'EUR', got 'EURO'"),
    (_bytes(_upsert(product={"productId": "p" * 129})), InvalidInput, "product_id of at most 128 characters"),
    (_bytes(_upsert(product={"productId": "p1", "title": "t" * 513})), InvalidInput,
     "title of at most 512 characters, got 513"),
])
def test_parse_errors_say_what_was_expected(payload: bytes | None, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        parse_event(payload)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_fields_are_ignored_as_proto3_json_allows() -> None:
    """Producers may add fields (top level, nested, in images) before the worker knows them."""
    event = parse_event(_bytes(_upsert(colour="red", product={"productId": "p1", "size": "M"},
                                       images=[{"uri": "file:///tmp/p1.jpg", "alt": "front"}])))
    assert event == parse_event(_bytes(_upsert(product={"productId": "p1"})))
    indexed = parse_indexed(_bytes({"productId": "p1", "modelVersion": "v1", "images": 2, "region": "eu"}))
    assert (indexed.product_id, indexed.images) == ("p1", 2)


def test_a_built_event_of_an_unknown_type_is_refused_naming_the_number() -> None:
    event = build_delete_event("p1")
    event.type = 99  # proto3 enums are open: a valid message, not one the worker applies
    with pytest.raises(InvalidInput, match="got 99"):
        validate_event(event)


def test_delete_needs_only_a_product_id_and_may_carry_images() -> None:
    event = parse_event(_bytes({"eventId": "d1", "type": "EVENT_TYPE_DELETE", "product": {"productId": "p1"},
                                "images": [{"uri": "file:///ignored.jpg"}]}))
    assert event.type == DELETE and event.product.product_id == "p1"
    with pytest.raises(InvalidInput, match="event d1: expected product.product_id"):
        parse_event(_bytes({"eventId": "d1", "type": "EVENT_TYPE_DELETE"}))


def test_event_size_cap_is_checked_before_decoding() -> None:
    with pytest.raises(TooLarge, match="at most 100 bytes, got 101"):
        parse_event(b"x" * 101, EventLimits(max_event_bytes=100))


def test_limits_are_configurable() -> None:
    limits = EventLimits(max_images=2, max_inline_bytes=4)
    with pytest.raises(TooLarge, match="at most 2 images"):
        parse_event(_bytes(_upsert(images=[{"uri": "a"}] * 3)), limits)
    with pytest.raises(TooLarge, match="at most 4 bytes"):
        parse_event(_bytes(_upsert(images=[{"data": base64.b64encode(b"12345").decode()}])), limits)


def test_built_events_round_trip_through_json(tmp_path: Path) -> None:
    upsert = build_upsert_event("p9", [tmp_path / "a.jpg", "https://cdn.example/b.png", b"\x89PNG"],
                                title="Coat", brand="Fjord", price=99.9, currency="EUR", in_stock=False)
    data = event_to_json(upsert)
    assert parse_event(data) == upsert
    assert event_to_json(parse_event(data)) == data  # canonical bytes
    assert [im.WhichOneof("source") for im in upsert.images] == ["uri", "uri", "data"]
    assert upsert.images[0].uri == (tmp_path / "a.jpg").resolve().as_uri() and upsert.images[0].id == "a.jpg"
    delete = build_delete_event("p9")
    assert parse_event(event_to_json(delete)) == delete and delete.event_id != upsert.event_id
    with pytest.raises(InvalidInput, match="expected at least one image"):
        build_upsert_event("p9", [])
    indexed = events_pb2.ProductIndexed(product_id="p9", model_version="v1", images=3, event_id="e")
    assert parse_indexed(event_to_json(indexed)) == indexed
    # What the ingest core announces is a plain dataclass; on the wire it is the same message.
    assert event_to_json(ProductIndexed("p9", "v1", 3, "e")) == event_to_json(indexed)


def test_decoded_events_are_plain_dataclasses(tmp_path: Path) -> None:
    upsert = build_upsert_event("p9", [tmp_path / "a.jpg", b"\x89PNG"], title="Coat", brand="Fjord", price=99.9,
                                currency="EUR", in_stock=False, category_hint="coat", event_id="e9")
    assert decode_event(event_to_json(upsert)) == CatalogEvent(
        "e9", EventType.UPSERT,
        CatalogProduct("p9", "Coat", "Fjord", 99.9, "EUR", in_stock=False, category_hint="coat"),
        (ImageSource(uri=(tmp_path / "a.jpg").resolve().as_uri(), id="a.jpg"), ImageSource(data=b"\x89PNG", id="#1")))
    delete = decode_event(event_to_json(build_delete_event("p9", event_id="d9")))
    assert delete == CatalogEvent("d9", EventType.DELETE, CatalogProduct("p9")) and not delete.upsert
    with pytest.raises(InvalidInput, match="invalid JSON"):
        decode_event(b"{")


def test_occurred_at_comes_through_as_an_aware_utc_time() -> None:
    """What the ingest worker orders a product's events by (sinks.py); any offset on the wire becomes UTC."""
    at = datetime(2026, 3, 1, 13, 30, 15, 250_000, tzinfo=timezone(timedelta(hours=1)))
    delete = decode_event(event_to_json(build_delete_event("p9", occurred_at=at)))
    assert delete.occurred_at == at and delete.occurred_at.utcoffset() == timedelta(0)
    wire = json.loads(event_to_json(build_upsert_event("p9", [b"\x89PNG"], occurred_at=at)))
    assert wire["occurredAt"] == "2026-03-01T12:30:15.250Z"
    assert decode_event(json.dumps(wire).encode()).occurred_at == at
    assert decode_event(event_to_json(build_delete_event("p9"))).occurred_at is None  # not said: arrival order


def test_content_event_ids_are_deterministic() -> None:
    a = build_upsert_event("p1", ["file:///x.jpg"], title="A", event_id="one")
    b = build_upsert_event("p1", ["file:///x.jpg"], title="A", event_id="two")
    c = build_upsert_event("p1", ["file:///x.jpg"], title="B", event_id="three")
    assert content_event_id(a) == content_event_id(b) != content_event_id(c)
    assert content_event_id(a, "r2") != content_event_id(a)


def test_image_folder_gives_one_product_per_image(tmp_path: Path) -> None:
    from PIL import Image

    for name in ("red_dress.jpg", "blue-coat.png"):
        Image.new("RGB", (32, 32)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    events = list(events_from_folder(tmp_path))
    assert [e.product.product_id for e in events] == ["blue-coat", "red_dress"]
    assert events[1].product.title == "Red Dress" and events[1].images[0].uri.startswith("file:///")
    assert events == list(events_from_folder(tmp_path))  # deterministic, event ids included
    fields = synthetic_fields("red_dress")
    assert 9.99 <= fields["price"] <= 199.99 and fields["currency"] == "EUR"  # type: ignore[operator]


def test_folder_without_images_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="expected a DeepFashion benchmark folder .* or a folder of"):
        list(events_from_folder(tmp_path))
    with pytest.raises(InvalidInput, match="expected a folder"):
        list(events_from_folder(tmp_path / "missing"))


def test_product_folders_give_one_product_per_folder_with_its_shop_photos(tmp_path: Path) -> None:
    from PIL import Image

    for relative in ("P2/front.jpg", "P2/back.jpg", "P2/consumer_1.jpg", "P1/a.png", "P1/consumer/x.jpg"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32)).save(tmp_path / relative)
    events = list(events_from_folder(tmp_path))
    assert [e.product.product_id for e in events] == ["P1", "P2"]
    assert [[Path(i.uri).name for i in e.images] for e in events] == [["a.png"], ["back.jpg", "front.jpg"]]


def test_publish_refuses_a_folder_the_running_stack_would_not_read(tmp_path: Path) -> None:
    """stack.json names the roots of the running `fashion up`; a folder outside them would be dead-lettered."""
    (tmp_path / "catalog" / "shirts").mkdir(parents=True)
    state = {"targets": ["search", "ingest"], "image_roots": [str(tmp_path / "catalog")]}
    assert roots_error(tmp_path / "catalog" / "shirts", state) is None
    error = roots_error(tmp_path, state)
    assert error is not None and f"FASHION_IMAGE_ROOTS={tmp_path.resolve()}" in error
    assert roots_error(tmp_path, {**state, "targets": ["search"]}) is None  # no ingest there to refuse it
    assert roots_error(tmp_path, {"targets": ["ingest"]}) is None  # a stack from before roots were recorded
