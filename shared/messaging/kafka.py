"""Kafka plumbing shared by every consumer and producer: topics, one producer, a batch consumer, the DLQ.

At-least-once by construction (the house style's "Kafka" rules):

* the kafka client never deserialises: keys and values stay `bytes`, so a malformed payload can only fail
  inside the handler's own try/except, never inside the client (which would retry it forever);
* offsets are committed by hand, `offset + 1` per partition, only after the handler returned, i.e. after the
  sinks were written; a handler that raises gets the same batch again after a backoff (seek back);
* a poison record is the handler's business: it sends it to the DLQ with `send_to_dlq` (shared/messaging/dlq.py:
  original bytes, the error in headers) and returns normally, so the partition moves on; one it did not
  foresee is isolated by `run(on_poison=...)` (shared/messaging/isolation.py).

Clients are never module-level (one producer per process, one consumer per thread, both created at the edge
and passed down); the Prometheus metric objects are, since they live in prometheus' global registry anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from threading import Event
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata
from prometheus_client import Counter, Gauge

from shared.messaging.isolation import handle_isolating_poison

log = logging.getLogger(__name__)

# kafka-python's default max_poll_interval_ms (300000) stalls the group join against Tansu; 10-30 s joins.
# Measured here: a join against Tansu takes about session_timeout/2 (45 s -> 23 s, 10 s -> 5 s, 6 s -> 3 s), so
# the session timeout is kept at Kafka's minimum allowed default (group.min.session.timeout.ms = 6 s).
DEFAULT_MAX_POLL_INTERVAL_MS = 15_000
DEFAULT_SESSION_TIMEOUT_MS = 6_000
DEFAULT_HEARTBEAT_INTERVAL_MS = 1_000

# The largest record our producers send and our topics accept (kafka-python's default is 1 MiB, below what an
# event with an inline image may weigh, so a DLQ copy of one could not be produced and its partition stalled).
MAX_RECORD_BYTES = 16 * 1024 * 1024

RECORDS_CONSUMED = Counter("fashion_kafka_records_consumed_total", "Records returned by poll.", ["topic"])
RECORDS_COMMITTED = Counter("fashion_kafka_records_committed_total", "Records whose offsets were committed.", ["topic"])
HANDLER_FAILURES = Counter(
    "fashion_kafka_handler_failures_total", "Batches whose handler raised (batch retried).", ["topic"]
)
CONSUMER_LAG = Gauge("fashion_kafka_consumer_lag", "End offset minus position.", ["topic", "partition"])


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record, exactly as it was on the wire (no deserialisation)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = field(default=())
    timestamp_ms: int = -1

    def header(self, name: str) -> bytes | None:
        """The last header with this name, or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


def ensure_topics(bootstrap: str, topics: Mapping[str, int], *, timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet (name -> partitions); returns the names created.

    Idempotent and safe against a concurrent creator. An existing topic keeps its partition count (a mismatch
    is logged, not "fixed": adding partitions reshuffles keys and breaks per-product ordering).
    """
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="fashion-admin", request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        existing = set(admin.list_topics())
        created: list[str] = []
        for name, partitions in topics.items():
            if partitions < 1:
                raise ValueError(f"topic {name!r}: expected at least 1 partition, got {partitions}")
            if name in existing:
                continue
            try:
                admin.create_topics([NewTopic(name, partitions, 1,
                                              topic_configs={"max.message.bytes": str(MAX_RECORD_BYTES)})])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        wanted_existing = [name for name in topics if name in existing]
        if wanted_existing:
            for described in admin.describe_topics(wanted_existing):
                have = len(described.get("partitions") or [])
                want = topics[described["name"]]
                if have != want:
                    log.warning(
                        "topic %s has %d partitions, configured %d; keeping %d", described["name"], have, want, have
                    )
        return created
    finally:
        admin.close()


def make_producer(
    bootstrap: str, *, client_id: str = "fashion-producer", linger_ms: int = 5, **overrides: Any
) -> KafkaProducer:
    """The process's one producer: acks=all, small linger, bytes in and out (callers serialise)."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": client_id,
        "acks": "all",
        "linger_ms": linger_ms,
        "max_request_size": MAX_RECORD_BYTES,
        "key_serializer": None,
        "value_serializer": None,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def _to_record(message: Any) -> Record:
    headers = tuple((str(k), bytes(v) if v is not None else b"") for k, v in (message.headers or ()))
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=headers,
        timestamp_ms=message.timestamp if message.timestamp is not None else -1,
    )


def _first_offsets(records: Iterable[Record]) -> dict[TopicPartition, int]:
    first: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        if tp not in first or record.offset < first[tp]:
            first[tp] = record.offset
    return first


def _next_offsets(records: Iterable[Record]) -> dict[TopicPartition, int]:
    nxt: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        nxt[tp] = max(nxt.get(tp, 0), record.offset + 1)
    return nxt


class BatchConsumer:
    """One consumer in a consumer group over one topic, handing out batches of raw `Record`s.

    Not thread-safe (kafka-python's consumer is not): use it from one thread, e.g. the one running `run()`.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group_id: str,
        *,
        client_id: str | None = None,
        max_poll_interval_ms: int = DEFAULT_MAX_POLL_INTERVAL_MS,
        session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
        heartbeat_interval_ms: int = DEFAULT_HEARTBEAT_INTERVAL_MS,
        **overrides: Any,
    ) -> None:
        if not 10_000 <= max_poll_interval_ms <= 30_000:
            log.warning(
                "max_poll_interval_ms=%d: expected 10000-30000 (larger values stall the group join on Tansu)",
                max_poll_interval_ms,
            )
        self.topic = topic
        self.group_id = group_id
        self.max_poll_interval_ms = max_poll_interval_ms
        config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "group_id": group_id,
            "client_id": client_id or f"{group_id}-consumer",
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "key_deserializer": None,
            "value_deserializer": None,
            "max_poll_interval_ms": max_poll_interval_ms,
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "allow_auto_create_topics": False,
        }
        config.update(overrides)
        self._consumer = KafkaConsumer(**config)
        self._consumer.subscribe([topic])
        self._closed = False

    @property
    def kafka_consumer(self) -> KafkaConsumer:
        """The underlying kafka-python consumer (same thread only)."""
        return self._consumer

    def assignment(self) -> set[int]:
        """Partitions of `topic` this member owns right now."""
        return {tp.partition for tp in self._consumer.assignment() if tp.topic == self.topic}

    def poll_batch(self, max_records: int = 100, timeout_ms: int = 1000) -> list[Record]:
        """Up to `max_records` records, ordered by partition then offset; [] when nothing arrived in time."""
        polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        records = [_to_record(m) for tp in sorted(polled, key=lambda t: (t.topic, t.partition)) for m in polled[tp]]
        if records:
            RECORDS_CONSUMED.labels(self.topic).inc(len(records))
        return records

    def commit(self, records: Sequence[Record]) -> None:
        """Commit `offset + 1` of the last record of each partition in `records` (synchronously)."""
        offsets = _next_offsets(records)
        if not offsets:
            return
        self._consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
        RECORDS_COMMITTED.labels(self.topic).inc(len(records))

    def rewind(self, records: Sequence[Record]) -> None:
        """Seek back to the first offset of each partition in `records`, so the next poll returns them again.

        Partitions lost in a rebalance meanwhile are skipped: their new owner resumes from the last commit.
        """
        assigned = self._consumer.assignment()
        for tp, offset in _first_offsets(records).items():
            if tp in assigned:
                self._consumer.seek(tp, offset)

    def lag(self, timeout_ms: int = 5000) -> dict[int, int]:
        """Per assigned partition: end offset minus our position (records not yet consumed).

        The end is the larger of ListOffsets' answer and the high watermark the last fetch reported: Tansu
        answers ListOffsets(latest) with a stale offset (1 for a partition holding 10 records, measured), which
        made the lag gauge read 0 while records waited; Kafka's two figures agree.
        """
        assigned = [tp for tp in self._consumer.assignment() if tp.topic == self.topic]
        if not assigned:
            return {}
        ends = self._consumer.end_offsets(assigned, timeout_ms=timeout_ms)
        lag: dict[int, int] = {}
        for tp in assigned:
            position = self._consumer.position(tp, timeout_ms=timeout_ms)
            end = max(ends.get(tp) or 0, self._consumer.highwater(tp) or 0)
            if position is None or (tp not in ends and self._consumer.highwater(tp) is None):
                continue
            lag[tp.partition] = max(0, end - position)
            CONSUMER_LAG.labels(self.topic, str(tp.partition)).set(lag[tp.partition])
        return lag

    def run(
        self,
        handler: Callable[[list[Record]], None],
        stop: Event,
        *,
        max_records: int = 100,
        timeout_ms: int = 500,
        backoff_s: float = 0.5,
        max_backoff_s: float = 5.0,
        lag_interval_s: float = 5.0,
        on_poison: Callable[[Record, Exception], object] | None = None,
        drain_s: float = 0.0,
    ) -> None:
        """Poll, hand each non-empty batch to `handler`, commit after it returns, until `stop` is set.

        When `handler` raises, what it did not finish is not committed: the consumer seeks back and retries after
        an exponential backoff (so a failing sink loses nothing). Handlers must therefore be idempotent, and send
        the poison they recognise to the DLQ themselves instead of raising for it. With `on_poison` (which
        dead-letters), a record the handler raises on while the records behind it succeed is isolated and
        handed to it, so one unforeseen bad record cannot stall its partition (shared/messaging/isolation.py).
        A handler must return well within `max_poll_interval_ms`; while isolating, the consumer keeps its
        group membership alive between handler calls. With `drain_s`, a stop first consumes until the topic is
        caught up, at most that long, and logs how many records were left.
        """
        # Sleeping longer than max_poll_interval_ms between polls would get us thrown out of the group.
        max_backoff_s = min(max_backoff_s, self.max_poll_interval_ms / 2000)
        delay = min(backoff_s, max_backoff_s)
        next_lag = 0.0
        # What cuts backoff waits and poison isolation short: the stop, unless a drain is asked for (both are
        # bounded, and a drain must still handle what it polls).
        interrupt = stop if drain_s <= 0 else Event()
        drain_until: float | None = None
        while True:
            if stop.is_set():
                if drain_s <= 0:
                    break
                if drain_until is None:
                    drain_until = time.monotonic() + drain_s
                    log.info("draining %s before stopping (at most %.0fs)", self.topic, drain_s)
                elif time.monotonic() >= drain_until:
                    log.warning("stopped with %d records of %s not consumed (drain time %.0fs is up)",
                                self._records_left(), self.topic, drain_s)
                    break
            batch = self.poll_batch(max_records=max_records, timeout_ms=timeout_ms)
            if not batch and drain_until is not None and self._records_left() == 0:
                log.info("drained %s: every record consumed", self.topic)
                break
            if batch:
                done = self._handle(batch, handler, on_poison, interrupt)
                if done:
                    self._commit_quietly(batch[:done])
                if done < len(batch):
                    HANDLER_FAILURES.labels(self.topic).inc()
                    log.warning("handler failed on %d of %d records of %s; retrying them in %.1fs",
                                len(batch) - done, len(batch), self.topic, delay)
                    self.rewind(batch[done:])
                    interrupt.wait(delay)
                    delay = min(delay * 2, max_backoff_s)
                    continue
                delay = min(backoff_s, max_backoff_s)
            if lag_interval_s > 0 and time.monotonic() >= next_lag:
                next_lag = time.monotonic() + lag_interval_s
                try:
                    self.lag()
                except KafkaError as exc:
                    log.debug("lag refresh failed: %s", exc)

    def _records_left(self) -> int:
        """Records of our partitions not consumed yet; -1 when unknown (no partitions assigned yet, because
        the group join is still under way, or the broker did not answer)."""
        if not self.assignment():
            return -1
        try:
            return sum(self.lag(timeout_ms=2000).values())
        except KafkaError:
            return -1

    def _handle(self, batch: list[Record], handler: Callable[[list[Record]], None],
                on_poison: Callable[[Record, Exception], object] | None, stop: Event) -> int:
        """How many leading records of `batch` are done."""
        if on_poison is not None:
            return handle_isolating_poison(batch, handler, on_poison, stop=stop, before_call=self.keep_alive)
        try:
            handler(batch)
            return len(batch)
        except Exception:
            log.exception("handler failed on %d records of %s", len(batch), self.topic)
            return 0

    def keep_alive(self) -> None:
        """Poll with every partition paused: resets the max_poll_interval clock without taking records, so
        long work on records in hand (isolating a poison) does not get this member thrown out of the group."""
        assigned = self._consumer.assignment()
        if not assigned:
            return
        self._consumer.pause(*assigned)
        try:
            self._consumer.poll(timeout_ms=0)
        finally:
            self._consumer.resume(*[tp for tp in assigned if tp in self._consumer.assignment()])

    def _commit_quietly(self, records: Sequence[Record]) -> None:
        try:
            self.commit(records)
        except CommitFailedError:
            # The group rebalanced under us: the new owner re-reads from the last commit (at-least-once).
            log.warning("commit of %d records on %s failed after a rebalance", len(records), self.topic)
        except KafkaError as exc:
            # Handled but not committed: they will be delivered again, and the sinks are idempotent.
            log.warning("commit of %d records on %s failed: %s", len(records), self.topic, exc)

    def close(self) -> None:
        """Leave the group (a clean leave lets the others rebalance at once); never auto-commits."""
        if not self._closed:
            self._closed = True
            self._consumer.close(autocommit=False)

    def __enter__(self) -> BatchConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def consumer_lag(consumer: BatchConsumer) -> dict[int, int]:
    """Per partition lag of `consumer` (call it from the consumer's own thread); also updates the gauge."""
    return consumer.lag()
