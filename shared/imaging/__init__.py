"""Images entering the system: `ImageIntake` (intake.py) turns a source into a decoded picture, by way of the
safe decoder (decode.py). Every service reads images through the intake, so its limits and input policy hold
everywhere."""

from shared.imaging.decode import ALLOWED_FORMATS, ImageLimits
from shared.imaging.intake import DecodedImage, ImageIntake, ImageSource, IntakePolicy, deadline_after

__all__ = [
    "ALLOWED_FORMATS",
    "DecodedImage",
    "ImageIntake",
    "ImageLimits",
    "ImageSource",
    "IntakePolicy",
    "deadline_after",
]
