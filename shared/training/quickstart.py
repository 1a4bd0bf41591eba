"""The README's main job: synthetic consumer-to-shop data -> FashionNet training -> metrics vs ImageNet."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from shared.data.synth import generate
from shared.training.evaluate import IMAGENET, evaluate, print_report, write_json
from shared.training.train import demo_config, train

BENCHMARK = "consumer2shop"


def ensure_benchmark(root: Path, benchmark: str, items: int, *, seed: int = 0,
                     console: Console | None = None) -> Path:
    """Synthesise `benchmark` into `root` unless a benchmark is already there (demo, quickstart, benchmarks)."""
    if (root / "Eval" / "list_eval_partition.txt").exists():
        if console is not None:
            console.print(f"reusing the synthetic benchmark in {root}")
        return root
    if console is not None:
        console.rule(f"synthesising {items} {benchmark} items into {root}")
    generate(benchmark, root, items, seed=seed)
    return root


def ensure_checkpoint(root: Path, run: Path, *, input_size: int, console: Console,
                      cache_dir: Path | None = None) -> Path:
    """`run/model.pt`, trained on `root` with the default recipe unless it already exists."""
    checkpoint = run / "model.pt"
    if checkpoint.exists():
        console.print(f"using the trained checkpoint {checkpoint}")
        return checkpoint
    console.rule("training FashionNet: backbone features cached once, then every head trained on them")
    config = demo_config(root, run, input_size=input_size)
    if cache_dir is not None:
        config.cache_dir = cache_dir
    return train(config)


def run_quickstart(data: Path, run: Path, *, items: int, input_size: int, console: Console) -> dict:
    root = ensure_benchmark(data / BENCHMARK, BENCHMARK, items, console=console)
    checkpoint = ensure_checkpoint(root, run, input_size=input_size, console=console,
                                   cache_dir=data / "trunk-cache")
    console.rule("evaluating on held-out consumer photos")
    results = {}
    for name, ckpt in (("ImageNet baseline", IMAGENET), ("FashionNet", checkpoint)):
        result = evaluate(BENCHMARK, root, ckpt, input_size=input_size)
        print_report(result, console)
        write_json(result, run / f"eval-{'imagenet' if ckpt == IMAGENET else 'fashionnet'}.json")
        results[name] = result
    table = Table(title="consumer-to-shop retrieval, held-out test items")
    for column in ("model", "top-1", "top-20"):
        table.add_column(column)
    for name, result in results.items():
        table.add_row(name, f"{result['retrieval']['top1']:.3f}", f"{result['retrieval']['top20']:.3f}")
    console.print(table)
    return results
