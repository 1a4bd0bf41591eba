"""The ingest worker's own knobs, read once from FASHION_* variables (the shared groups, Kafka, stores, images and
models, are read by the process: services/resources.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from services.ingest.chunks import ChunkLimits
from services.ingest.events import INDEXED_TOPIC, UPLOADS_DLQ_TOPIC, UPLOADS_TOPIC, EventLimits
from shared.config import FashionSettings

if TYPE_CHECKING:
    from services.ingest.consumer import WorkerConfig


class IngestSettings(FashionSettings):
    uploads_topic: str = UPLOADS_TOPIC
    dlq_topic: str = UPLOADS_DLQ_TOPIC
    indexed_topic: str = INDEXED_TOPIC
    ingest_group: str = "fashion-ingest"
    ingest_batch: int = Field(32, ge=1, description="records per ingest batch")
    ingest_poll_timeout_ms: int = Field(500, ge=10, description="longest wait for records per poll")
    ingest_max_poll_interval_ms: int = Field(
        30_000, ge=10_000, le=30_000, description="a batch must be handled within this (Tansu joins stall above 30 s)")
    ingest_max_images_per_event: int = Field(32, ge=1)
    ingest_max_inline_image_bytes: int = Field(2 * 1024 * 1024, ge=1024,
                                               description="inline (base64) image cap; larger images go by uri")
    ingest_attribute_threshold: float = Field(0.5, ge=0.0, le=1.0,
                                              description="attribute score kept as a product attribute")
    ingest_drain_s: float = Field(10.0, ge=0, description="on SIGTERM with the embedded broker (which forgets what "
                                  "was not consumed), keep ingesting until caught up, at most this long")
    ingest_analyze_timeout_s: float = Field(60.0, gt=0, description="deadline of one batched analysis")
    ingest_outbox_sweep_s: float = Field(30.0, gt=0, description="how often a worker sends catalog.indexed "
                                         "announcements left pending that long (a crash, a failed send)")
    ingest_outbox_retention_s: float = Field(86_400.0, ge=0, description="how long sent announcements stay in "
                                             "the outbox table, for inspection")
    ingest_fetch_budget_s: float = Field(15.0, gt=0, description="time one batch may spend reading events with "
                                         "image URLs (events left when it has run out fail to the DLQ); below "
                                         "ingest_max_poll_interval_ms, so slow image hosts cannot overrun it")
    ingest_chunk_pixels: int = Field(32_000_000, ge=1_000_000, description="decoded pixels one chunk of a batch "
                                     "holds (two chunks are in memory at once); one event is never split")

    @model_validator(mode="after")
    def _fetch_budget_fits(self) -> IngestSettings:
        if self.ingest_fetch_budget_s * 1000 >= self.ingest_max_poll_interval_ms:
            raise ValueError(f"expected FASHION_INGEST_FETCH_BUDGET_S below FASHION_INGEST_MAX_POLL_INTERVAL_MS "
                             f"({self.ingest_max_poll_interval_ms} ms), got {self.ingest_fetch_budget_s} s")
        return self

    def chunk_limits(self) -> ChunkLimits:
        return ChunkLimits(pixels=self.ingest_chunk_pixels)

    def event_limits(self) -> EventLimits:
        return EventLimits(max_images=self.ingest_max_images_per_event,
                           max_inline_bytes=self.ingest_max_inline_image_bytes)

    def worker_config(self, partitions: int, *, drain: bool = False) -> WorkerConfig:
        from services.ingest.consumer import WorkerConfig

        return WorkerConfig(topic=self.uploads_topic, dlq_topic=self.dlq_topic, indexed_topic=self.indexed_topic,
                            group_id=self.ingest_group, partitions=partitions,
                            max_records=self.ingest_batch, poll_timeout_ms=self.ingest_poll_timeout_ms,
                            max_poll_interval_ms=self.ingest_max_poll_interval_ms,
                            drain_s=self.ingest_drain_s if drain else 0.0,
                            outbox_sweep_s=self.ingest_outbox_sweep_s,
                            outbox_retention_s=self.ingest_outbox_retention_s)
