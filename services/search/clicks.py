"""search.clicks on Kafka: the producing sink RecordClick hands clicks to, and the consumer writing them to the DB
(with click_writer.ClickWriter).

Clicks travel as the JSON mapping of fashion.v1.SearchClick, keyed by query_id (one query's clicks stay in
order on one partition). The consumer commits after the database write, and the writes are idempotent
(click_id is derived from query and product), so redelivery never stores a click twice.
"""

from __future__ import annotations

import logging

from kafka import KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy.orm import Session, sessionmaker

from services.search.click_writer import ClickWriter, click_json
from services.search.core import Click
from services.search.settings import CLICKS_DLQ_TOPIC, CLICKS_TOPIC
from shared.errors import Unavailable
from shared.messaging.consumer_thread import ConsumerConfig, ConsumerThread

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
    """A thread consuming `topic` into the database with ClickWriter; poison records go to `dlq_topic`
    (through the shared ConsumerThread, which dead-letters for every consumer)."""

    def __init__(
        self,
        bootstrap: str,
        session_factory: sessionmaker[Session],
        producer: KafkaProducer,
        *,
        topic: str = CLICKS_TOPIC,
        dlq_topic: str = CLICKS_DLQ_TOPIC,
        group_id: str = "fashion-search-clicks",
        partitions: int = 3,
    ) -> None:
        self.writer = ClickWriter(session_factory)
        self.thread = ConsumerThread(bootstrap, ConsumerConfig(topic=topic, dlq_topic=dlq_topic, group_id=group_id,
                                                               partitions=partitions, max_records=100),
                                     self.writer.handle, producer)

    def start(self) -> ClickConsumer:
        self.thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Finish the batch in hand, commit, leave the group. Idempotent."""
        self.thread.stop(timeout)

    @property
    def error(self) -> BaseException | None:
        return self.thread.error

    def is_alive(self) -> bool:
        return self.thread.running

    def __enter__(self) -> ClickConsumer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
