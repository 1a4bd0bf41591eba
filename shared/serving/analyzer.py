"""What search and ingest need from the model side, whether it runs in-process or behind gRPC.

`ModelRuntime` (in-process, the local default) satisfies this protocol; a remote client over the model
services does too, so core logic never knows which deployment it runs in.
"""

from __future__ import annotations

from typing import Protocol

from PIL import Image

from shared.fashionnet.checkpoint import ModelMetadata
from shared.serving.runtime import Analysis


class LoadedModelInfo(Protocol):
    version: str
    metadata: ModelMetadata


class Analyzer(Protocol):
    def analyze(self, images: list[Image.Image], version: str | None = None,
                timeout: float | None = 60.0) -> list[Analysis]:
        """One Analysis per image, in order, all computed by `version` (default: the serving model)."""

    def get(self, version: str | None = None) -> LoadedModelInfo:
        """The loaded model `version` (default: serving); raises NotFound when it is not available."""
