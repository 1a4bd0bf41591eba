"""The dead-letter topics: a record that cannot be handled is copied there, unchanged, with why and where from.

Every consumer dead-letters through `send_to_dlq`, so every DLQ record carries the same headers: the original
topic, partition and offset, the error's reason and type, and when. `read_latest_dead_letters` reads them back
(AdminService's ListDeadLetters), so the header format lives in this module only.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from prometheus_client import Counter

from shared.errors import Unavailable
from shared.messaging.kafka import Record, _to_record

log = logging.getLogger(__name__)

# DLQ headers: the original coordinates and the error, all UTF-8 strings.
HEADER_ORIGINAL_TOPIC = "original.topic"
HEADER_ORIGINAL_PARTITION = "original.partition"
HEADER_ORIGINAL_OFFSET = "original.offset"
HEADER_ERROR_REASON = "error.reason"
HEADER_ERROR_TYPE = "error.type"
HEADER_ERROR_TIMESTAMP = "error.timestamp_ms"
HEADER_TRUNCATED = "dlq.truncated_value_bytes"  # set when the original was too large to copy: its size
MAX_REASON_BYTES = 4096
MAX_KEY_CHARS = 200  # a dead letter's key as read back: enough for an id, not a payload
RECORDS_DLQ = Counter("fashion_kafka_records_dlq_total", "Records sent to a dead-letter topic.", ["topic"])


def send_to_dlq(
    producer: KafkaProducer,
    dlq_topic: str,
    record: Record,
    reason: str,
    error_type: str,
    *,
    timeout_s: float = 10.0,
) -> None:
    """Write `record` to `dlq_topic` unchanged (key, value, its headers) plus the error and where it came from.

    Blocks until the broker acknowledged, so the caller can commit the original offset right after. A record
    too large for the producer or the broker is dead-lettered without its value (header `dlq.truncated_value_bytes`
    gives its size; the original topic, partition and offset say where to find it while retention keeps it).
    """
    encoded_reason = reason.encode("utf-8", errors="replace")[:MAX_REASON_BYTES]
    headers = [
        *[(k, v) for k, v in record.headers],
        (HEADER_ORIGINAL_TOPIC, record.topic.encode()),
        (HEADER_ORIGINAL_PARTITION, str(record.partition).encode()),
        (HEADER_ORIGINAL_OFFSET, str(record.offset).encode()),
        (HEADER_ERROR_REASON, encoded_reason),
        (HEADER_ERROR_TYPE, error_type.encode("utf-8", errors="replace")),
        (HEADER_ERROR_TIMESTAMP, str(int(time.time() * 1000)).encode()),
    ]
    # Kafka needs a key or a value; an original with neither is kept as an empty value.
    value = record.value if record.value is not None or record.key is not None else b""
    try:
        producer.send(dlq_topic, key=record.key, value=value, headers=headers).get(timeout=timeout_s)
    except (MessageSizeTooLargeError, RecordListTooLargeError):
        size = str(len(value or b"") + len(record.key or b"")).encode()
        key = record.key if record.key is not None and len(record.key) <= MAX_REASON_BYTES else None
        producer.send(dlq_topic, key=key, value=b"", headers=[*headers, (HEADER_TRUNCATED, size)]).get(
            timeout=timeout_s)
    RECORDS_DLQ.labels(record.topic).inc()
    log.warning(
        "sent %s[%d]@%d to %s: %s (%s)", record.topic, record.partition, record.offset, dlq_topic, reason, error_type
    )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered record as its headers tell it. Never its value: that is the data that failed (possibly
    large, possibly private), and where it came from is enough to find it while retention keeps it."""

    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    source_topic: str
    source_partition: int  # -1 when a header is missing (a record not written by send_to_dlq)
    source_offset: int
    error_type: str
    reason: str
    dead_lettered_ms: int  # the error.timestamp_ms header, else the record's own timestamp
    key: str  # UTF-8 (undecodable bytes replaced), at most MAX_KEY_CHARS
    value_truncated: bool  # the original was too large to copy (send_to_dlq kept only its size)


@dataclass(frozen=True, slots=True)
class DeadLetters:
    records: list[DeadLetter]  # newest first
    missing_topics: list[str]  # asked for but not on the broker (their consumer never started): not an error


def _text(record: Record, name: str) -> str:
    value = record.header(name)
    return value.decode("utf-8", errors="replace") if value is not None else ""


def _int(record: Record, name: str, default: int = -1) -> int:
    try:
        return int(_text(record, name))
    except ValueError:
        return default


def dead_letter(record: Record) -> DeadLetter:
    """The headers `send_to_dlq` wrote, read leniently: anyone may produce into a DLQ topic."""
    key = (record.key or b"").decode("utf-8", errors="replace")
    return DeadLetter(
        dlq_topic=record.topic, dlq_partition=record.partition, dlq_offset=record.offset,
        source_topic=_text(record, HEADER_ORIGINAL_TOPIC),
        source_partition=_int(record, HEADER_ORIGINAL_PARTITION), source_offset=_int(record, HEADER_ORIGINAL_OFFSET),
        error_type=_text(record, HEADER_ERROR_TYPE), reason=_text(record, HEADER_ERROR_REASON),
        dead_lettered_ms=_int(record, HEADER_ERROR_TIMESTAMP, record.timestamp_ms),
        key=key if len(key) <= MAX_KEY_CHARS else key[: MAX_KEY_CHARS - 1] + "\u2026",
        value_truncated=record.header(HEADER_TRUNCATED) is not None)


def read_latest_dead_letters(bootstrap: str, topics: Sequence[str], limit: int, *,
                             timeout_s: float = 10.0) -> DeadLetters:
    """The newest `limit` records of the dead-letter `topics`, newest first (by when they were dead-lettered).

    Reads without a consumer group (nothing committed, no group join): each partition is assigned and read from
    `end - limit` to its end. Values are dropped as records arrive, so memory holds at most `limit` dead letters
    per partition. Raises Unavailable when the broker does not answer, or the partitions cannot
    be read to their end, within `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    timeout_ms = max(1000, int(timeout_s * 1000))
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, client_id="fashion-dlq-reader",
                                 enable_auto_commit=False, allow_auto_create_topics=False,
                                 key_deserializer=None, value_deserializer=None,
                                 bootstrap_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms)
    except KafkaError as exc:
        raise Unavailable(f"the Kafka broker at {bootstrap} did not answer within {timeout_s:.0f} s ({exc}); "
                          "expected it up to read the dead-letter topics") from None
    try:
        return _read(consumer, topics, limit, deadline)
    except KafkaError as exc:
        raise Unavailable(f"reading the dead-letter topics from {bootstrap} failed: {exc}") from None
    finally:
        consumer.close()


def _read(consumer: KafkaConsumer, topics: Sequence[str], limit: int, deadline: float) -> DeadLetters:
    found = {topic: sorted(consumer.partitions_for_topic(topic) or ()) for topic in topics}
    partitions = [TopicPartition(topic, p) for topic, numbers in found.items() for p in numbers]
    kept: dict[TopicPartition, deque[DeadLetter]] = {tp: deque(maxlen=limit) for tp in partitions}
    if partitions:
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        starts = consumer.beginning_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, max(starts[tp], ends[tp] - limit))

        def behind() -> list[TopicPartition]:
            # The end as the fetches report it too: Tansu may answer ListOffsets with a stale, lower end (see
            # BatchConsumer.lag); reading from too early a start costs time only, the deques keep the newest.
            return [tp for tp in partitions if consumer.position(tp) < max(ends[tp], consumer.highwater(tp) or 0)]

        while waiting := behind():
            left = deadline - time.monotonic()
            if left <= 0:
                names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in waiting)
                raise Unavailable(f"expected the newest {limit} dead letters in time, but {names} were not read to "
                                  "their end (the broker is slow or overloaded; try again)")
            for tp, messages in consumer.poll(timeout_ms=int(min(left, 0.5) * 1000)).items():
                kept[tp].extend(dead_letter(_to_record(m)) for m in messages)
    newest = sorted((d for letters in kept.values() for d in letters),
                    key=lambda d: (d.dead_lettered_ms, d.dlq_offset), reverse=True)
    return DeadLetters(newest[:limit], [topic for topic, numbers in found.items() if not numbers])
