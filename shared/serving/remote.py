"""`RemoteAnalyzer`: the `Analyzer` protocol over gRPC `AnalysisService.Analyze`, for the distributed deployment.

Core logic (ingest, search) depends on `Analyzer` only; in the local default it gets the in-process
`ModelRuntime`, in a distributed deployment this client. Unlike the rest of `shared.serving` this module
imports gRPC, so import it explicitly where a remote model is wanted.

Choices:
* Images travel as lossless PNG (fast compression level) by default, so the server decodes the very pixels
  the caller decoded and results match in-process analysis; JPEG is available for thin links.
* Every call asks for category top-k = 1000 (the server's maximum, more than any vocabulary here) and
  attribute threshold 0, so an `Analysis` carries every score, as `ModelRuntime.analyze` does.
* Large batches are split into requests under `max_request_bytes` (the server's message cap is 16 MiB by
  default); the chunks after the first are pinned to the version the first one used.
* gRPC failures become the project's typed errors (`error_from_rpc`): UNAVAILABLE / DEADLINE_EXCEEDED ->
  `Unavailable` (retryable), NOT_FOUND -> `NotFound` (version not loaded), INVALID_ARGUMENT -> `InvalidInput`.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass

import grpc
import numpy as np
from PIL import Image

from fashion.v1 import analysis_pb2, analysis_pb2_grpc, common_pb2
from shared.errors import InvalidInput, Unavailable
from shared.grpc.client import call_with_deadline
from shared.grpc.client import channel as make_channel
from shared.grpc.errors import error_from_rpc
from shared.grpc.tls import client_credentials
from shared.serving.convert import VISIBILITY_TO_PROTO, garment_from_pb
from shared.serving.runtime import Analysis, LandmarkPrediction

PROTO_TO_VISIBILITY = {proto: code for code, proto in VISIBILITY_TO_PROTO.items()}
ALL_CATEGORIES_TOP_K = 1000  # the server's upper bound for top_k
DEFAULT_MAX_REQUEST_BYTES = 12 * 1024 * 1024
_PROBE_SIZE = 32


@dataclass(frozen=True)
class RemoteModelMetadata:
    """What a remote model tells about itself: ModelInfo plus the label names seen in a full-score probe."""

    version: str
    architecture: str
    embedding_dim: int
    categories: tuple[str, ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()  # (name, group)


@dataclass(frozen=True)
class RemoteModel:
    version: str
    metadata: RemoteModelMetadata


def _visibility(value: int) -> int:
    try:
        return PROTO_TO_VISIBILITY[value]
    except KeyError:
        raise ValueError(f"unexpected landmark visibility {value} in a response") from None


def analysis_from_pb(result: analysis_pb2.ImageResult, version: str) -> Analysis:
    """One ImageResult (asked with every head, top_k = all, threshold 0) -> the in-process `Analysis`."""
    a = result.analysis
    return Analysis(
        version=version,
        embedding=np.asarray(result.embedding, dtype=np.float32),
        landmarks=tuple(LandmarkPrediction(lm.name, lm.x, lm.y, _visibility(lm.visibility), lm.visibility_score)
                        for lm in a.landmarks),
        categories=tuple((c.name, c.score) for c in a.categories),
        attributes=tuple((t.name, t.group, t.score) for t in a.attributes),
        garments=tuple(garment_from_pb(g) for g in a.garments),
    )


class RemoteAnalyzer:
    """`Analyzer` over an AnalysisService. `channel_or_address`: a ready channel (kept open) or "host:port"."""

    def __init__(self, channel_or_address: grpc.Channel | str, timeout: float = 60.0, *, image_format: str = "PNG",
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, max_images_per_request: int = 256) -> None:
        if image_format.upper() not in ("PNG", "JPEG"):
            raise ValueError(f"expected image_format PNG or JPEG, got {image_format!r}")
        self._owns_channel = isinstance(channel_or_address, str)
        self._channel = (make_channel(channel_or_address, credentials=client_credentials())
                         if isinstance(channel_or_address, str) else channel_or_address)
        self._stub = analysis_pb2_grpc.AnalysisServiceStub(self._channel)
        self.timeout = timeout
        self.image_format = image_format.upper()
        self.max_request_bytes = max_request_bytes
        self.max_images_per_request = max_images_per_request
        self._models: dict[str, RemoteModel] = {}
        self._lock = threading.Lock()

    def _encode(self, image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        if self.image_format == "PNG":
            image.convert("RGB").save(buffer, format="PNG", compress_level=1)
        else:
            image.convert("RGB").save(buffer, format="JPEG", quality=95)
        return buffer.getvalue()

    def _chunks(self, encoded: list[bytes]) -> list[list[int]]:
        chunks: list[list[int]] = [[]]
        size = 0
        for i, data in enumerate(encoded):
            if chunks[-1] and (size + len(data) > self.max_request_bytes
                               or len(chunks[-1]) >= self.max_images_per_request):
                chunks.append([])
                size = 0
            chunks[-1].append(i)
            size += len(data)
        return chunks

    def _call(self, request: analysis_pb2.AnalyzeRequest, deadline: float) -> analysis_pb2.AnalyzeResponse:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Unavailable("AnalysisService: the deadline ran out before the next request of this batch")
        try:
            return call_with_deadline(self._stub.Analyze, request, remaining)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None

    def _request(self, images: list[common_pb2.ImageInput], version: str | None) -> analysis_pb2.AnalyzeRequest:
        return analysis_pb2.AnalyzeRequest(images=images, want_embedding=True, want_landmarks=True,
                                           want_attributes=True, top_k=ALL_CATEGORIES_TOP_K, threshold=0.0,
                                           model_version=version or "")

    def analyze(self, images: list[Image.Image], version: str | None = None,
                timeout: float | None = 60.0) -> list[Analysis]:
        """One Analysis per image, in order, all from one model version (pinned after the first request)."""
        if not images:
            return []
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        encoded = [self._encode(im) for im in images]
        results: list[Analysis] = []
        for chunk in self._chunks(encoded):
            inputs = [common_pb2.ImageInput(data=encoded[i], id=str(i)) for i in chunk]
            response = self._call(self._request(inputs, version), deadline)
            version = response.model.version
            self._remember(response.model)
            if len(response.results) != len(chunk):
                raise RuntimeError(f"AnalysisService returned {len(response.results)} results for {len(chunk)} images")
            for i, result in zip(chunk, response.results, strict=True):
                if result.error:
                    raise InvalidInput(f"image #{i}: the analysis service rejected it: {result.error}")
                results.append(analysis_from_pb(result, version))
        return results

    def _remember(self, info: common_pb2.ModelInfo, labels: analysis_pb2.ImageResult | None = None) -> RemoteModel:
        with self._lock:
            known = self._models.get(info.version)
            if known is not None and (labels is None or known.metadata.categories):
                return known
            categories = tuple(sorted(c.name for c in labels.analysis.categories)) if labels else ()
            attributes = tuple(sorted((a.name, a.group) for a in labels.analysis.attributes)) if labels else ()
            model = RemoteModel(info.version, RemoteModelMetadata(info.version, info.architecture, info.embedding_dim,
                                                                  categories, attributes))
            self._models[info.version] = model
            return model

    def get(self, version: str | None = None) -> RemoteModel:
        """The remote model `version` (default: the serving one, asked afresh since promotion may change it).

        A known explicit version is answered from cache; otherwise one tiny probe image is analysed, which
        also fills the label vocabularies. Raises NotFound when the server has not loaded `version`.
        """
        if version is not None:
            with self._lock:
                known = self._models.get(version)
            if known is not None and known.metadata.categories:
                return known
        probe = Image.new("RGB", (_PROBE_SIZE, _PROBE_SIZE), (128, 128, 128))
        request = self._request([common_pb2.ImageInput(data=self._encode(probe), id="probe")], version)
        response = self._call(request, time.monotonic() + self.timeout)
        result = response.results[0] if response.results else None
        return self._remember(response.model, result if result is not None and not result.error else None)

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

