"""The README's main job: synthetic consumer-to-shop data -> FashionNet training -> metrics vs ImageNet."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from shared.data.synth import generate
from shared.training.evaluate import IMAGENET, evaluate, print_report, write_json
from shared.training.train import cpu_budget_config, train

BENCHMARK = "consumer2shop"


def run_quickstart(data: Path, run: Path, *, items: int, epochs: int, input_size: int, console: Console) -> dict:
    root = data / BENCHMARK
    if not (root / "Eval" / "list_eval_partition.txt").exists():
        console.rule(f"1/3 synthesising {items} consumer-to-shop items into {root}")
        generate(BENCHMARK, root, items, seed=0)
    else:
        console.print(f"reusing the synthetic benchmark in {root}")
    console.rule("2/3 training FashionNet (landmarks first, then all tasks)")
    checkpoint = run / "model.pt"
    if not checkpoint.exists():
        train(cpu_budget_config(root, run, input_size=input_size, epochs=epochs))
    console.rule("3/3 evaluating on held-out consumer photos")
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
