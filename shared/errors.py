"""Typed domain errors, raised by plain logic and mapped once to gRPC codes / CLI messages at the edges.

Every message says what was expected, so a user can fix the input without reading the code.
"""

from __future__ import annotations

from pathlib import Path


class FashionError(Exception):
    """Base class of every error this project raises on purpose."""


class InvalidInput(FashionError):
    """The caller sent something malformed (maps to INVALID_ARGUMENT)."""


class NotFound(FashionError):
    """An id that does not exist (maps to NOT_FOUND)."""


class TooLarge(FashionError):
    """A payload over a configured limit (maps to RESOURCE_EXHAUSTED)."""


class DataFormatError(InvalidInput):
    """A DeepFashion annotation file does not follow the published format."""

    def __init__(self, file: str | Path, line: int | None, expected: str, got: str | None = None) -> None:
        self.file = str(file)
        self.line = line
        self.expected = expected
        self.got = got
        where = f"{self.file}:{line}" if line is not None else self.file
        message = f"{where}: expected {expected}"
        if got is not None:
            message += f", got {got!r}"
        super().__init__(message)


class CheckpointMismatch(InvalidInput):
    """Arguments that contradict a checkpoint's own metadata."""


class Unauthenticated(FashionError):
    """The caller did not prove who it is (maps to UNAUTHENTICATED)."""


class Unavailable(FashionError):
    """A dependency or the service itself is not ready or is shutting down (maps to UNAVAILABLE; retryable)."""
