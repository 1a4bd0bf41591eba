"""The model services' deployable: Landmark, Attribute, Embedding and Analysis servicers over one local runtime
(dynamic batching, hot-loaded versions followed by the runtime's ModelWatcher: services/resources.py)."""

from __future__ import annotations

from collections.abc import Sequence

from services.models.server import model_servicers
from services.resources import Resources
from shared.config import ImageSettings
from shared.host import Components


def build(targets: Sequence[str], resources: Resources, images: ImageSettings) -> Components:
    """`targets`: which of the four model services (MODEL_TARGETS) this process serves."""
    return Components(servicers=list(model_servicers(resources.runtime(), images.public_image_intake(), targets)))
