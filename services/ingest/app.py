"""The ingest deployable: a consumer-group member on `catalog.uploads` that analyses each product's images and
writes Postgres and Qdrant, dead-letters poison and announces `catalog.indexed`."""

from __future__ import annotations

from services.ingest.consumer import IngestWorker
from services.ingest.core import IngestCore
from services.ingest.settings import IngestSettings
from services.resources import Resources
from shared.config import ImageSettings
from shared.host import Components, Named


def build(settings: IngestSettings, resources: Resources, images: ImageSettings) -> Components:
    sessions, store = resources.sessions(), resources.store()  # the store first: models load its alias's version
    core = IngestCore(resources.analyzer(), sessions, store, images.image_intake(),
                      event_limits=settings.event_limits(), attribute_threshold=settings.ingest_attribute_threshold,
                      analyze_timeout_s=settings.ingest_analyze_timeout_s, chunk_limits=settings.chunk_limits(),
                      fetch_budget_s=settings.ingest_fetch_budget_s)
    bootstrap = resources.bootstrap()
    # A real Kafka keeps what this worker did not consume for the next one; the embedded broker does not.
    config = settings.worker_config(partitions=resources.settings.kafka.kafka_partitions,
                                    drain=resources.broker_pid is not None)
    worker = IngestWorker(core, bootstrap, config, producer=resources.producer())
    return Components(parts=[Named("ingest worker", worker)])
