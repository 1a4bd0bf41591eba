"""Admin settings (FASHION_* variables), read once at start-up and passed down."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from services.ingest.events import UPLOADS_DLQ_TOPIC
from services.search.settings import CLICKS_DLQ_TOPIC
from shared.config import FashionSettings, split_list


class AdminSettings(FashionSettings):
    admin_token: SecretStr | None = Field(
        None, description="bearer token every AdminService call must carry; unset = admin API disabled")
    promotion_batch: int = Field(64, ge=1, le=1024, description="images per analyze call while re-indexing")
    promotion_analyze_timeout_s: float = Field(60.0, gt=0, description="deadline of one batched analysis while "
                                                                       "re-indexing")
    promotion_poll_s: float = Field(5.0, gt=0, description="how often the promotion worker looks for runs to promote")
    preload_wait_s: float = Field(120.0, ge=0, description="longest wait for a remote model service to load a "
                                                           "version before it is promoted")
    admin_address: str = Field("127.0.0.1:50051", description="where `fashion models/retrain/promote` connect")
    admin_timeout_s: float = Field(600.0, gt=0, description="deadline of an admin call (a promotion may re-index)")
    admin_dlq_topics: Annotated[list[str], NoDecode] = Field(
        [UPLOADS_DLQ_TOPIC, CLICKS_DLQ_TOPIC], description="dead-letter topics ListDeadLetters reads, comma-separated "
        "(the ingest and click consumers' FASHION_DLQ_TOPIC and FASHION_SEARCH_CLICKS_DLQ_TOPIC)")
    admin_dlq_timeout_s: float = Field(10.0, gt=0, description="longest ListDeadLetters spends reading the broker")

    @field_validator("admin_dlq_topics", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return split_list(value)

    def token(self) -> str | None:
        """The configured token, or None when unset or empty (admin disabled, never open)."""
        value = self.admin_token.get_secret_value() if self.admin_token is not None else ""
        return value or None
