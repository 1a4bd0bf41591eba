"""What search and ingest need from the model side, whether it runs in-process or behind gRPC.

`ModelRuntime` (in-process, the local default) satisfies this protocol; a remote client over the model
services does too, so core logic never knows which deployment it runs in. `analyze_pinned` is how every caller
that must not mix two models' vectors (ingest, re-indexing, search) asks for one version and checks it got it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from PIL import Image

from shared.errors import Unavailable
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


def analyze_pinned(analyzer: Analyzer, images: Sequence[Image.Image], version: str, *,
                   timeout: float | None) -> list[Analysis]:
    """One Analysis per image, all by `version`, or Unavailable (retryable).

    Pinned because a collection holds one model's vectors: the analyzer's default may already be another
    version (a promotion in progress), and a remote analyzer may have unloaded `version` since it was asked.
    A wrong answer is refused here, not written next to the right ones.
    """
    analyses = analyzer.analyze(list(images), version, timeout=timeout)
    if len(analyses) != len(images):
        raise RuntimeError(f"analyzer returned {len(analyses)} results for {len(images)} images")
    wrong = sorted({a.version for a in analyses} - {version})
    if wrong:
        raise Unavailable(f"the analyzer answered with model {', '.join(map(repr, wrong))}, expected {version!r} "
                          "(the version that built the collection in use); retry")
    return analyses
