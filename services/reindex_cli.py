"""`fashion reindex`: rebuild a model version's vector collection from the catalogue in the database.

For when the vector store was lost, damaged or migrated: every live catalogue shop image the database lists is
read again from its stored uri, embedded with the version's own checkpoint, and upserted into a fresh
collection; the search index is built once at the end. Points of products deleted meanwhile do not come back.

It runs with the stack stopped when the store is the embedded one (a Qdrant Edge folder belongs to one
process); against a Qdrant server it may run beside the stack, though a promotion is the zero-downtime way to
move the serving alias. The Reindexer (services/admin/reindex.py) does the work, the same one promotion uses.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def reindex(
    version: Annotated[str | None, typer.Argument(help="a version from `fashion models` (default: the serving one)")]
    = None,
    batch_size: Annotated[int, typer.Option(min=1, help="images embedded per batch")] = 64,
) -> None:
    """Rebuild VERSION's vector collection from the catalogue in the database (the stack stopped)."""
    from services.admin.reindex import ReindexProgress
    from services.resources import Resources, ResourceSettings
    from services.state_file import live_state
    from shared.catalog.alias import move_serving_alias
    from shared.db import repository
    from shared.errors import InvalidInput

    settings = ResourceSettings()
    stores = settings.stores
    running = live_state(stores.data_dir)
    if running and not stores.qdrant_url:
        raise InvalidInput(f"`fashion up` (pid {running.get('pid')}) owns the vector store in "
                                 f"{stores.data_dir / 'qdrant'}: stop it first, then run `fashion reindex` again")
    console = Console(stderr=True)
    resources = Resources(settings)
    try:
        sessions, store = resources.sessions(), resources.store()
        with sessions() as session:
            model = (repository.get_model_version(session, version) if version
                     else repository.serving_version(session))
            if model is None:
                raise InvalidInput("expected a serving model version to re-index (or name one): "
                                   "the registry has none")
            serving = repository.serving_version(session)
        serves = serving is not None and serving.version == model.version
        reindexer = _reindexer(resources, model, batch_size)
        dim = int(resources.runtime().get(model.version).metadata.embedding_dim)
        store.drop_collection(model.version, force=True)
        store.ensure_collection(model.version, dim)
        with Progress(TextColumn("[bold]re-indexing {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task(model.version, total=None)

            def shown(progress: ReindexProgress) -> None:
                bar.update(task, completed=progress.done, total=progress.total)

            done = reindexer.reindex(model.version, shown)
        if serves:
            move_serving_alias(store, model.version)
        console.print(f"{model.version}: {store.count(model.version)} vectors from {done.done} catalogue images "
                      f"in {done.seconds:.0f}s" + (f"; {done.skipped} could not be read (see the log)"
                                                    if done.skipped else "")
                      + ("; it serves behind the alias" if serves else ""))
    finally:
        resources.stop()


def _reindexer(resources, model, batch_size: int):  # noqa: ANN001, ANN202 (lazy-imported types)
    """A Reindexer whose runtime holds `model` (loaded from its registered checkpoint)."""
    from services.admin.reindex import Reindexer
    from shared.config import ImageSettings
    from shared.errors import NotFound

    runtime = resources.runtime()
    try:
        runtime.get(model.version)
    except NotFound:
        runtime.load(model.checkpoint_path, make_default=False)
    return Reindexer(runtime, resources.sessions(), resources.store(), batch_size=batch_size,
                     intake=ImageSettings().image_intake())
