"""`fashion bench model`: FashionNet throughput per inference engine, against the raw backbone under ONNX Runtime.

The reference is the ImageNet backbone alone (`BackboneEmbedder`: backbone + global pooling) under ONNX Runtime,
the fastest way to run the part every engine must run anyway; the ratio says what FashionNet's branches and the
engine choice cost on top of it. Engines are timed in interleaved rounds at each batch size, so drift from
other work on a shared machine lands on all of them alike.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from shared.fashionnet.checkpoint import load_checkpoint
from shared.fashionnet.inference import (
    EagerEngine,
    InferenceEngine,
    OnnxEngine,
    max_abs_diff,
    physical_cores,
    tolerance_violations,
)
from shared.fashionnet.model import BackboneEmbedder
from shared.fashionnet.registry import create_model

log = logging.getLogger(__name__)

REFERENCE = "backbone onnx (ref)"  # the ImageNet backbone alone; FashionNet rows use engine kinds
EAGER = "eager"
DEFAULT_ARCHITECTURE = "fashionnet_efficientnet_lite0"
DEEPFASHION_CATEGORIES = 50
DEEPFASHION_ATTRIBUTES = 1000


def _load(checkpoint: Path | None) -> tuple[torch.nn.Module, int | None, str]:
    """The model, its checkpoint's input size (None for the default model) and a readable cache key."""
    if checkpoint is None:
        model = create_model(DEFAULT_ARCHITECTURE, pretrained=True, num_categories=DEEPFASHION_CATEGORIES,
                             num_attributes=DEEPFASHION_ATTRIBUTES)
        return model.eval(), None, DEFAULT_ARCHITECTURE
    model, metadata = load_checkpoint(checkpoint)
    return model, metadata.input_size, metadata.version


@contextlib.contextmanager
def _cache_dir(checkpoint: Path | None, cache_dir: Path | None) -> Iterator[Path]:
    """Exports go next to the checkpoint (reused by later runs and by services); a temp dir for the default model."""
    if cache_dir is not None or checkpoint is not None:
        yield Path(cache_dir) if cache_dir is not None else Path(checkpoint).parent
        return
    with tempfile.TemporaryDirectory(prefix="fashion-bench-") as tmp:
        yield Path(tmp)


def _time_slice(engine: InferenceEngine, batch: torch.Tensor, seconds: float, min_iterations: int) -> tuple[int, float]:
    """Run for ~`seconds` and at least `min_iterations`; (iterations, elapsed seconds)."""
    iterations, start = 0, time.perf_counter()
    while True:
        engine.run(batch)
        iterations += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and iterations >= min_iterations:
            return iterations, elapsed


def bench_model(checkpoint: Path | None = None, batch_sizes: Sequence[int] = (1, 32), seconds: float = 5.0,
                input_size: int | None = None, *, rounds: int = 3, min_iterations: int = 3, warmup: int = 2,
                cache_dir: Path | None = None, device: str = "cpu") -> list[dict[str, Any]]:
    """Images/s per engine and batch size, the ratio to the backbone-only ORT reference, and max |diff| vs eager.

    `checkpoint` None benchmarks a freshly built default FashionNet (ImageNet EfficientNet-Lite0, 50 categories,
    1000 attributes as in DeepFashion). `input_size` None means the checkpoint's, else 224. Each engine gets
    ~`seconds` per batch size (split over `rounds` interleaved rounds, at least `min_iterations` runs), after
    `warmup` untimed runs. Rows: engine, batch, images_per_s, ratio_to_reference, max_abs_diff (per output
    field, FashionNet engines only), within_tolerance, iterations, seconds, input_size.
    """
    model, checkpoint_size, cache_key = _load(checkpoint)
    size = input_size or checkpoint_size or 224
    rows: list[dict[str, Any]] = []
    with _cache_dir(checkpoint, cache_dir) as cache:
        log.info("exporting/loading ONNX graphs in %s", cache)
        engines: dict[str, InferenceEngine] = {
            REFERENCE: OnnxEngine.from_model(BackboneEmbedder(copy.deepcopy(model.backbone)).eval(), input_size=size,
                                             cache_dir=cache, cache_key=f"{cache_key}-backbone"),
            EAGER: EagerEngine(model, device=device),
            "channels_last": EagerEngine(model, channels_last=True, device=device),
            "onnx": OnnxEngine.from_model(model, input_size=size, cache_dir=cache, cache_key=cache_key),
        }
        for batch_size in batch_sizes:
            rows += _bench_batch(engines, batch_size, size, seconds, rounds, min_iterations, warmup)
    return rows


def _bench_batch(engines: dict[str, InferenceEngine], batch_size: int, size: int, seconds: float, rounds: int,
                 min_iterations: int, warmup: int) -> list[dict[str, Any]]:
    batch = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(batch_size))
    reference_out = engines[EAGER].run(batch)
    diffs = {name: max_abs_diff(engine.run(batch), reference_out)
             for name, engine in engines.items() if name != REFERENCE}
    for engine in engines.values():
        for _ in range(warmup):
            engine.run(batch)
    names = list(engines)
    totals = {name: [0, 0.0] for name in names}
    per_round, min_per_round = seconds / rounds, -(-min_iterations // rounds)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first each round
            iterations, elapsed = _time_slice(engines[name], batch, per_round, min_per_round)
            totals[name][0] += iterations
            totals[name][1] += elapsed
    throughput = {name: it * batch_size / elapsed for name, (it, elapsed) in totals.items()}
    return [{"engine": name, "batch": batch_size, "images_per_s": throughput[name],
             "ratio_to_reference": throughput[name] / throughput[REFERENCE],
             "max_abs_diff": diffs.get(name), "within_tolerance": None if name not in diffs else
             not tolerance_violations(diffs[name]), "iterations": totals[name][0],
             "seconds": totals[name][1], "input_size": size} for name in names]


def _fmt_diff(diffs: dict[str, float] | None, *names: str) -> str:
    if diffs is None:
        return "-"
    present = [diffs[n] for n in names if n in diffs]
    return f"{max(present):.1e}" if present else "-"


def print_table(rows: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    """Rich table of `bench_model` rows, with the environment the numbers came from as the caption."""
    import onnxruntime

    size = rows[0]["input_size"] if rows else "?"
    table = Table(title=f"FashionNet inference throughput, {size}x{size}",
                  caption=f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
                          f"{onnxruntime.__version__} ({physical_cores()} physical cores). x ref: images/s over "
                          "the backbone alone under ONNX Runtime at the same batch. diff: max |engine - eager| "
                          "on embeddings, landmarks, logits; ok: within ONNX_TOLERANCE")
    for column in ("engine", "batch", "img/s", "x ref", "emb diff", "lmk diff", "logit diff", "ok"):
        table.add_column(column, justify="left" if column == "engine" else "right", no_wrap=True)
    for row in rows:
        diffs = row["max_abs_diff"]
        ok = "-" if row["within_tolerance"] is None else ("yes" if row["within_tolerance"] else "NO")
        table.add_row(row["engine"], str(row["batch"]), f"{row['images_per_s']:.1f}",
                      f"{row['ratio_to_reference']:.2f}", _fmt_diff(diffs, "embedding"),
                      _fmt_diff(diffs, "landmarks"),
                      _fmt_diff(diffs, "visibility_logits", "category_logits", "attribute_logits"), ok)
    (console or Console()).print(table)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print_table(bench_model())
