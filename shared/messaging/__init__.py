"""Kafka messaging: a local Tansu broker for development and tests, and the at-least-once consumer toolkit."""

from shared.messaging.broker import BrokerStartError, LocalBroker, free_port, metadata_ok
from shared.messaging.dlq import (
    HEADER_ERROR_REASON,
    HEADER_ERROR_TIMESTAMP,
    HEADER_ERROR_TYPE,
    HEADER_ORIGINAL_OFFSET,
    HEADER_ORIGINAL_PARTITION,
    HEADER_ORIGINAL_TOPIC,
    HEADER_TRUNCATED,
    DeadLetter,
    DeadLetters,
    read_latest_dead_letters,
    send_to_dlq,
)
from shared.messaging.kafka import (
    MAX_RECORD_BYTES,
    BatchConsumer,
    Record,
    consumer_lag,
    ensure_topics,
    make_producer,
)

__all__ = [
    "HEADER_ERROR_REASON",
    "HEADER_ERROR_TIMESTAMP",
    "HEADER_ERROR_TYPE",
    "HEADER_ORIGINAL_OFFSET",
    "HEADER_ORIGINAL_PARTITION",
    "HEADER_ORIGINAL_TOPIC",
    "HEADER_TRUNCATED",
    "MAX_RECORD_BYTES",
    "BatchConsumer",
    "BrokerStartError",
    "DeadLetter",
    "DeadLetters",
    "LocalBroker",
    "Record",
    "consumer_lag",
    "ensure_topics",
    "free_port",
    "make_producer",
    "metadata_ok",
    "read_latest_dead_letters",
    "send_to_dlq",
]
