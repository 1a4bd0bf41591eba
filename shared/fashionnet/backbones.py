"""Backbones split at stride 16 ("mid", shared by every branch) and stride 32 ("top", global branch).

FashionNet splits the last convolution stage into branches; the landmark and local branches read the
stride-16 map (finer landmark localisation), the global branch goes on through the last stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torchvision
from torch import nn

from shared.errors import CheckpointMismatch
from shared.fashionnet.pretrained import (
    EFFICIENTNET_LITE0_MEAN,
    EFFICIENTNET_LITE0_STD,
    EFFICIENTNET_LITE0_TIMM_NAME,
    efficientnet_lite0_imagenet,
)

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """`mid` maps images to stride-16 features, `top` maps those to stride-32 features."""

    def __init__(self, mid: nn.Module, top: nn.Module, mid_channels: int, top_channels: int) -> None:
        super().__init__()
        self.mid = mid
        self.top = top
        self.mid_channels = mid_channels
        self.top_channels = top_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mid = self.mid(x)
        return mid, self.top(mid)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[[str | Path | None], Backbone]  # weights: "imagenet", a local file, or None (random)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _load_local(module: nn.Module, path: str | Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing:
        raise CheckpointMismatch(f"expected weights for {len(missing)} more tensors (e.g. {missing[0]}) in {path}")
    log.info("loaded backbone weights from %s (%d unused tensors)", path, len(unexpected))


def _efficientnet_lite0(weights: str | Path | None) -> Backbone:
    if weights == "imagenet":
        net = efficientnet_lite0_imagenet()
    else:
        net = timm.create_model(EFFICIENTNET_LITE0_TIMM_NAME, pretrained=False)
        if weights is not None:
            _load_local(net, weights)
    mid = nn.Sequential(net.conv_stem, net.bn1, *net.blocks[:5])
    top = nn.Sequential(*net.blocks[5:], net.conv_head, net.bn2)
    return Backbone(mid, top, mid_channels=112, top_channels=net.num_features)


def _torchvision_weights(name: str, weights: str | Path | None) -> str | Path | None:
    if weights == "imagenet":
        # torchvision would download these; no network at run time, so ask for a local file instead.
        raise CheckpointMismatch(
            f"expected a local weights file for {name} (ImageNet weights cannot be downloaded here); "
            "pass weights_path=... or weights=None for random initialisation"
        )
    return weights


def _vgg16(weights: str | Path | None) -> Backbone:
    weights = _torchvision_weights("vgg16", weights)
    net = torchvision.models.vgg16(weights=None)
    if weights is not None:
        _load_local(net, weights)
    # features[23] is pool4 (stride 16); conv5_x + pool5 form the stride-32 stage.
    return Backbone(net.features[:24], net.features[24:], mid_channels=512, top_channels=512)


def _resnet50(weights: str | Path | None) -> Backbone:
    weights = _torchvision_weights("resnet50", weights)
    net = torchvision.models.resnet50(weights=None)
    if weights is not None:
        _load_local(net, weights)
    mid = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3)
    return Backbone(mid, net.layer4, mid_channels=1024, top_channels=2048)


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec("efficientnet_lite0", _efficientnet_lite0, EFFICIENTNET_LITE0_MEAN,
                                       EFFICIENTNET_LITE0_STD),
    "vgg16": BackboneSpec("vgg16", _vgg16, IMAGENET_MEAN, IMAGENET_STD),
    "resnet50": BackboneSpec("resnet50", _resnet50, IMAGENET_MEAN, IMAGENET_STD),
}


def get_backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise CheckpointMismatch(f"expected a backbone among {sorted(BACKBONES)}, got {name!r}") from None
