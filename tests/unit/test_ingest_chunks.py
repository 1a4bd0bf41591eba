"""How the ingest core cuts a batch: chunks bounded by images and decoded pixels, loaded lazily; runs of distinct
products for the database."""

from __future__ import annotations

from dataclasses import dataclass

from services.ingest.chunks import ChunkLimits, distinct_product_runs, loaded_chunks


@dataclass
class Event:
    product_id: str
    images: int
    pixels_each: int = 100


def _cut(events: list[Event], limits: ChunkLimits, loaded: list[str] | None = None) -> list[list[str]]:
    loaded = [] if loaded is None else loaded

    def load(event: Event) -> int:
        loaded.append(event.product_id)
        return event.images * event.pixels_each

    return [[e.product_id for e in chunk]
            for chunk in loaded_chunks(events, limits, images=lambda e: e.images, load=load)]


def test_chunks_never_go_over_the_image_count_and_never_split_an_event() -> None:
    events = [Event("a", 20), Event("b", 12), Event("c", 1), Event("d", 40), Event("e", 0), Event("f", 5)]
    assert _cut(events, ChunkLimits(images=32, pixels=10**9)) == [["a", "b"], ["c"], ["d"], ["e", "f"]]


def test_a_chunk_closes_once_its_decoded_pixels_reach_the_budget() -> None:
    """One event of twelve huge pictures gets a chunk of its own; the small events behind it are not held with it."""
    events = [Event("small", 2), Event("flood", 12, pixels_each=40_000_000), Event("next", 3), Event("last", 3)]
    assert _cut(events, ChunkLimits(images=32, pixels=32_000_000)) == [["small", "flood"], ["next", "last"]]
    assert _cut(events, ChunkLimits(images=32, pixels=150)) == [["small"], ["flood"], ["next"], ["last"]]


def test_events_are_loaded_only_when_their_chunk_is_next() -> None:
    loaded: list[str] = []
    chunks = loaded_chunks([Event("a", 20), Event("b", 20), Event("c", 20)], ChunkLimits(images=32),
                           images=lambda e: e.images, load=lambda e: loaded.append(e.product_id) or 0)
    assert [e.product_id for e in next(chunks)] == ["a"] and loaded == ["a"]  # b's images would not fit with a's
    assert [e.product_id for e in next(chunks)] == ["b"] and loaded == ["a", "b"]


def test_runs_of_distinct_products_keep_the_order() -> None:
    events = [Event(p, 1) for p in ("p", "q", "p", "r", "q", "q")]
    assert [[e.product_id for e in run] for run in distinct_product_runs(events)] == [["p", "q"], ["p", "r", "q"],
                                                                                      ["q"]]
