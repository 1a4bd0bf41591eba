"""Integration fixtures: a real Kafka-protocol broker (Tansu, in memory) for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.messaging.broker import LocalBroker


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """One Tansu broker on 127.0.0.1:<free port>; tests isolate themselves with unique topic and group names."""
    log_path = tmp_path_factory.mktemp("kafka") / "tansu.log"
    broker = LocalBroker(log_path=log_path, start_timeout_s=30)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: LocalBroker) -> str:
    return kafka_broker.bootstrap
