"""Images entering the system: `ImageIntake` (intake.py) turns a source into a decoded picture, by way of the
safe decoder (decode.py). Services use the intake; `read_uri` and `decode_image` stay exported for code not yet
switched to it (services/retrain)."""

from shared.imaging.decode import ALLOWED_FORMATS, ImageLimits, decode_image
from shared.imaging.intake import (
    DecodedImage,
    ImageIntake,
    ImageSource,
    IntakePolicy,
    deadline_after,
    read_uri,
)

__all__ = [
    "ALLOWED_FORMATS",
    "DecodedImage",
    "ImageIntake",
    "ImageLimits",
    "ImageSource",
    "IntakePolicy",
    "deadline_after",
    "decode_image",
    "read_uri",
]
