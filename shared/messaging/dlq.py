"""The dead-letter topics: a record that cannot be handled is copied there, unchanged, with why and where from.

Every consumer dead-letters through `send_to_dlq`, so every DLQ record carries the same headers: the original
topic, partition and offset, the error's reason and type, and when.
"""

from __future__ import annotations

import logging
import time

from kafka import KafkaProducer
from kafka.errors import MessageSizeTooLargeError, RecordListTooLargeError
from prometheus_client import Counter

from shared.messaging.kafka import Record

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
