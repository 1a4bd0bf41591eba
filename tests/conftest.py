"""Fixtures every test layer shares."""

from __future__ import annotations

import os

import pytest

# Two cores here: keep torch from oversubscribing when pytest and helpers share the machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """An untrained FashionNet with the synthetic vocabularies at 64 px: fast to build, load and run."""
    import torch

    from shared.data.synth import ATTRIBUTES, CATEGORIES
    from shared.fashionnet import default_metadata, save_checkpoint
    from shared.fashionnet.checkpoint import build_model
    from shared.vocabulary import Attribute, Category, ClothesType

    torch.manual_seed(0)
    meta = default_metadata("fashionnet_efficientnet_lite0",
                            [Category(c.name, ClothesType(c.clothes_type)) for c in CATEGORIES],
                            [Attribute(name, group) for name, group in ATTRIBUTES],
                            version="tiny-1", embedding_dim=32, input_size=64)
    model = build_model(meta, pretrained=True).eval()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", model, meta)


@pytest.fixture(scope="session")
def perturbed_checkpoint(tiny_checkpoint, tmp_path_factory):
    """A factory: `make(version, seed=1)` saves the tiny checkpoint's weights under another version, with the
    embedding head nudged (seeded) so its vectors differ, and returns the file."""
    import dataclasses

    import torch

    from shared.fashionnet import save_checkpoint
    from shared.fashionnet.checkpoint import load_checkpoint

    def make(version: str, seed: int = 1):
        model, meta = load_checkpoint(tiny_checkpoint)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            weight = model.embedding_head.weight
            weight.add_(0.05 * torch.randn(weight.shape, generator=generator))
        return save_checkpoint(tmp_path_factory.mktemp("perturbed") / "model.pt", model,
                               dataclasses.replace(meta, version=version, parent_version=meta.version))

    return make
