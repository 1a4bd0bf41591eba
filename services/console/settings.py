"""Web console settings: FASHION_CONSOLE_* (FASHION_CONSOLE_PORT, ...), read once at start-up."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from shared.config import FashionSettings, split_list

COMPONENT = "web console"  # its name among a process's host components (and in stack.json's "http")


class ConsoleSettings(FashionSettings):
    model_config = SettingsConfigDict(env_prefix="FASHION_CONSOLE_", extra="ignore")

    host: str = Field("127.0.0.1", description="the web console's HTTP address (it has an admin login: keep it "
                                               "on loopback or behind TLS)")
    port: int = Field(8080, ge=0, le=65535, description="the web console's HTTP port (0 = pick a free one)")
    grpc_address: str = Field("127.0.0.1:50051", description="the services `fashion console` talks to (`fashion "
                                                            "up` hosts its console against its own gRPC port)")
    admin_address: str | None = Field(None, description="AdminService host:port when it runs apart from search "
                                                        "(default: grpc_address)")
    metrics_urls: Annotated[list[str], NoDecode] = Field(
        [], description="Prometheus /metrics URLs the health page reads, comma-separated (`fashion up`: its own "
                        "metrics)")
    timeout_s: float = Field(30.0, gt=0, description="deadline of the console's gRPC calls")
    admin_timeout_s: float = Field(600.0, gt=0, description="deadline of promote and rollback (may re-index)")
    max_upload_bytes: int = Field(10 * 2**20, ge=1024, description="largest photo the search page accepts")
    session_ttl_s: float = Field(8 * 3600.0, gt=0, description="how long an admin login lasts")

    @field_validator("metrics_urls", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return split_list(value)
