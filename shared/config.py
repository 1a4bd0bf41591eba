"""Typed settings, read once at start-up from FASHION_* environment variables and passed down.

Each service composes the groups it needs (see services/<name>/settings.py); defaults are the local
single-machine ones, so `fashion up` runs with no configuration at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.imaging import ImageIntake, ImageLimits, IntakePolicy

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/fashion"


def split_list(value: object) -> object:
    """A list setting as the environment gives it: comma-separated (a JSON list works too)."""
    if isinstance(value, str):
        text = value.strip()
        return json.loads(text) if text.startswith("[") else [i.strip() for i in text.split(",") if i.strip()]
    return value


class FashionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FASHION_", extra="ignore")


class GrpcServerSettings(FashionSettings):
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535, description="gRPC port (0 = pick a free one)")
    max_workers: int = Field(16, ge=1)
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    grace_seconds: float = Field(10.0, ge=0, description="SIGTERM drain time for in-flight RPCs")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port (0 = off)")
    tls_cert_file: Path | None = Field(None, description="PEM server certificate (chain); unset = plaintext gRPC")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file")
    tls_client_ca_file: Path | None = Field(None, description="PEM CA whose client certificates are required "
                                                              "(mutual TLS); unset = any client")

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> GrpcServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("expected FASHION_TLS_CERT_FILE and FASHION_TLS_KEY_FILE together, got only one")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("expected FASHION_TLS_CERT_FILE with FASHION_TLS_CLIENT_CA_FILE (mutual TLS needs TLS)")
        return self


class GrpcClientSettings(FashionSettings):
    tls_ca_file: Path | None = Field(None, description="PEM CA that signs the servers' certificates; unset = "
                                                       "plaintext channels")
    tls_client_cert_file: Path | None = Field(None, description="PEM client certificate, for mutual TLS")
    tls_client_key_file: Path | None = Field(None, description="PEM private key of tls_client_cert_file")


class ModelSettings(FashionSettings):
    checkpoint: Path | None = Field(None, description="serving checkpoint (model.pt); default: the registry's")
    engine: str = Field("auto", description="auto, onnx, channels_last or eager")
    device: str | None = Field(None, description="cpu or cuda (default: cuda when present)")
    max_batch: int = Field(32, ge=1, description="dynamic batching: most images per forward pass")
    # The literal, not shared.detection.decode's DEFAULT_THRESHOLD: importing that package loads torch into every
    # process that reads settings. tests/unit/test_detection.py keeps the two equal.
    garment_threshold: float = Field(0.3, gt=0, le=1,
                                     description="lowest detector score a garment is searched at (lower: fewer "
                                                 "garments missed, more boxes)")
    max_wait_ms: float = Field(0.0, ge=0, description="dynamic batching: longest wait to fill a batch (0 = greedy: "
                                                       "a batch is whatever queued while the model was busy)")
    analysis_address: str | None = Field(None, description="host:port of AnalysisService for search, ingest and "
                                                           "re-index; default: the models in this process")
    watch_interval_s: float = Field(5.0, gt=0, description="how often a process with models checks the model "
                                                           "registry for promotions")


class StoreSettings(FashionSettings):
    data_dir: Path = Field(Path("var"), description="local state: SQLite fallback, Qdrant local store, logs")
    database_url: str | None = Field(None, description=f"SQLAlchemy URL; default {DEFAULT_POSTGRES_URL} "
                                                       "when reachable, else SQLite under data_dir")
    qdrant_url: str | None = Field(None, description="Qdrant server URL; default: Qdrant Edge embedded, under "
                                                     "data_dir")
    qdrant_int8: bool = Field(False, description="Qdrant Edge: build HNSW over int8-quantised vectors (faster "
                                                 "indexing, rescored with the originals; see docs/BENCHMARKS.md)")


class KafkaSettings(FashionSettings):
    kafka_bootstrap: str | None = Field(None, description="bootstrap servers; default: start a local broker")
    kafka_partitions: int = Field(3, ge=1, description="partitions of the topics a service creates")


class ImageSettings(FashionSettings):
    """Image limits and the input policy of every ImageIntake in the process (shared/imaging/policy.py)."""

    image_max_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    image_max_pixels: int = Field(40_000_000, ge=1024)
    image_max_side: int = Field(1024, ge=0, description="pictures are decoded straight to at most this many pixels "
                                                        "on their longer side (the model works at 224; 0 = full size)")
    image_roots: Annotated[list[str], NoDecode] = Field(
        ["."], description="catalogue folders (comma-separated or a JSON list) whose files catalogue events may name "
                           "as paths or file:// URIs, checked after resolving symlinks and ..; relative to the "
                           "working directory; empty = no files. FindSimilar and the model services never read files")
    image_url_hosts: Annotated[list[str], NoDecode] = Field(
        [], description="hosts http(s) image URLs may name: host (ports 80/443), host:port or *.domain, "
                        "comma-separated; every redirect is checked again; empty = no URLs")
    image_url_private_networks: Annotated[list[str], NoDecode] = Field(
        [], description="networks (CIDR, comma-separated) an allowed host may resolve into although loopback, "
                        "private or link-local, e.g. 10.0.0.0/8 for an in-cluster image server; empty = public only")
    image_fetch_timeout_s: float = Field(10.0, gt=0, description="longest download of one image URL, redirects "
                                                                 "included (an earlier caller deadline wins)")
    image_max_fetches: int = Field(4, ge=1, description="image URL downloads at once per intake; FindSimilar and the "
                                                        "model services refuse more at once (UNAVAILABLE), so slow "
                                                        "URLs cannot hold every gRPC worker")
    _intake: ImageIntake | None = PrivateAttr(None)
    _public: ImageIntake | None = PrivateAttr(None)

    @field_validator("image_roots", "image_url_hosts", "image_url_private_networks", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return split_list(value)

    @model_validator(mode="after")
    def _policy_parses(self) -> ImageSettings:
        self.image_policy()  # a malformed host or network fails at start-up, naming itself
        return self

    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.image_max_bytes, max_pixels=self.image_max_pixels,
                           max_side=self.image_max_side, fetch_timeout_s=self.image_fetch_timeout_s,
                           max_fetches=self.image_max_fetches)

    def image_policy(self) -> IntakePolicy:
        return IntakePolicy(roots=tuple(Path(r) for r in self.image_roots), url_hosts=tuple(self.image_url_hosts),
                            private_networks=tuple(self.image_url_private_networks))

    def image_intake(self) -> ImageIntake:
        """The catalogue intake of the process (ingest, re-index, retraining): built once, so its download
        slots are the process's."""
        if self._intake is None:
            self._intake = ImageIntake(self.image_limits(), self.image_policy())
        return self._intake

    def public_image_intake(self) -> ImageIntake:
        """The intake of the public RPCs (FindSimilar, the model services): no files; built once."""
        if self._public is None:
            self._public = self.image_intake().for_public()
        return self._public

    def with_roots(self, *roots: Path) -> ImageSettings:
        """These settings with more catalogue roots (tools that publish a folder they made, e.g. the demo)."""
        return type(self)(**{**self.model_dump(), "image_roots": [*self.image_roots, *map(str, roots)]})
