"""`fashion simulate-clicks`: simulated shoppers, so retraining has consumer-to-shop clicks to learn from.

Each shopper sends one consumer photo of a DeepFashion consumer-to-shop folder through the real FindSimilar
API and, when the photo's true product (its item id, the catalogue's product id) is among the results,
clicks it with a probability that falls with its position: ``(1 + position) ** -position_bias`` (0-based
position; bias 0 = always, 0.5 = half as likely at position 3 as at the top). With probability ``noise``
the shopper instead clicks a random shown product, as real click logs hold mis-clicks. Clicks go through
the real RecordClick API. The same seed and catalogue give the same queries and the same clicks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from tqdm.auto import tqdm

from fashion.v1 import common_pb2, search_pb2, search_pb2_grpc
from shared.data.deepfashion import load_benchmark
from shared.errors import InvalidInput
from shared.grpc.client import call_with_deadline, channel
from shared.grpc.errors import error_from_rpc
from shared.grpc.tls import client_credentials

DEFAULT_TOP_K = 20


@dataclass(frozen=True)
class SimSummary:
    queries: int  # FindSimilar calls
    shown: int  # queries whose true product was among the results
    clicks: int  # RecordClick calls accepted
    true_clicks: int  # of those, on the true product
    seconds: float

    @property
    def shown_rate(self) -> float:
        return self.shown / self.queries if self.queries else math.nan


def click_probability(position: int, position_bias: float) -> float:
    """Chance that a shopper clicks the true product shown at 0-based ``position``."""
    return float((1 + position) ** -position_bias)


def choose_click(hits: list[str], true_product: str, rng: np.random.Generator, *, position_bias: float,
                 noise: float) -> int | None:
    """The 0-based position the shopper clicks among ``hits`` (product ids), or None for no click."""
    if not hits:
        return None
    if rng.random() < noise:
        return int(rng.integers(len(hits)))
    if true_product in hits:
        position = hits.index(true_product)
        if rng.random() < click_probability(position, position_bias):
            return position
    return None


def consumer_photos(data_root: Path, split: str) -> list[tuple[Path, str]]:
    """(photo path, true product id) for every consumer photo of ``split``, in the partition file's order."""
    bench = load_benchmark(data_root, "consumer2shop")
    photos = [(bench.path(r), r.item_id) for r in bench.split(split) if r.domain == "consumer" and r.item_id]
    if not photos:
        raise InvalidInput(f"expected consumer photos in split {split!r} of {data_root} "
                           "(a DeepFashion consumer-to-shop folder, e.g. from `fashion synth`), found none")
    return photos


def simulate_clicks(
    address: str,
    data_root: str | Path,
    *,
    split: str = "train",
    sessions: int = 200,
    seed: int = 0,
    position_bias: float = 0.5,
    noise: float = 0.05,
    top_k: int = DEFAULT_TOP_K,
    timeout: float = 30.0,
    progress: bool = True,
) -> SimSummary:
    """Run ``sessions`` shoppers against the search service at ``address``; returns what happened.

    Photos are visited in a seeded random order, cycling when ``sessions`` exceeds them (a repeated photo is
    one training pair after deduplication, so prefer ``sessions <= photos``).
    """
    if sessions < 1:
        raise InvalidInput(f"expected sessions >= 1, got {sessions}")
    if not 0 <= noise <= 1:
        raise InvalidInput(f"expected noise between 0 and 1, got {noise}")
    if position_bias < 0:
        raise InvalidInput(f"expected position_bias >= 0, got {position_bias}")
    photos = consumer_photos(Path(data_root), split)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(photos)) for _ in range(math.ceil(sessions / len(photos)))])
    queries = shown = clicks = true_clicks = 0
    start = time.monotonic()
    with channel(address, credentials=client_credentials()) as ch:
        stub = search_pb2_grpc.SearchServiceStub(ch)
        bar = tqdm(order[:sessions], desc="simulated shoppers", unit="query", disable=not progress)
        for index in bar:
            path, true_product = photos[int(index)]
            request = search_pb2.FindSimilarRequest(
                image=common_pb2.ImageInput(data=path.read_bytes(), id=path.name), top_k=top_k)
            response = _call(stub.FindSimilar, request, timeout)
            queries += 1
            hits = [hit.product_id for hit in response.hits]
            shown += true_product in hits
            position = choose_click(hits, true_product, rng, position_bias=position_bias, noise=noise)
            if position is not None:
                click = search_pb2.RecordClickRequest(query_id=response.query_id, product_id=hits[position],
                                                      position=position)
                if _call(stub.RecordClick, click, timeout).accepted:
                    clicks += 1
                    true_clicks += hits[position] == true_product
            bar.set_postfix(shown=f"{shown / queries:.0%}", clicks=clicks)
    return SimSummary(queries, shown, clicks, true_clicks, time.monotonic() - start)


def _call(method, request, timeout: float):  # noqa: ANN001, ANN202 (generated stub types)
    try:
        return call_with_deadline(method, request, timeout)
    except grpc.RpcError as err:
        raise error_from_rpc(err) from None
