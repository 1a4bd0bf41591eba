"""The stored side of search.clicks: the topic's wire format (SearchClick JSON), and the writer that puts consumed
clicks into the database.

RecordClick hands a plain `core.Click` to a sink; the Kafka sink (clicks.py) sends it as `click_json`, and the
click consumer (clicks.py) reads it back with `parse_click` inside `ClickWriter`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from google.protobuf import json_format
from prometheus_client import Counter
from sqlalchemy.orm import Session, sessionmaker

from fashion.v1 import events_pb2
from services.search.core import Click
from shared.db import repository
from shared.errors import FashionError, InvalidInput
from shared.messaging.consumer_thread import Poison

log = logging.getLogger(__name__)

CLICKS_WRITTEN = Counter("fashion_search_clicks_written_total", "Click events handled by the click writer.",
                         ["outcome"])

def click_json(click: Click) -> bytes:
    message = events_pb2.SearchClick(click_id=click.click_id, query_id=click.query_id, product_id=click.product_id,
                                     position=click.position)
    if click.clicked_at is not None:
        message.clicked_at.FromDatetime(click.clicked_at)
    return json_format.MessageToJson(message, indent=None).encode("utf-8")


def parse_click(value: bytes | None) -> Click:
    """A click from its SearchClick JSON mapping, or InvalidInput saying what is wrong with it."""
    if not value:
        raise InvalidInput("expected a SearchClick JSON object, got an empty record")
    try:
        # Unknown fields are ignored (proto3 JSON): producers may add fields before this consumer knows them.
        message = json_format.Parse(value.decode("utf-8"), events_pb2.SearchClick(), ignore_unknown_fields=True)
    except (UnicodeDecodeError, json_format.ParseError, RecursionError) as exc:
        raise InvalidInput(f"expected a SearchClick JSON object: {exc}") from None
    missing = [name for name in ("click_id", "query_id", "product_id") if not getattr(message, name)]
    if missing:
        raise InvalidInput(f"SearchClick is missing {', '.join(missing)}")
    try:
        clicked_at = message.clicked_at.ToDatetime(tzinfo=UTC) if message.HasField("clicked_at") else None
    except (ValueError, OverflowError) as exc:  # a timestamp outside datetime's years 1-9999
        raise InvalidInput(f"expected a SearchClick clicked_at between years 1 and 9999: {exc}") from None
    return Click(message.click_id, message.query_id, message.product_id, message.position, clicked_at)


class ClickWriter:
    """Writes consumed SearchClick records to the database, idempotently (a replay stores nothing new).

    A malformed record, or one naming an unknown query or a product that query never showed, is counted,
    logged and returned as poison (the consumer thread dead-letters it); it never blocks the partition.
    Database failures propagate, so the consumer retries the batch; the writes being idempotent makes that safe.
    """

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.sessions = session_factory
        self.recorded = 0
        self.duplicates = 0
        self.rejected = 0

    def handle(self, records: Sequence[Any]) -> list[Poison]:
        """`records`: objects with `value` (bytes), e.g. shared.messaging.Record; returns the rejected ones."""
        poison: list[Poison] = []
        for record in records:
            try:
                click = parse_click(record.value)
                with self.sessions.begin() as session:
                    new = repository.record_click(session, click.click_id, click.query_id, click.product_id,
                                                  click.position, clicked_at=click.clicked_at)
            except FashionError as exc:
                poison.append(self._reject(record, exc))
                continue
            if new:
                self.recorded += 1
                CLICKS_WRITTEN.labels("recorded").inc()
            else:
                self.duplicates += 1
                CLICKS_WRITTEN.labels("duplicate").inc()
        return poison

    def _reject(self, record: Any, exc: Exception) -> Poison:
        self.rejected += 1
        CLICKS_WRITTEN.labels("rejected").inc()
        where = f"{getattr(record, 'topic', '?')}[{getattr(record, 'partition', '?')}]@{getattr(record, 'offset', '?')}"
        log.warning("skipping click record %s: %s", where, exc)
        return Poison.of(record, exc)
