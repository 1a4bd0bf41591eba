"""Analysis results <-> fashion.v1 protobuf messages, written once for every service that returns them."""

from __future__ import annotations

from fashion.v1 import common_pb2
from shared.detection.decode import Detection
from shared.fashionnet.checkpoint import ModelMetadata
from shared.serving.runtime import Analysis, LandmarkPrediction
from shared.vocabulary import GARMENT_CLASS_TYPE, GARMENT_CLASSES, VIS_ABSENT, VIS_OCCLUDED, VIS_TRUNCATED, VIS_VISIBLE

VISIBILITY_TO_PROTO = {
    VIS_VISIBLE: common_pb2.VISIBILITY_VISIBLE,
    VIS_OCCLUDED: common_pb2.VISIBILITY_OCCLUDED,
    VIS_TRUNCATED: common_pb2.VISIBILITY_TRUNCATED,
    VIS_ABSENT: common_pb2.VISIBILITY_ABSENT,
}
DEFAULT_TOP_K = 5
DEFAULT_THRESHOLD = 0.5


def model_info(metadata: ModelMetadata) -> common_pb2.ModelInfo:
    return common_pb2.ModelInfo(version=metadata.version, architecture=metadata.architecture,
                                embedding_dim=metadata.embedding_dim)


def landmarks_pb(landmarks: tuple[LandmarkPrediction, ...]) -> list[common_pb2.Landmark]:
    return [common_pb2.Landmark(name=lm.name, x=lm.x, y=lm.y, visibility=VISIBILITY_TO_PROTO[lm.visibility],
                                visibility_score=lm.visibility_score) for lm in landmarks]


def categories_pb(analysis: Analysis, top_k: int) -> list[common_pb2.ScoredLabel]:
    return [common_pb2.ScoredLabel(name=name, group="category", score=score)
            for name, score in analysis.categories[:top_k]]


def attributes_pb(analysis: Analysis, threshold: float) -> list[common_pb2.ScoredLabel]:
    return [common_pb2.ScoredLabel(name=name, group=group, score=score)
            for name, group, score in analysis.attributes_above(threshold)]


def analysis_pb(analysis: Analysis, *, top_k: int = DEFAULT_TOP_K,
                threshold: float = DEFAULT_THRESHOLD) -> common_pb2.ImageAnalysis:
    categories = categories_pb(analysis, top_k)
    return common_pb2.ImageAnalysis(landmarks=landmarks_pb(analysis.landmarks), category=categories[0],
                                    categories=categories, attributes=attributes_pb(analysis, threshold),
                                    garments=[garment_pb(g) for g in analysis.garments])


def box_pb(box: tuple[float, float, float, float]) -> common_pb2.Box:
    return common_pb2.Box(x1=box[0], y1=box[1], x2=box[2], y2=box[3])


def garment_pb(garment: Detection) -> common_pb2.DetectedGarment:
    return common_pb2.DetectedGarment(box=box_pb(garment.box), garment_class=garment.garment_class,
                                      clothes_type=GARMENT_CLASS_TYPE[garment.garment_class].name.lower(),
                                      score=garment.score)


def garment_from_pb(message: common_pb2.DetectedGarment) -> Detection:
    if message.garment_class not in GARMENT_CLASSES:
        raise ValueError(f"unexpected garment class {message.garment_class!r} in a response")
    b = message.box
    return Detection((b.x1, b.y1, b.x2, b.y2), message.garment_class, message.score)
