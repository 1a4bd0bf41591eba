"""Catalogue events as a producer writes them (services/ingest/events.py builds and validates them), as raw bytes."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Sequence

from services.ingest.events import (
    UPLOADS_DLQ_TOPIC,
    UPLOADS_TOPIC,
    build_delete_event,
    build_upsert_event,
    event_to_json,
)

__all__ = ["UPLOADS_DLQ_TOPIC", "UPLOADS_TOPIC", "delete", "raw_upsert", "sha256", "upsert"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upsert(product_id: str, images: Sequence[bytes | str], *, title: str, price: float = 19.99,
           event_id: str | None = None) -> tuple[str, bytes]:
    """(event id, JSON value) of an upsert with inline images (bytes) or URIs (str)."""
    event = build_upsert_event(product_id, list(images), title=title, price=price, event_id=event_id)
    return event.event_id, event_to_json(event)


def delete(product_id: str) -> tuple[str, bytes]:
    event = build_delete_event(product_id)
    return event.event_id, event_to_json(event)


def raw_upsert(product_id: str, images: Sequence[dict], *, title: str = "chaos", event_type: object = 1,
               **extra: object) -> tuple[str, bytes]:
    """An upsert written by hand (no validation): for events the builders refuse to make, e.g. `"type": 99` or an
    unknown field. `images` are ImageInput JSON objects ({"data": base64} or {"uri": ...})."""
    event_id = str(uuid.uuid4())
    obj = {"eventId": event_id, "type": event_type, "product": {"productId": product_id, "title": title},
           "images": list(images), **extra}
    return event_id, json.dumps(obj).encode()


def inline(data: bytes) -> dict:
    return {"data": base64.b64encode(data).decode()}
