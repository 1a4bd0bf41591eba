"""`fashion`: the project's command line. Thin: each command parses arguments and calls plain functions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from services.bench_cli import bench_app
from services.console.cli import console_command
from services.reindex_cli import reindex
from shared.errors import FashionError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.add_typer(bench_app, name="bench")
app.command()(reindex)
app.command("console")(console_command)
console = Console(stderr=True)

BENCHMARK_HELP = ("inshop, consumer2shop, attributes, landmarks, outfits (DeepFashion2 layout, several garments "
                  "per photo) or folder (ROOT/PRODUCT_ID/*.jpg)")


@app.command()
def synth(
    benchmark: Annotated[str, typer.Option(help=BENCHMARK_HELP)] = "consumer2shop",
    out: Annotated[Path, typer.Option(help="folder to write the benchmark into")] = Path("var/synth/consumer2shop"),
    items: Annotated[int, typer.Option(min=1, help="number of clothing items")] = 500,
    seed: Annotated[int, typer.Option(help="same seed, same bytes")] = 0,
    image_size: Annotated[int, typer.Option(min=64, max=1024)] = 256,
    workers: Annotated[int | None, typer.Option(help="processes (default: all cores)")] = None,
) -> None:
    """Write a procedural DeepFashion benchmark in the published file formats (no download needed)."""
    from shared.data.synth import generate

    summary = generate(benchmark, out, items, seed, image_size=image_size, workers=workers)
    console.print(f"wrote {summary.images} images of {summary.items} items to {summary.root} "
                  f"in {summary.seconds:.1f}s")


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="benchmark folder (DeepFashion layout, or ROOT/PRODUCT_ID/*.jpg)")],
    out: Annotated[Path, typer.Option(help="run folder: last.pt (resumable) and model.pt")],
    benchmark: Annotated[str | None, typer.Option(help=BENCHMARK_HELP + " (default: detect)")] = None,
    architecture: Annotated[str, typer.Option(help="a name from `fashion models-list`")] =
        "fashionnet_efficientnet_lite0",
    landmark_pooling: Annotated[bool, typer.Option(help="FashionNet's local branch (--no-... = ablation)")] = True,
    embedding_neck: Annotated[bool, typer.Option(help="BatchNorm before the L2 normalisation")] = True,
    embedding_skip: Annotated[bool, typer.Option(help="add a fixed projection of the ImageNet features to the "
                                                      "embedding (not in the paper)")] = False,
    views: Annotated[int, typer.Option(min=1, help="cached views per image: the clean one + augmented ones")] = 4,
    landmark_epochs: Annotated[int, typer.Option(min=0, help="phase 2, stage 1: landmarks + visibility only")] = 5,
    epochs: Annotated[int, typer.Option(min=0, help="phase 2, stage 2: all tasks jointly")] = 60,
    finetune_epochs: Annotated[int, typer.Option(min=0, help="phase 3: also the backbone's last stage")] = 10,
    metric_loss: Annotated[str, typer.Option(help="triplet (batch-hard), softmax (normalised, over item ids)"
                                                  ", supcon or softmax+triplet")] = "softmax+triplet",
    category_weight: Annotated[float, typer.Option(min=0.0, help="0 = no category loss (ablation)")] = 1.0,
    attribute_weight: Annotated[float, typer.Option(min=0.0, help="0 = no attribute loss (ablation)")] = 1.0,
    feature_dropout: Annotated[float, typer.Option(min=0.0, max=0.9, help="dropout on cached features")] = 0.3,
    input_size: Annotated[int, typer.Option(min=32)] = 224,
    embedding_dim: Annotated[int, typer.Option(min=8)] = 256,
    items_per_batch: Annotated[int, typer.Option(min=2, help="P: items per batch")] = 32,
    images_per_item: Annotated[int, typer.Option(min=2, help="K: images per item, shopper and shop")] = 4,
    lr: float = 1e-3,
    finetune_lr: float = 1e-3,
    max_steps_per_epoch: Annotated[int | None, typer.Option(help="cap steps per epoch (quick runs)")] = None,
    cache_dir: Annotated[Path, typer.Option(help="where phase 1 keeps backbone features")] = Path("var/cache/trunk"),
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    workers: Annotated[int, typer.Option(min=0, help="image-decoding processes in phase 1")] = 1,
    seed: int = 0,
    init_checkpoint: Annotated[Path | None, typer.Option(help="fine-tune from this checkpoint (keeps its "
                                                              "landmark, category and attribute heads)")] = None,
    shop_only: Annotated[bool, typer.Option("--shop-only", help="leave consumer photos out of training")] = False,
    detector_epochs: Annotated[int, typer.Option(min=1, help="outfit data: garment detector epochs")] = 16,
    garment_embedding: Annotated[bool, typer.Option(help="outfit data: then fine-tune the embedding on the "
                                                         "garments' crops (with the options above)")] = True,
) -> None:
    """Train FashionNet (cached backbone features, heads trained on them; rerun to resume); on outfit photos
    (DeepFashion2 layout) the garment detector, into a copy of --init-checkpoint."""
    from shared.training.detector import DetectorConfig, is_outfit_data, train_outfits

    # The embedding's recipe, for FashionNet's training and for the outfit run's fine-tuning on garment crops.
    recipe = {"views": views, "epochs": epochs, "finetune_epochs": finetune_epochs, "metric_loss": metric_loss,
              "feature_dropout": feature_dropout, "items_per_batch": items_per_batch,
              "images_per_item": images_per_item, "lr": lr, "finetune_lr": finetune_lr, "device": device,
              "max_steps_per_epoch": max_steps_per_epoch}
    if is_outfit_data(data, benchmark):
        path = train_outfits(data, out, init_checkpoint=init_checkpoint, cache_dir=cache_dir, input_size=input_size,
                             architecture=architecture, workers=workers,
                             config=DetectorConfig(views=views, epochs=detector_epochs, seed=seed,
                                                   garment_embedding=garment_embedding),
                             embedding=recipe)
        console.print(f"checkpoint written to {path}")
        return
    from shared.fashionnet.losses import LossWeights
    from shared.training.train import TrainConfig
    from shared.training.train import train as run_training

    config = TrainConfig(data=data, out=out, benchmark=benchmark, architecture=architecture,
                         landmark_pooling=landmark_pooling, embedding_neck=embedding_neck,
                         embedding_skip=embedding_skip, landmark_epochs=landmark_epochs, input_size=input_size,
                         weights=LossWeights(category=category_weight, attributes=attribute_weight),
                         embedding_dim=embedding_dim, cache_dir=cache_dir, workers=workers, seed=seed,
                         init_checkpoint=init_checkpoint, domains=("shop",) if shop_only else None, **recipe)
    path = run_training(config)
    console.print(f"checkpoint written to {path}")


@app.command("eval")
def evaluate_cmd(
    data: Annotated[Path, typer.Option(help="benchmark folder")],
    checkpoint: Annotated[str, typer.Option(help="model.pt path, or `imagenet` for the untrained baseline")],
    benchmark: Annotated[str | None, typer.Option(help=BENCHMARK_HELP + " (default: detect)")] = None,
    split: Annotated[str, typer.Option(help="test (in-shop: query+gallery), val or train")] = "test",
    json_out: Annotated[Path | None, typer.Option("--json", help="also write flat metrics to this file")] = None,
    input_size: Annotated[int, typer.Option(help="only for --checkpoint imagenet")] = 224,
    batch_size: int = 32,
    device: str = "auto",
    garment_threshold: Annotated[float | None, typer.Option(
        min=0.01, max=1.0, help="outfit data: the score a garment's detection must reach to be searched, "
                                "for retrieval.served (default: FASHION_GARMENT_THRESHOLD, as serving)")] = None,
) -> None:
    """Print the paper's metrics: category, attributes per group, landmarks, retrieval top-k; on outfit photos
    detection AP@0.5 per garment class and per-garment retrieval with detected and ground-truth boxes."""
    from shared.config import ModelSettings
    from shared.training.detector import is_outfit_data
    from shared.training.evaluate import evaluate, print_report, write_json
    from shared.training.outfit_eval import evaluate_outfits

    threshold = garment_threshold if garment_threshold is not None else ModelSettings().garment_threshold
    result = (evaluate_outfits(data, checkpoint, split=split, batch_size=batch_size, threshold=threshold)
              if is_outfit_data(data, benchmark)
              else evaluate(benchmark, data, checkpoint, split=split, input_size=input_size, batch_size=batch_size,
                            device=device))
    print_report(result, Console())
    if json_out is not None:
        write_json(result, json_out)
        console.print(f"metrics written to {json_out}")


@app.command("models-list")
def models_list() -> None:
    """Registered model architectures."""
    from shared.fashionnet import list_models

    for name in list_models():
        typer.echo(name)


@app.command()
def quickstart(
    data: Annotated[Path, typer.Option(help="where the synthetic benchmark goes")] = Path("var/synth"),
    run: Annotated[Path, typer.Option(help="training run folder")] = Path("var/runs/quickstart"),
    items: Annotated[int, typer.Option(min=20)] = 300,
    input_size: Annotated[int, typer.Option(min=64)] = 224,
) -> None:
    """The model alone: synthesise consumer-to-shop data, train, evaluate against the ImageNet baseline."""
    from shared.training.quickstart import run_quickstart

    run_quickstart(data, run, items=items, input_size=input_size, console=Console())


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="data, checkpoint, stores and the result page")] = Path("var/demo"),
    items: Annotated[int, typer.Option(min=20, help="synthetic catalogue items")] = 300,
    checkpoint: Annotated[Path | None, typer.Option(help="serving model.pt (default: train one)")] = None,
) -> None:
    """The whole product end to end: catalogue through Kafka into the stores, consumer photos through
    FindSimilar, consumer-to-shop top-1/top-20 measured through the live system."""
    from services.demo import run_demo

    run_demo(workdir, items=items, checkpoint=checkpoint, console=Console())


def _stack_state() -> dict:
    """The running `fashion up`: the one in FASHION_DATA_DIR, else the one `fashion up --demo` runs."""
    from services.state_file import DEFAULT_DEMO_STACK, live_state
    from shared.config import StoreSettings
    return live_state(StoreSettings().data_dir) or live_state(DEFAULT_DEMO_STACK)


@app.command()
def up(
    target: Annotated[str, typer.Option(help="all (every service and the web console), or a comma list of "
                                             "landmark, attributes, embedding, analysis, search, ingest, admin, "
                                             "console")] = "all",
    port: Annotated[int | None, typer.Option(help="gRPC port (default FASHION_PORT or 50051)")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="serving model.pt (registered on start-up)")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="serve the catalogue and trained model `make demo` left in "
                                                      "--demo-dir")] = False,
    demo_dir: Annotated[Path, typer.Option(help="the demo's workdir")] = Path("var/demo"),
) -> None:
    """Run the services and the web console (FASHION_CONSOLE_PORT, default 8080): by default all in this process,
    with a local Kafka broker."""
    from services.resources import ResourceSettings
    from services.stack import Stack, StackSettings, parse_targets
    from shared.config import GrpcServerSettings, ModelSettings

    overrides_grpc = {"port": port} if port is not None else {}
    overrides_model = {"checkpoint": checkpoint} if checkpoint is not None else {}
    settings = StackSettings(grpc=GrpcServerSettings(**overrides_grpc),
                             resources=ResourceSettings(model=ModelSettings(**overrides_model)))
    if demo:
        from services.demo import demo_stack_settings

        settings = demo_stack_settings(settings, demo_dir)
    def serving(stack: Stack) -> None:
        console.print(f"[bold green]serving[/] {', '.join(stack.targets)} on {stack.address}"
                      + (f"  kafka {stack.bootstrap}" if stack.bootstrap else "")
                      + (f"  db {stack.database_url}" if stack.database_url else "") + "  (Ctrl-C to stop)")
        if stack.console_url:
            console.print(f"[bold green]web console[/] {stack.console_url}")

    Stack(settings, parse_targets(target)).start_and_serve(serving)  # until SIGTERM/SIGINT, drain, stop
    console.print("stopped cleanly")


@app.command()
def publish(
    folder: Annotated[Path, typer.Argument(help="a DeepFashion benchmark folder or a folder of images")],
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap (default: the running `fashion up`)")]
    = None,
    revision: Annotated[str, typer.Option(help="change it to force a re-index of unchanged products")] = "",
) -> None:
    """Turn a folder into catalogue upload events on Kafka (one per product, keyed by product id)."""
    from services.ingest.publish import publish_folder, roots_error
    from services.state_file import stale_state_error
    from shared.config import KafkaSettings, StoreSettings

    state = _stack_state()
    bootstrap = bootstrap or KafkaSettings().kafka_bootstrap or state.get("kafka_bootstrap")
    if not bootstrap:
        stale = stale_state_error(StoreSettings().data_dir)
        raise typer.BadParameter(stale or "no Kafka to publish to: start `fashion up` or pass --bootstrap HOST:PORT")
    if bootstrap == state.get("kafka_bootstrap") and (error := roots_error(folder, state)):
        raise typer.BadParameter(error)  # the local stack's ingest would dead-letter every event
    count = publish_folder(bootstrap, folder, revision=revision)
    console.print(f"published {count} catalogue events to {bootstrap}")


@app.command()
def search(
    image: Annotated[Path, typer.Argument(help="query photo")],
    top_k: Annotated[int, typer.Option(min=1, max=100)] = 10,
    html: Annotated[Path | None, typer.Option(help="write a page with the query and result thumbnails")] = None,
    category: Annotated[list[str] | None, typer.Option(help="only these categories (repeatable)")] = None,
    attribute: Annotated[list[str] | None, typer.Option(help="results must have all of these (repeatable)")]
    = None,
    min_price: float | None = None,
    max_price: float | None = None,
    in_stock: Annotated[bool, typer.Option("--in-stock", help="only products in stock")] = False,
    address: Annotated[str | None, typer.Option(help="SearchService host:port (default: the running stack)")]
    = None,
    region: Annotated[str | None, typer.Option(help="search just this box of the photo: x1,y1,x2,y2 as fractions "
                                                    "(e.g. 0.1,0.4,0.7,1), no garment detection")] = None,
) -> None:
    """Call FindSimilar with a photo and print the ranked products (per detected garment too)."""
    from services.search.client import find_similar_cli, parse_region
    from services.search.settings import SearchSettings

    settings = SearchSettings()
    address = address or _stack_state().get("grpc") or settings.client_address
    find_similar_cli(address, image, top_k=top_k, categories=category or (), attributes=attribute or (),
                     min_price=min_price, max_price=max_price, in_stock_only=in_stock, html=html,
                     timeout=settings.client_timeout_s, console=Console(),
                     region=parse_region(region) if region else None)
    if html is not None:
        console.print(f"page written to {html}")


@app.command("simulate-clicks")
def simulate_clicks_cmd(
    data: Annotated[Path, typer.Argument(help="a DeepFashion consumer-to-shop folder (its consumer photos)")],
    split: Annotated[str, typer.Option(help="whose consumer photos the shoppers use")] = "train",
    sessions: Annotated[int, typer.Option(min=1, help="shopper searches")] = 200,
    seed: int = 0,
    position_bias: Annotated[float, typer.Option(help="click chance (1 + position) ** -bias")] = 0.5,
    noise: Annotated[float, typer.Option(min=0.0, max=1.0, help="chance of clicking a random result")] = 0.05,
    address: Annotated[str | None, typer.Option(help="SearchService host:port (default: the running stack)")]
    = None,
) -> None:
    """Shoppers send consumer photos through FindSimilar and click the true product when it is shown."""
    from services.search.settings import SearchSettings
    from services.simulate import simulate_clicks

    address = address or _stack_state().get("grpc") or SearchSettings().client_address
    summary = simulate_clicks(address, data, split=split, sessions=sessions, seed=seed,
                              position_bias=position_bias, noise=noise)
    console.print(f"{summary.queries} searches, true product shown in {summary.shown}, {summary.clicks} clicks "
                  f"({summary.true_clicks} on the true product) in {summary.seconds:.1f}s")


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, help="training processes (one run trains at a time anyway)")]
    = 1,
) -> None:
    """The Celery retraining worker, on the Redis in FASHION_REDIS_URL (queue FASHION_RETRAIN_QUEUE)."""
    from services.retrain.celery_app import app as celery_app
    from services.retrain.settings import RetrainSettings

    queue = RetrainSettings().retrain_queue
    celery_app.worker_main(["worker", "-Q", queue, "-c", str(concurrency), "--loglevel", "INFO"])


def _admin() -> tuple[str, str | None, float]:
    from services.admin.settings import AdminSettings

    settings = AdminSettings()
    address = _stack_state().get("grpc") or settings.admin_address
    return address, settings.token(), settings.admin_timeout_s


@app.command()
def models() -> None:
    """Model versions in the registry (needs FASHION_ADMIN_TOKEN)."""
    from services.admin.client import models_cli

    address, token, timeout = _admin()
    models_cli(address, token, timeout=timeout, console=Console())


@app.command()
def retrain(
    wait: Annotated[bool, typer.Option("--wait", help="follow the run until it ends")] = False,
    epochs: Annotated[int, typer.Option(min=0, help="0 = the worker's default")] = 0,
    min_improvement: Annotated[float, typer.Option(help="top-20 gain needed to promote (0 = default)")] = 0.0,
    reason: str = "",
) -> None:
    """Trigger retraining from logged clicks; a Celery worker (`fashion worker`) must be running."""
    from services.admin.client import retrain_cli

    address, token, timeout = _admin()
    retrain_cli(address, token, wait, reason=reason, epochs=epochs, min_improvement=min_improvement,
                timeout=timeout, console=Console())


@app.command()
def promote(version: Annotated[str, typer.Argument(help="a version from `fashion models`")]) -> None:
    """Serve VERSION: re-index the catalogue with it if needed, then swap the alias (no downtime)."""
    from services.admin.client import promote_cli

    address, token, timeout = _admin()
    promote_cli(address, token, version, timeout=timeout, console=Console())


@app.command()
def rollback() -> None:
    """Serve the previous version again (its collection is kept, so this is instant)."""
    from services.admin.client import rollback_cli

    address, token, timeout = _admin()
    rollback_cli(address, token, timeout=timeout, console=Console())


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("kafka", "alembic"):  # their INFO is per-connection / per-plugin chatter
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        app()
    except FashionError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
