"""Search service settings: FASHION_SEARCH_* for its own knobs, plus the shared groups it composes."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.config import (
    FashionSettings,
)
from shared.vectorstore import MAX_TOP_K

CLICKS_TOPIC = "search.clicks"
CLICKS_DLQ_TOPIC = "search.clicks.dlq"


class SearchSettings(FashionSettings):
    model_config = SettingsConfigDict(env_prefix="FASHION_SEARCH_", extra="ignore")

    default_top_k: int = Field(10, ge=1, description="results when a request leaves top_k at 0 (search.proto)")
    max_top_k: int = Field(100, ge=1, le=MAX_TOP_K, description="larger top_k is INVALID_ARGUMENT")
    clicks_topic: str = CLICKS_TOPIC
    clicks_dlq_topic: str = CLICKS_DLQ_TOPIC
    clicks_group: str = "fashion-search-clicks"
    clicks_timeout_s: float = Field(10.0, gt=0, description="wait for the broker to acknowledge a click")
    log_linger_ms: float = Field(250.0, ge=0, description="how long the search-log writer waits to batch queries "
                                 "into one transaction (a click on a queued query is written at once)")
    log_max_pending: int = Field(10_000, ge=1, description="queries answered but not yet stored before "
                                 "FindSimilar pushes back with UNAVAILABLE")
    photo_unclicked_retention_h: float = Field(24.0, gt=0, description="stored shopper photos nobody clicked on "
                                               "are dropped after this (they are no training data)")
    photo_retention_days: float = Field(90.0, gt=0, description="clicked shopper photos (training data) are "
                                        "dropped after this")
    photo_max_gib: float = Field(20.0, gt=0, description="past this total, the oldest stored shopper photos go")
    photo_janitor_interval_s: float = Field(600.0, gt=0, description="how often the retention above is applied")
    client_address: str = Field("127.0.0.1:50051", description="where `fashion search` sends FindSimilar")
    client_timeout_s: float = Field(60.0, gt=0, description="deadline of `fashion search`'s call")
