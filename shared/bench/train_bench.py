"""`fashion bench train`: phase 1's caching throughput against the bare backbone forward, in one run.

Phase 1 decodes each training image, renders its views and runs the frozen backbone on them. Its target is to
keep the backbone busy: throughput (views/s) as a ratio to the same backbone, same engine (eager, channels-last,
inference mode), same batch, on tensors already in memory. The images are cut into rounds and each round times
the bare forward on as many views as it then caches, so drift on a shared machine lands on both alike.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from shared.data.deepfashion import load_benchmark
from shared.fashionnet.pretrained import EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD
from shared.fashionnet.registry import create_model
from shared.training.quickstart import ensure_benchmark
from shared.training.trunk_cache import TrunkCache, build_cache, cache_key

BATCH_VIEWS = 64


@torch.inference_mode()
def _bare_forward(backbone: torch.nn.Module, views: int, size: int) -> float:
    """Seconds for the backbone alone on `views` random images in batches of BATCH_VIEWS."""
    batch = torch.randn(BATCH_VIEWS, 3, size, size).contiguous(memory_format=torch.channels_last)
    start = time.perf_counter()
    done = 0
    while done < views:
        n = min(BATCH_VIEWS, views - done)
        mid, top = backbone(batch[:n])
        top.mean(dim=(2, 3))
        done += n
    return time.perf_counter() - start


def bench_train(workdir: Path, *, items: int = 100, views: int = 4, input_size: int = 224, rounds: int = 4,
                workers: int = 1) -> dict[str, Any]:
    root = ensure_benchmark(workdir / "consumer2shop", "consumer2shop", items)
    bench = load_benchmark(root)
    records = bench.split("train")
    backbone = create_model("fashionnet_efficientnet_lite0", num_categories=1, num_attributes=1).backbone.eval()
    backbone = backbone.to(memory_format=torch.channels_last)
    key = cache_key(backbone, "efficientnet_lite0", input_size, views)
    _bare_forward(backbone, BATCH_VIEWS, input_size)  # warm-up: allocator, oneDNN kernels
    bare_s = cache_s = 0.0
    with tempfile.TemporaryDirectory(prefix="fashion-bench-train-") as tmp:
        for r in range(rounds):
            chunk = records[r::rounds]
            bare_s += _bare_forward(backbone, len(chunk) * views, input_size)
            start = time.perf_counter()
            build_cache(bench, chunk, backbone, cache=TrunkCache(Path(tmp), key), views=views,
                        input_size=input_size, mean=EFFICIENTNET_LITE0_MEAN, std=EFFICIENTNET_LITE0_STD,
                        batch_views=BATCH_VIEWS, workers=workers, progress=False)
            cache_s += time.perf_counter() - start
    total = len(records) * views
    return {"images": len(records), "views": total, "input_size": input_size,
            "bare_views_per_s": total / bare_s, "cache_views_per_s": total / cache_s, "ratio": bare_s / cache_s}


def print_result(result: dict[str, Any], console: Console | None = None) -> None:
    table = Table(title=f"phase 1 (trunk cache) throughput, {result['images']} images x "
                        f"{result['views'] // result['images']} views at {result['input_size']}px, "
                        f"{torch.get_num_threads()} threads",
                  caption="ratio = caching views/s over the bare backbone's views/s in the same run (target >= 0.8)")
    for column in ("bare backbone views/s", "phase 1 views/s", "ratio"):
        table.add_column(column, justify="right")
    table.add_row(f"{result['bare_views_per_s']:.1f}", f"{result['cache_views_per_s']:.1f}", f"{result['ratio']:.2f}")
    (console or Console()).print(table)
