"""Image intake: the one way a service turns an image source (inline bytes or a URI) into a decoded picture.

Ingest (catalogue uploads), re-indexing (stored catalogue URIs), retraining, search (shopper photos), the model
services and the search CLI's page all call `ImageIntake.load`, so what may be read, for how long, and what an
error may say are decided here once:

* `IntakePolicy` (policy.py) decides which URIs may be read; inline bytes always may. The process builds two
  intakes from its settings (`ImageSettings`): the catalogue intake (files under the catalogue roots, allowed
  URLs) for ingest, re-indexing and retraining, and `for_public()` (allowed URLs only, never a file) for the
  RPCs anyone may call: FindSimilar and the four model services.
* `deadline` is a `time.monotonic()` instant, the caller's own (e.g. its gRPC deadline, see `deadline_after`):
  a download ends by then, and by `ImageLimits.fetch_timeout_s` at the latest, however slowly the host sends
  (fetch.py). At most `ImageLimits.max_fetches` downloads run at once per intake; the public intake refuses
  the next one at once (UNAVAILABLE) rather than let slow URLs occupy every gRPC worker.
* Decoding is `decode_image` (decode.py), straight to at most `ImageLimits.max_side` pixels a side.
* Errors name the image as the caller did and say what is expected, the same for every refusal; why a uri was
  refused (missing, outside the roots, host refused or closed, ...) goes to the server log only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from shared.errors import InvalidInput, TooLarge
from shared.imaging.decode import DecodedImage, ImageLimits, decode_image
from shared.imaging.fetch import FetchSlots, FetchTimeout, fetch_url, read_file
from shared.imaging.policy import IntakePolicy, Refused, is_url

log = logging.getLogger(__name__)


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


def deadline_after(seconds: float | None) -> float | None:
    """The `deadline` for `ImageIntake.load` of a caller with `seconds` left (None: no deadline of its own)."""
    return None if seconds is None else time.monotonic() + seconds


class ImageIntake:
    """Source -> decoded RGB image under `limits` and `policy`. One per process and kind (see the module
    docstring), shared by threads. The default policy reads inline bytes only."""

    def __init__(self, limits: ImageLimits | None = None, policy: IntakePolicy | None = None, *,
                 wait_for_fetch: bool = True) -> None:
        self.limits = limits or ImageLimits()
        self.policy = policy or IntakePolicy()
        self.slots = FetchSlots(self.limits.max_fetches, wait=wait_for_fetch)

    def for_public(self) -> ImageIntake:
        """The intake of public RPCs: inline bytes and allowed URLs, never a file, not even under the roots; its
        own download slots, and the next download over them is refused at once."""
        return ImageIntake(self.limits, self.policy.without_files(), wait_for_fetch=False)

    def load(self, source: ImageSource, *, deadline: float | None = None, name: str | None = None) -> DecodedImage:
        """Read `source` (fetching a uri) and decode it; InvalidInput / TooLarge say what was expected.

        `name` is how errors call the image (default: its uri, or "inline data"); `deadline` bounds the fetch.
        """
        name = name or source.uri or "inline data"
        if source.data is not None:
            raw = source.data
        elif source.uri is not None:
            raw = self._read(source.uri, deadline, name)
        else:
            raise InvalidInput(f"{name}: expected `data` (bytes) or `uri`, got neither")
        return decode_image(raw, self.limits, name=name)

    def _read(self, uri: str, deadline: float | None, name: str) -> bytes:
        limits = self.limits
        try:
            if is_url(uri):
                limit = time.monotonic() + limits.fetch_timeout_s
                deadline = limit if deadline is None else min(deadline, limit)
                target = self.policy.url_target(uri)  # a refused URL takes no download slot
                with self.slots.hold(deadline):
                    data = fetch_url(target, self.policy, deadline=deadline, max_bytes=limits.max_bytes)
            else:
                data = read_file(self.policy.file_path(uri), limits.max_bytes)
        except Refused as exc:
            log.info("refused image uri %r: %s", uri, exc)  # the reason is the operator's, never the caller's
            raise InvalidInput(f"{name}: {self.policy.expected()}") from None
        except FetchTimeout as exc:
            log.info("image uri %r: %s", uri, exc)
            raise InvalidInput(f"{name}: expected the image URL to deliver the image before the deadline (at most "
                               f"{limits.fetch_timeout_s:g} s)") from None
        if len(data) > limits.max_bytes:
            raise TooLarge(f"{name}: expected at most {limits.max_bytes} bytes")
        return data
