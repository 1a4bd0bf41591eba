"""Image intake: the one way a service turns an image source (inline bytes or a URI) into a decoded picture.

Ingest (catalogue uploads), re-indexing (stored catalogue URIs), search (shopper photos), the model services and
the search CLI's page all call `ImageIntake.load`, so what may be read, for how long, and what an error may say
are decided here once:

* `IntakePolicy` decides which URIs may be read; inline bytes always may. Its default admits what the system
  always admitted (file paths and file:// URIs anywhere, http(s) URLs to any host). The coming input policy
  (files only under configured catalogue roots after realpath, http(s) only to allow-listed hosts with every
  redirect re-checked, errors that name no server file or network detail) replaces `IntakePolicy.check` and
  `read_uri`, and no caller.
* `deadline` is a `time.monotonic()` instant, the caller's own (e.g. its gRPC deadline, see `deadline_after`):
  callers pass it down, and a fetch never waits past it, nor longer than `ImageLimits.fetch_timeout_s`.
* Decoding is `decode_image` (decode.py); decoding straight to a model's working size (Image.draft / reduce)
  belongs there, behind the same `load`.
"""

from __future__ import annotations

import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from shared.errors import InvalidInput, TooLarge
from shared.imaging.decode import ImageLimits, decode_image

_FILE_SCHEMES = ("", "file")
_HTTP_SCHEMES = ("http", "https")
# A deadline already past still gets this long: the fetch then fails as a timeout, the caller's own error path.
_MIN_TIMEOUT_S = 0.001


@dataclass(frozen=True, slots=True)
class ImageSource:
    """Where an image comes from: inline `data`, or a `uri` (file path, file:// or http(s)://).

    `id` is the caller's name for it (fashion.v1.ImageInput.id). Neither set is the sender's mistake and fails
    at `load`, naming the image; both set is a programming error and fails here.
    """

    data: bytes | None = None
    uri: str | None = None
    id: str = ""

    def __post_init__(self) -> None:
        if self.data is not None and self.uri is not None:
            raise ValueError("an ImageSource has inline data or a uri, not both")


@dataclass(frozen=True, slots=True)
class DecodedImage:
    image: Image.Image  # RGB
    raw: bytes  # what it was decoded from: ingest derives the image id from it, search logs it


@dataclass(frozen=True)
class IntakePolicy:
    """Which URIs an `ImageIntake` may read. The default is the system's behaviour so far: everything it can."""

    allow_files: bool = True
    allow_http: bool = True

    def check(self, uri: str) -> None:
        """InvalidInput when `uri` may not be read here (unknown schemes are `read_uri`'s to refuse)."""
        scheme = urllib.parse.urlparse(uri).scheme
        if scheme in _HTTP_SCHEMES and not self.allow_http:
            raise InvalidInput(f"{uri}: expected inline image data or a file URI; this service fetches no URLs")
        if scheme in _FILE_SCHEMES and not self.allow_files:
            raise InvalidInput(f"{uri}: expected inline image data or an http(s) URL; this service reads no files")


def deadline_after(seconds: float | None) -> float | None:
    """The `deadline` for `ImageIntake.load` of a caller with `seconds` left (None: no deadline of its own)."""
    return None if seconds is None else time.monotonic() + seconds


class ImageIntake:
    """Source -> decoded RGB image under `limits` and `policy`. Stateless: one per process, shared by threads."""

    def __init__(self, limits: ImageLimits | None = None, policy: IntakePolicy | None = None) -> None:
        self.limits = limits or ImageLimits()
        self.policy = policy or IntakePolicy()

    def load(self, source: ImageSource, *, deadline: float | None = None, name: str | None = None) -> DecodedImage:
        """Read `source` (fetching a uri) and decode it; InvalidInput / TooLarge say what was expected.

        `name` is how errors call the image (default: its uri, or "inline data"); `deadline` bounds the fetch.
        """
        name = name or source.uri or "inline data"
        if source.data is not None:
            raw = source.data
        elif source.uri is not None:
            self.policy.check(source.uri)
            raw = read_uri(source.uri, self.limits, timeout=_time_left(deadline))
        else:
            raise InvalidInput(f"{name}: expected `data` (bytes) or `uri`, got neither")
        return DecodedImage(decode_image(raw, self.limits, name=name), raw)


def _time_left(deadline: float | None) -> float | None:
    return None if deadline is None else max(_MIN_TIMEOUT_S, deadline - time.monotonic())


def read_uri(uri: str, limits: ImageLimits | None = None, *, timeout: float | None = None) -> bytes:
    """Bytes behind a file path, file:// or http(s):// URI, reading at most max_bytes + 1.

    No policy here: callers go through `ImageIntake.load`, which checks `IntakePolicy` first. A fetch waits at
    most `timeout` seconds (capped by `limits.fetch_timeout_s`).
    """
    limits = limits or ImageLimits()
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in _HTTP_SCHEMES:
        wait = limits.fetch_timeout_s if timeout is None else min(timeout, limits.fetch_timeout_s)
        try:
            with urllib.request.urlopen(uri, timeout=wait) as response:  # noqa: S310
                data = response.read(limits.max_bytes + 1)
        except OSError as exc:
            raise InvalidInput(f"{uri}: expected a reachable image URL, fetching failed: {exc}") from None
    elif parsed.scheme in _FILE_SCHEMES:
        path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else uri)
        if not path.is_file():
            raise InvalidInput(f"{uri}: expected an existing image file")
        try:
            with path.open("rb") as fh:
                data = fh.read(limits.max_bytes + 1)
        except OSError as exc:  # e.g. a file we may not read: the sender's problem, not the system's
            raise InvalidInput(f"{uri}: expected a readable image file, got {exc}") from None
    else:
        raise InvalidInput(f"{uri}: expected a file path, file:// or http(s):// URI, got scheme {parsed.scheme!r}")
    if len(data) > limits.max_bytes:
        raise TooLarge(f"{uri}: expected at most {limits.max_bytes} bytes")
    return data
