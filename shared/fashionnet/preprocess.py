"""The one image -> tensor path, shared by training, evaluation and serving so they never drift apart."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def image_to_array(image: Image.Image, input_size: int) -> np.ndarray:
    """RGB, squashed to input_size x input_size (DeepFashion photos are near-square), HWC uint8."""
    return np.asarray(image.convert("RGB").resize((input_size, input_size), Image.BILINEAR))


def normalize(batch_hwc_uint8: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32, scaled to [0, 1] then standardised."""
    x = torch.from_numpy(np.ascontiguousarray(batch_hwc_uint8)).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


def preprocess(images: list[Image.Image], input_size: int, mean: tuple[float, ...],
               std: tuple[float, ...]) -> torch.Tensor:
    return normalize(np.stack([image_to_array(im, input_size) for im in images]), mean, std)
