"""FashionNet: the model package (registry, model, checkpoints, losses)."""

from shared.fashionnet.checkpoint import ModelMetadata, default_metadata, load_checkpoint, save_checkpoint
from shared.fashionnet.model import FashionNet, FashionNetOutput
from shared.fashionnet.registry import create_model, list_models

__all__ = ["FashionNet", "FashionNetOutput", "ModelMetadata", "create_model", "default_metadata", "list_models",
           "load_checkpoint", "save_checkpoint"]
