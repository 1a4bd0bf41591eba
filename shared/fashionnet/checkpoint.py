"""Checkpoints that carry their own metadata, so a loaded model needs no outside knowledge.

Loading with arguments that contradict the metadata is an error that says what the checkpoint expects,
as torchvision's builders do when kwargs disagree with weights.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.errors import CheckpointMismatch
from shared.fashionnet.backbones import get_backbone_spec
from shared.fashionnet.registry import backbone_of, create_model
from shared.vocabulary import LANDMARK_NAMES, Attribute, Category, ClothesType

FORMAT_VERSION = 1


@dataclass
class ModelMetadata:
    architecture: str  # registry name, e.g. fashionnet_efficientnet_lite0
    version: str  # human/registry version, e.g. "fn-20261127-1530"
    embedding_dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    categories: list[Category]
    attributes: list[Attribute]
    landmarks: tuple[str, ...] = LANDMARK_NAMES
    landmark_pooling: bool = True
    embedding_skip: bool = False  # checkpoints from before the option had none
    embedding_neck: bool = False  # BN-neck before the L2 normalisation; older checkpoints have none
    global_mid: bool = False  # the global branch also reads the pooled stride-16 map
    garment_box: bool = False  # landmark pooling also pools the box the visible landmarks span
    detector: bool = False  # the garment detector head (trained on outfit photos); older checkpoints have none
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    parent_version: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_categories": len(self.categories), "num_attributes": len(self.attributes),
                "embedding_dim": self.embedding_dim, "landmark_pooling": self.landmark_pooling,
                "embedding_skip": self.embedding_skip, "embedding_neck": self.embedding_neck,
                "global_mid": self.global_mid, "garment_box": self.garment_box,
                "detector": self.detector}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["categories"] = [{"name": c.name, "clothes_type": int(c.clothes_type)} for c in self.categories]
        d["attributes"] = [{"name": a.name, "group": a.group} for a in self.attributes]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMetadata:
        d = dict(d)
        d["categories"] = [Category(c["name"], ClothesType(c["clothes_type"])) for c in d["categories"]]
        d["attributes"] = [Attribute(a["name"], a["group"]) for a in d["attributes"]]
        d["mean"], d["std"], d["landmarks"] = tuple(d["mean"]), tuple(d["std"]), tuple(d["landmarks"])
        return cls(**d)


def default_metadata(architecture: str, categories: list[Category], attributes: list[Attribute], *,
                     version: str, embedding_dim: int = 256, input_size: int = 224,
                     landmark_pooling: bool = True, embedding_skip: bool = False,
                     embedding_neck: bool = False, global_mid: bool = False,
                     garment_box: bool = False) -> ModelMetadata:
    spec = get_backbone_spec(backbone_of(architecture))
    return ModelMetadata(architecture=architecture, version=version, embedding_dim=embedding_dim,
                         input_size=input_size, mean=spec.mean, std=spec.std, categories=categories,
                         attributes=attributes, landmark_pooling=landmark_pooling, embedding_skip=embedding_skip,
                         embedding_neck=embedding_neck, global_mid=global_mid, garment_box=garment_box)


def build_model(metadata: ModelMetadata, *, pretrained: bool = True, **kwargs) -> nn.Module:
    return create_model(metadata.architecture, pretrained=pretrained, **metadata.model_kwargs(), **kwargs)


def save_checkpoint(path: str | Path, model: nn.Module, metadata: ModelMetadata, **extra: Any) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves a half-written checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT_VERSION, "metadata": metadata.to_dict(), "state_dict": model.state_dict(),
                **extra}, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointMismatch(f"expected a checkpoint file at {path}, found none")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT_VERSION or "metadata" not in blob:
        raise CheckpointMismatch(f"expected a FashionNet checkpoint (format {FORMAT_VERSION}) at {path}")
    return blob


def load_checkpoint(path: str | Path, **expect: Any) -> tuple[nn.Module, ModelMetadata]:
    """Load a model and its metadata; every keyword is checked against the metadata, never silently applied."""
    blob = read_checkpoint(path)
    metadata = ModelMetadata.from_dict(blob["metadata"])
    check_metadata(metadata, **expect)
    model = build_model(metadata, pretrained=False)
    model.load_state_dict(blob["state_dict"])
    return model.eval(), metadata


def check_metadata(metadata: ModelMetadata, **expect: Any) -> None:
    derived = {"num_categories": len(metadata.categories), "num_attributes": len(metadata.attributes)}
    for key, wanted in expect.items():
        if key in derived:
            have = derived[key]
        elif hasattr(metadata, key):
            have = getattr(metadata, key)
        else:
            raise CheckpointMismatch(f"expected one of {sorted([*derived, *metadata.to_dict()])}, got {key!r}")
        if have != wanted:
            raise CheckpointMismatch(f"the checkpoint was built with {key}={have!r}, but got {key}={wanted!r}")


def imagenet_baseline_checkpoint(trained: str | Path, out: str | Path) -> Path:
    """A servable checkpoint whose embedding is the untrained ImageNet features, for side-by-side comparisons.

    The embedding is the backbone's globally pooled features through a fixed square orthogonal projection
    (``embedding_skip`` with ``embedding_dim`` = the backbone's width, learned part zero), which preserves
    every cosine distance: it ranks exactly as `fashion eval --checkpoint imagenet` does. Landmark,
    category and attribute heads are the trained checkpoint's, so the rest of the system behaves the same.
    """
    blob = read_checkpoint(trained)
    parent = ModelMetadata.from_dict(blob["metadata"])
    width = get_backbone_spec(backbone_of(parent.architecture)).build(None).top_channels
    metadata = dataclasses.replace(parent, version=f"{parent.version}-imagenet", embedding_dim=width,
                                   embedding_skip=True, embedding_neck=False,
                                   parent_version=parent.version,
                                   notes={"baseline": "ImageNet features, global average pooling"})
    model = build_model(metadata, pretrained=True)
    heads = {k: v for k, v in blob["state_dict"].items()
             if not k.startswith(("embedding_head.", "embedding_neck.", "embedding_skip", "backbone."))}
    missing, unexpected = model.load_state_dict(heads, strict=False)
    assert not unexpected, unexpected
    return save_checkpoint(out, model.eval(), metadata)
