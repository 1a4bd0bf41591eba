"""`fashion bench search --outfits DIR`: FindSimilar on a 3-garment photo as a ratio to a single-garment one.

Shopper photos with three annotated garments and single-garment shop photos from an outfits benchmark
(`fashion synth --benchmark outfits`) are sent alternately, one at a time, from a client process, so drift on a
shared machine moves both alike. Each response says how many garments the detector found; the p50 of each kind
is reported with that count, since a photo whose garments are not all found costs less.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
from rich.console import Console
from rich.table import Table

from fashion.v1 import common_pb2, search_pb2, search_pb2_grpc
from shared.data.outfits import load_outfits


def garment_photos(root: Path, count: int) -> tuple[list[str], list[str]]:
    """(3-garment shopper photos, single-garment shop photos), up to `count` of each, test split first."""
    bench = load_outfits(root)
    ordered = bench.split("test") + bench.split("validation") + bench.split("train")
    three = [str(bench.path(i)) for i in ordered if i.domain == "consumer" and len(i.garments) == 3]
    single = [str(bench.path(i)) for i in ordered if i.domain == "shop"]
    return three[:count], single[:count]


def client_garments(address: str, three: list[str], single: list[str]) -> dict[str, list[tuple[float, int]]]:
    """Concurrency 1, in a client process: alternately a 3-garment and a single-garment photo; (seconds,
    garments found) per call."""
    stub = search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(address))

    def call(path: str) -> tuple[float, int]:
        request = search_pb2.FindSimilarRequest(image=common_pb2.ImageInput(data=Path(path).read_bytes()), top_k=20)
        start = time.perf_counter()
        response = stub.FindSimilar(request, timeout=60)
        return time.perf_counter() - start, len(response.garments)

    call(three[0]), call(single[0])  # warm-up
    out: dict[str, list[tuple[float, int]]] = {"three": [], "single": []}
    for a, b in zip(three, single, strict=False):
        out["three"].append(call(a))
        out["single"].append(call(b))
    return out


def print_garments(measured: dict[str, list[tuple[float, int]]], console: Console) -> dict:
    table = Table(title="FindSimilar p50, 3-garment shopper photo vs single-garment shop photo (concurrency 1)")
    for column in ("photo", "queries", "garments found (mean)", "p50 ms", "p95 ms"):
        table.add_column(column, justify="right")
    result = {}
    for kind, label in (("single", "single garment"), ("three", "3 garments")):
        times = np.array([t for t, _ in measured[kind]])
        found = float(np.mean([n for _, n in measured[kind]]))
        p50, p95 = np.percentile(times, [50, 95])
        result[kind] = {"p50": float(p50), "p95": float(p95), "garments": found, "queries": len(times)}
        table.add_row(label, str(len(times)), f"{found:.2f}", f"{p50 * 1e3:.1f}", f"{p95 * 1e3:.1f}")
    console.print(table)
    ratio = result["three"]["p50"] / result["single"]["p50"]
    console.print(f"3-garment p50 / single-garment p50: {ratio:.2f} (target <= 2)")
    return {**result, "ratio": ratio}
