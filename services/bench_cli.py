"""`fashion bench ...`: speed benchmarks, each printing ratios measured side by side in one run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

bench_app = typer.Typer(no_args_is_help=True, help="Speed benchmarks: ratios measured side by side in one run.")


@bench_app.command("model")
def bench_model_cmd(
    checkpoint: Annotated[Path | None, typer.Option(help="default: a fresh DeepFashion-sized FashionNet")] = None,
    seconds: Annotated[float, typer.Option(help="timing budget per configuration")] = 5.0,
    input_size: Annotated[int | None, typer.Option(help="default: the checkpoint's, else 224")] = None,
) -> None:
    """FashionNet forward throughput: eager, channels-last and ONNX Runtime, as ratios to the raw backbone."""
    from shared.bench.model_bench import bench_model, print_table

    print_table(bench_model(checkpoint, seconds=seconds, input_size=input_size))


@bench_app.command("train")
def bench_train_cmd(
    workdir: Annotated[Path, typer.Option(help="where the synthetic catalogue goes")] = Path("var/bench-train"),
    items: Annotated[int, typer.Option(min=10)] = 100,
    views: Annotated[int, typer.Option(min=1)] = 4,
    input_size: Annotated[int, typer.Option(min=32)] = 224,
    workers: Annotated[int, typer.Option(min=0, help="image-decoding processes beside the backbone")] = 1,
) -> None:
    """Phase 1 of `fashion train` (caching backbone features) as a ratio to the bare backbone forward."""
    from shared.bench.train_bench import bench_train, print_result

    print_result(bench_train(workdir, items=items, views=views, input_size=input_size, workers=workers))


@bench_app.command("ingest")
def bench_ingest_cmd(
    workdir: Annotated[Path, typer.Option(help="catalogue, stores and model of the benchmark")] = Path("var/bench"),
    items: Annotated[int, typer.Option(min=10, help="consumer-to-shop items (about 2 shop images each; the "
                                       "default's ~20 s of ingest keeps start-up out of the throughput)")] = 1000,
    checkpoint: Annotated[Path | None, typer.Option(help="default: an untrained serving-shaped model")] = None,
) -> None:
    """Catalogue images/s through Kafka, the model and both stores, as a ratio to the raw forward pass."""
    from services.bench import bench_ingest

    bench_ingest(workdir, items=items, checkpoint=checkpoint, console=Console())


@bench_app.command("search")
def bench_search_cmd(
    workdir: Annotated[Path, typer.Option(help="catalogue, stores and model of the benchmark")] = Path("var/bench"),
    items: Annotated[int, typer.Option(min=10, help="in-shop items (about 4 images each)")] = 1250,
    queries: Annotated[int, typer.Option(min=10)] = 200,
    checkpoint: Annotated[Path | None, typer.Option(help="default: an untrained serving-shaped model")] = None,
    outfits: Annotated[Path | None, typer.Option(help="also 3-garment vs 1-garment photos of this outfits set")] = None,
) -> None:
    """FindSimilar p50/p95/p99 and QPS at concurrency 1 and 8, p50 as a ratio to one query's embedding time."""
    from services.bench import bench_search

    bench_search(workdir, items=items, queries=queries, checkpoint=checkpoint, console=Console(), outfits=outfits)


@bench_app.command("scale")
def bench_scale_cmd(
    workdir: Annotated[Path, typer.Option(help="catalogue, stores and model of the benchmark")] = Path("var/bench"),
    images: Annotated[str, typer.Option(help="catalogue sizes, comma-separated")] = "20000,100000,300000",
    queries: Annotated[int, typer.Option(min=10, help="query photos per size")] = 100,
    int8: Annotated[bool, typer.Option(help="HNSW over int8-quantised vectors (FASHION_QDRANT_INT8)")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="default: an untrained serving-shaped model")] = None,
) -> None:
    """FindSimilar at 20k-300k catalogue images on Qdrant Edge: upserts, start-up, p50/p95 (plain and
    storefront-filtered) as ratios to the Embed RPC, recall@20 against exact search."""
    from services.bench_scale import bench_scale

    sizes = [int(n) for n in images.split(",") if n.strip()]
    bench_scale(workdir, sizes=sizes, queries=queries, int8=int8, checkpoint=checkpoint, json_path=json_out,
                console=Console())
