"""Images entering the system: `ImageIntake` (intake.py) turns a source into a decoded picture under an input
policy (policy.py), reading files and URLs within a deadline (fetch.py) and decoding safely to a working size
(decode.py). Every service reads images through the intake, so its limits and input policy hold everywhere."""

from shared.imaging.decode import ALLOWED_FORMATS, DecodedImage, ImageLimits
from shared.imaging.intake import ImageIntake, ImageSource, deadline_after
from shared.imaging.policy import IntakePolicy, is_url

__all__ = [
    "ALLOWED_FORMATS",
    "DecodedImage",
    "ImageIntake",
    "ImageLimits",
    "ImageSource",
    "IntakePolicy",
    "deadline_after",
    "is_url",
]
