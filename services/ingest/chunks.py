"""How the ingest core cuts a batch: into chunks, the unit decoded, analysed and written together, and a chunk
into runs of distinct products for the database.

A chunk's decoded pictures stay in memory until it is written, and the pipeline holds two chunks at a time (the
model runs one while the next is decoded), so a chunk is bounded twice: by images (one model batch) and by
decoded pixels. The second bound is what keeps one event of huge pictures from multiplying the worker's memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

W = TypeVar("W")


class _Product(Protocol):
    @property
    def product_id(self) -> str: ...


P = TypeVar("P", bound=_Product)


@dataclass(frozen=True)
class ChunkLimits:
    images: int = 32  # one model batch
    pixels: int = 32_000_000  # decoded pixels (about 96 MB of RGB) held by one chunk


DEFAULT_CHUNK_LIMITS = ChunkLimits()


def loaded_chunks(work: Iterable[W], limits: ChunkLimits, *, images: Callable[[W], int],
                  load: Callable[[W], int]) -> Iterator[list[W]]:
    """Consecutive groups of `work`, each item loaded (`load` decodes it and returns its decoded pixels) just
    before its group is handed out, so decoding stays lazy and pipelined with the consumer of the groups.

    An event is never split. A group never goes over `limits.images` (a chunk of 32 + 3 images made the model
    run a full batch and then a batch of 3: profiled, mean batch 23 instead of 32), unless one event alone has
    more; it closes as soon as its decoded pixels reach `limits.pixels` (known only once decoded).
    """
    chunk: list[W] = []
    count = pixels = 0
    for item in work:
        n = images(item)
        if chunk and count + n > limits.images:
            yield chunk
            chunk, count, pixels = [], 0, 0
        pixels += load(item)
        chunk.append(item)
        count += n
        if pixels >= limits.pixels:
            yield chunk
            chunk, count, pixels = [], 0, 0
    if chunk:
        yield chunk


def distinct_product_runs(work: Iterable[P]) -> list[list[P]]:
    """Consecutive runs of events in which no product appears twice (order kept): the database writes a run
    in a few bulk statements, and a product named twice starts a new run so its later event still wins."""
    runs: list[list[P]] = [[]]
    seen: set[str] = set()
    for w in work:
        if w.product_id in seen:
            runs.append([])
            seen = set()
        runs[-1].append(w)
        seen.add(w.product_id)
    return [run for run in runs if run]
