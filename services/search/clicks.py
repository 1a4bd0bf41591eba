"""search.clicks on Kafka: the producing sink RecordClick hands clicks to, and the consumer writing them to the DB
(with click_writer.ClickWriter).

Clicks travel as the JSON mapping of fashion.v1.SearchClick, keyed by query_id (one query's clicks stay in
order on one partition). The consumer commits after the database write, and the writes are idempotent
(click_id is derived from query and product), so redelivery never stores a click twice.
"""

from __future__ import annotations

import logging
import threading

from kafka import KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy.orm import Session, sessionmaker

from services.search.click_writer import ClickWriter, click_json
from services.search.core import Click
from services.search.settings import CLICKS_DLQ_TOPIC, CLICKS_TOPIC
from shared.errors import Unavailable
from shared.messaging import BatchConsumer, Record, ensure_topics, send_to_dlq

log = logging.getLogger(__name__)


class KafkaClickSink:
    """`click_sink` for SearchCore: produce the click and wait for the broker's ack, so `accepted` means stored."""

    def __init__(self, producer: KafkaProducer, topic: str = CLICKS_TOPIC, *, timeout_s: float = 10.0) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s

    def __call__(self, click: Click) -> None:
        try:
            self.producer.send(self.topic, key=click.query_id.encode(), value=click_json(click)).get(
                timeout=self.timeout_s)
        except KafkaError as exc:
            raise Unavailable(f"the click was not recorded: the event bus did not acknowledge it within "
                              f"{self.timeout_s:.0f}s ({type(exc).__name__}); retry") from None


class ClickConsumer:
    """A thread consuming `topic` into the database with ClickWriter; poison records go to `dlq_topic`.

    `dlq_producer` is the process's producer (needed for the DLQ; without one, poison is logged and skipped).
    """

    def __init__(
        self,
        bootstrap: str,
        session_factory: sessionmaker[Session],
        *,
        topic: str = CLICKS_TOPIC,
        dlq_topic: str = CLICKS_DLQ_TOPIC,
        group_id: str = "fashion-search-clicks",
        dlq_producer: KafkaProducer | None = None,
        partitions: int = 3,
        ensure: bool = True,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.group_id = group_id
        self.partitions = partitions
        self.ensure = ensure
        self.dlq_producer = dlq_producer
        self.writer = ClickWriter(session_factory, on_poison=self._to_dlq if dlq_producer is not None else None)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ClickConsumer:
        if self._thread is not None:
            raise RuntimeError("click consumer already started")
        if self.ensure:
            ensure_topics(self.bootstrap, {self.topic: self.partitions, self.dlq_topic: self.partitions})
        self._thread = threading.Thread(target=self._run, name="search-clicks", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:  # the consumer is created, used and closed on this one thread (kafka-python is not thread-safe)
            with BatchConsumer(self.bootstrap, self.topic, self.group_id) as consumer:
                consumer.run(self.writer.handle, self._stop)
        except BaseException as exc:
            self.error = exc
            log.exception("click consumer on %s stopped", self.topic)

    def _to_dlq(self, record: Record, exc: Exception) -> None:
        assert self.dlq_producer is not None
        send_to_dlq(self.dlq_producer, self.dlq_topic, record, str(exc), type(exc).__name__)

    def stop(self, timeout: float = 15.0) -> None:
        """Finish the batch in hand, commit, leave the group. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("click consumer did not stop within %.0fs", timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> ClickConsumer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
