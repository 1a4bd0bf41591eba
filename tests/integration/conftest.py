"""Integration fixtures: a real Kafka-protocol broker (Tansu, in memory) for the whole session; a tiny trained
catalogue and a fresh Postgres database for the tests that run `fashion up` as a process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.messaging.broker import LocalBroker

CATALOGUE_ITEMS = 10


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


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny consumer-to-shop benchmark (CATALOGUE_ITEMS items) and a checkpoint trained on it (a few steps of
    both stages); trained once per session, for every test that starts `fashion up` on it."""
    from shared.data.synth import generate
    from shared.training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("c2s") / "data"
    generate("consumer2shop", root, CATALOGUE_ITEMS, seed=11, image_size=96, workers=1, progress=False)
    run = tmp_path_factory.mktemp("run")
    checkpoint = train(TrainConfig(data=root, out=run, benchmark="consumer2shop", input_size=64, embedding_dim=64,
                                   items_per_batch=4, images_per_item=2, landmark_epochs=1, epochs=40, views=2,
                                   finetune_epochs=0, workers=0, cache_dir=run / "cache"), progress=False)
    return root, checkpoint


@pytest.fixture()
def postgres_url():
    from shared.db.session import create_database_if_missing, drop_database

    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/fashion_stack_{uuid.uuid4().hex[:8]}"
    create_database_if_missing(url)
    yield url
    drop_database(url)
