"""Garment detection: a CenterNet-style head on FashionNet's stride-16 map, its targets, decoding and AP.

The head (``head.GarmentHead``) is part of the serving model, so it is exported to ONNX with it and runs in the
same forward as the whole-image analysis; ``decode`` turns its maps into boxes without torch.
"""

from shared.detection.decode import Detection, decode_maps
from shared.detection.head import GarmentHead

__all__ = ["Detection", "GarmentHead", "decode_maps"]
