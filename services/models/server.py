"""gRPC servicers of the model services. Logic lives in shared.serving; these only translate messages."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc

from fashion.v1 import (
    analysis_pb2,
    analysis_pb2_grpc,
    attributes_pb2,
    attributes_pb2_grpc,
    detection_pb2,
    detection_pb2_grpc,
    embedding_pb2,
    embedding_pb2_grpc,
    landmark_pb2,
    landmark_pb2_grpc,
)
from shared.errors import InvalidInput
from shared.imaging import ImageIntake, deadline_after
from shared.serving.convert import (
    DEFAULT_THRESHOLD,
    DEFAULT_TOP_K,
    analysis_pb,
    attributes_pb,
    categories_pb,
    garment_pb,
    landmarks_pb,
    model_info,
)
from shared.serving.inputs import ResolvedImage, image_source, resolve_images
from shared.serving.runtime import Analysis, ModelRuntime

MAX_IMAGES_PER_REQUEST = 256


class _ModelServicerBase:
    def __init__(self, runtime: ModelRuntime, intake: ImageIntake,
                 max_images: int = MAX_IMAGES_PER_REQUEST) -> None:
        self.runtime = runtime
        self.intake = intake
        self.max_images = max_images

    def _analyze(self, request, context: grpc.ServicerContext) -> tuple[list[ResolvedImage], list[Analysis | None],
                                                                       object]:
        """Decode every image (bad ones get a per-image error) and analyse the good ones in one batch."""
        deadline = deadline_after(context.time_remaining() if context is not None else None)
        resolved = resolve_images([image_source(m) for m in request.images], self.intake, max_images=self.max_images,
                                  deadline=deadline)
        model = self.runtime.get(request.model_version or None)
        good = [r for r in resolved if r.image is not None]
        timeout = context.time_remaining() if context is not None else None
        analyses = iter(self.runtime.analyze([r.image for r in good], model.version, timeout=timeout))
        results = [next(analyses) if r.image is not None else None for r in resolved]
        return resolved, results, model_info(model.metadata)


def _top_k(request) -> int:
    top_k = request.top_k if request.HasField("top_k") else DEFAULT_TOP_K
    if not 1 <= top_k <= 1000:
        raise InvalidInput(f"expected top_k between 1 and 1000, got {top_k}")
    return top_k


def _threshold(request) -> float:
    threshold = request.threshold if request.HasField("threshold") else DEFAULT_THRESHOLD
    if not 0.0 <= threshold <= 1.0:
        raise InvalidInput(f"expected threshold between 0 and 1, got {threshold}")
    return threshold


class LandmarkServicer(_ModelServicerBase, landmark_pb2_grpc.LandmarkServiceServicer):
    def DetectLandmarks(self, request, context):  # noqa: N802 (gRPC method name)
        resolved, results, info = self._analyze(request, context)
        return landmark_pb2.DetectLandmarksResponse(model=info, results=[
            landmark_pb2.ImageLandmarks(image_id=r.id, error=r.error,
                                        landmarks=landmarks_pb(a.landmarks) if a else [])
            for r, a in zip(resolved, results, strict=True)])


class AttributeServicer(_ModelServicerBase, attributes_pb2_grpc.AttributeServiceServicer):
    def TagAttributes(self, request, context):  # noqa: N802
        top_k, threshold = _top_k(request), _threshold(request)
        resolved, results, info = self._analyze(request, context)
        out = []
        for r, a in zip(resolved, results, strict=True):
            if a is None:
                out.append(attributes_pb2.ImageAttributes(image_id=r.id, error=r.error))
                continue
            categories = categories_pb(a, top_k)
            out.append(attributes_pb2.ImageAttributes(image_id=r.id, category=categories[0], categories=categories,
                                                      attributes=attributes_pb(a, threshold)))
        return attributes_pb2.TagAttributesResponse(model=info, results=out)


class EmbeddingServicer(_ModelServicerBase, embedding_pb2_grpc.EmbeddingServiceServicer):
    def Embed(self, request, context):  # noqa: N802
        resolved, results, info = self._analyze(request, context)
        return embedding_pb2.EmbedResponse(model=info, results=[
            embedding_pb2.ImageEmbedding(image_id=r.id, error=r.error, vector=a.embedding.tolist() if a else [])
            for r, a in zip(resolved, results, strict=True)])


class AnalysisServicer(_ModelServicerBase, analysis_pb2_grpc.AnalysisServiceServicer):
    """All heads from one forward pass: what the ingest worker calls per batch."""

    def Analyze(self, request, context):  # noqa: N802
        top_k, threshold = _top_k(request), _threshold(request)
        resolved, results, info = self._analyze(request, context)
        out = []
        for r, a in zip(resolved, results, strict=True):
            if a is None:
                out.append(analysis_pb2.ImageResult(image_id=r.id, error=r.error))
                continue
            out.append(analysis_pb2.ImageResult(
                image_id=r.id,
                analysis=analysis_pb(a, top_k=top_k, threshold=threshold)
                if (request.want_landmarks or request.want_attributes) else None,
                embedding=a.embedding.tolist() if request.want_embedding else []))
        return analysis_pb2.AnalyzeResponse(model=info, results=out)


class GarmentServicer(_ModelServicerBase, detection_pb2_grpc.GarmentServiceServicer):
    """Where each image's garments are: the detector's output of the same forward pass as the analysis."""

    def DetectGarments(self, request, context):  # noqa: N802
        min_score = request.min_score if request.HasField("min_score") else 0.0
        if not 0.0 <= min_score <= 1.0:
            raise InvalidInput(f"expected min_score between 0 and 1, got {min_score}")
        resolved, results, info = self._analyze(request, context)
        return detection_pb2.DetectGarmentsResponse(model=info, results=[
            detection_pb2.ImageGarments(image_id=r.id, error=r.error, garments=[
                garment_pb(g) for g in (a.garments if a else ()) if g.score >= min_score])
            for r, a in zip(resolved, results, strict=True)])


Registration = tuple[Callable, object]


def model_servicers(runtime: ModelRuntime, intake: ImageIntake,
                    targets: Sequence[str] = ("landmark", "attributes", "embedding", "analysis")) -> list[Registration]:
    """The servicers of `targets`; the analysis target also serves GarmentService (DetectGarments): both answer
    from the same forward pass, so the detector needs no deployment of its own."""
    table = {
        "landmark": (landmark_pb2_grpc.add_LandmarkServiceServicer_to_server, LandmarkServicer),
        "attributes": (attributes_pb2_grpc.add_AttributeServiceServicer_to_server, AttributeServicer),
        "embedding": (embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server, EmbeddingServicer),
        "analysis": (analysis_pb2_grpc.add_AnalysisServiceServicer_to_server, AnalysisServicer),
    }
    out: list[Registration] = [(table[t][0], table[t][1](runtime, intake)) for t in targets]
    if "analysis" in targets:
        out.append((detection_pb2_grpc.add_GarmentServiceServicer_to_server, GarmentServicer(runtime, intake)))
    return out
