"""One consumer-group member in its own thread, the one lifecycle every consumer of the platform shares, and
the one place where records are dead-lettered.

A handler gets a batch of raw records and returns the poison it recognised (`Poison`: the record and why);
this class sends those to the DLQ before the batch is committed. A record the handler raises on while the
records behind it succeed is isolated and dead-lettered too (shared/messaging/isolation.py); a handler that
keeps raising on everything means its sink is down, and the batch is retried with backoff, losing nothing.

Lifecycle: `start()` creates the topics, creates the kafka consumer *on the worker thread* (kafka-python is
not thread-safe), and returns once it exists (or raises what stopped it). `stop()` finishes the batch in
hand, commits, leaves the group; with `drain_s` it first keeps consuming until the topic is caught up (for
the embedded broker, which forgets what was not consumed when it stops), at most that long, and logs what
was left. `error` is what ended the thread, if anything: the host turns it into health NOT_SERVING.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from kafka import KafkaProducer

from shared.messaging.dlq import send_to_dlq
from shared.messaging.kafka import BatchConsumer, Record, ensure_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Poison:
    """A record the handler could not apply, and why (the DLQ headers say it)."""

    record: Record
    reason: str
    error_type: str

    @classmethod
    def of(cls, record: Record, exc: BaseException) -> Poison:
        return cls(record, str(exc), type(exc).__name__)


Handler = Callable[[list[Record]], Sequence[Poison]]


@dataclass(frozen=True)
class ConsumerConfig:
    topic: str
    dlq_topic: str
    group_id: str
    partitions: int = 3  # for topics this consumer creates; existing topics keep theirs
    max_records: int = 32
    poll_timeout_ms: int = 500
    max_poll_interval_ms: int = 30_000
    client_id: str | None = None
    send_timeout_s: float = 10.0
    start_timeout_s: float = 30.0
    drain_s: float = 0.0


class ConsumerThread:
    def __init__(self, bootstrap: str, config: ConsumerConfig, handler: Handler, producer: KafkaProducer, *,
                 extra_topics: Mapping[str, int] | None = None) -> None:
        self.bootstrap = bootstrap
        self.config = config
        self.handler = handler
        self.producer = producer
        self.extra_topics = dict(extra_topics or {})
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ConsumerThread:
        if self._thread is not None:
            raise RuntimeError(f"consumer of {self.config.topic} already started")
        cfg = self.config
        ensure_topics(self.bootstrap, {cfg.topic: cfg.partitions, cfg.dlq_topic: cfg.partitions, **self.extra_topics})
        self._thread = threading.Thread(target=self._run, name=f"consume-{cfg.topic}", daemon=True)
        self._thread.start()
        if not self._started.wait(cfg.start_timeout_s):
            self.stop()
            raise TimeoutError(f"consumer of {cfg.topic} did not start within {cfg.start_timeout_s:.0f}s")
        if self.error is not None:
            self.stop()
            raise RuntimeError(f"consumer of {cfg.topic} failed to start: {self.error}") from self.error
        log.info("consuming %s as group %s", cfg.topic, cfg.group_id)
        return self

    def _run(self) -> None:
        cfg = self.config
        try:
            consumer = BatchConsumer(self.bootstrap, cfg.topic, cfg.group_id, client_id=cfg.client_id,
                                     max_poll_interval_ms=cfg.max_poll_interval_ms)
        except BaseException as exc:  # reported by start()
            self.error = exc
            self._started.set()
            return
        self._started.set()
        try:
            consumer.run(self._handle, self._stop, max_records=cfg.max_records, timeout_ms=cfg.poll_timeout_ms,
                         on_poison=lambda record, exc: self.dead_letter([Poison.of(record, exc)]),
                         drain_s=cfg.drain_s)
        except BaseException as exc:
            self.error = exc
            log.exception("consumer of %s stopped on an error", cfg.topic)
        finally:
            consumer.close()

    def _handle(self, records: list[Record]) -> None:
        self.dead_letter(self.handler(records))

    def dead_letter(self, poison: Sequence[Poison]) -> None:
        """Copy each poison record to the DLQ (acknowledged before the batch commits)."""
        for p in poison:
            send_to_dlq(self.producer, self.config.dlq_topic, p.record, p.reason, p.error_type,
                        timeout_s=self.config.send_timeout_s)

    def stop(self, timeout: float | None = None) -> bool:
        """Finish (and with drain_s, catch up) and leave the group; True when the thread ended in time."""
        self._stop.set()
        if self._thread is None:
            return True
        timeout = timeout if timeout is not None else self.config.drain_s + 15.0
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("consumer of %s did not stop within %.0fs", self.config.topic, timeout)
            return False
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
