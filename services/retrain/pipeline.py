"""One training run from start to verdict, its steps in order. The Celery task (``tasks.py``) calls
:func:`run_training`; nothing here knows about Celery.

A run moves ``queued -> training -> evaluating -> reindexing`` (accepted) or ``rejected`` / ``failed``. This
module stops at ``reindexing``: the promotion code, in the process that owns the vector store, re-indexes the
catalogue with the candidate, swaps the alias and marks the run ``promoted``. Every write to the run row
goes through ``runs.py``; the steps are ``pairs.py`` (click pairs and their images), ``finetune.py`` and
``gate.py``.

Everything is deterministic per ``RetrainConfig.seed``, so a redelivered task (a worker died) resumes from
``last.pt`` and replays the same batches.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session, sessionmaker
from torch import nn

from services.retrain import runs
from services.retrain.config import RetrainConfig
from services.retrain.finetune import Progress, ProgressCallback, finetune
from services.retrain.gate import Encoder, audit_photos, evaluate, gate
from services.retrain.pairs import ImageBank, build_pairs, usable_pairs
from shared.config import ImageSettings
from shared.db.models import RunState
from shared.errors import FashionError, InvalidInput, Unavailable
from shared.fashionnet.checkpoint import ModelMetadata, load_checkpoint, save_checkpoint
from shared.imaging import ImageIntake
from shared.training.train import resolve_device

log = logging.getLogger(__name__)


def run_training(
    run_id: str,
    *,
    sessions: sessionmaker[Session],
    runs_dir: Path,
    device: str = "auto",
    intake: ImageIntake | None = None,
    progress_cb: ProgressCallback | None = None,
    progress_bar: bool = True,
    cache_dir: Path | None = None,
) -> RunState:
    """Train, evaluate and judge one run; returns its state afterwards (idempotent on ``run_id``).

    A run already past training returns its state untouched. Data problems (too few pairs, no serving model,
    a broken checkpoint) mark the run ``failed`` with the error's message; :class:`Unavailable` and
    database/Redis errors propagate untouched for the caller to retry (the run resumes from ``last.pt``).
    Backbone features are cached in ``cache_dir`` (default ``runs_dir/trunk-cache``), shared by every run:
    the next run on the same serving model reads its catalogue images' features from there.
    """
    intake = intake or ImageSettings().image_intake()  # the same limits (and input policy) as the services
    start = runs.start_run(sessions, run_id)
    if start.state not in runs.TRAINING_STATES:
        return start.state
    try:
        return _train_and_judge(run_id, sessions=sessions, config=start.config, base_version=start.base_version,
                                base_path=start.base_path, run_dir=Path(runs_dir).resolve() / run_id,
                                device=resolve_device(device), intake=intake, progress_cb=progress_cb,
                                progress_bar=progress_bar,
                                cache_dir=Path(cache_dir or Path(runs_dir) / "trunk-cache").resolve())
    except Unavailable:
        raise
    except FashionError as exc:
        log.warning("training run %s failed: %s", run_id, exc)
        return runs.fail_run(sessions, run_id, str(exc))


def _train_and_judge(run_id: str, *, sessions: sessionmaker[Session], config: RetrainConfig, base_version: str,
                     base_path: str, run_dir: Path, device: torch.device, intake: ImageIntake,
                     progress_cb: ProgressCallback | None, progress_bar: bool, cache_dir: Path) -> RunState:
    with sessions() as session:
        split = build_pairs(session, holdout_fraction=config.holdout_fraction, min_pairs=config.min_pairs)
    model, metadata = load_checkpoint(base_path)
    bank = ImageBank(sessions, metadata.input_size, intake)
    train_pairs = usable_pairs(split.train, bank)
    if len(train_pairs) < 2:
        raise InvalidInput(f"expected at least 2 training pairs with readable images, found {len(train_pairs)} of "
                           f"{len(split.train)}: check the catalogue images' uris")
    history = finetune(run_id, sessions=sessions, model=model, metadata=metadata, base_version=base_version,
                       pairs=train_pairs, bank=bank, config=config, run_dir=run_dir, device=device,
                       progress_cb=progress_cb, progress_bar=progress_bar, cache_dir=cache_dir)

    serving_version, serving_path = runs.start_evaluation(sessions, run_id, base_version=base_version,
                                                          base_path=base_path)
    serving_model, serving_meta = load_checkpoint(serving_path)
    encoders = {"candidate": Encoder(model, metadata, device), "serving": Encoder(serving_model, serving_meta, device)}
    tick = (lambda: progress_cb(Progress(run_id, config.epochs, config.epochs, 0, 0, float("nan")))
            ) if progress_cb is not None else None
    scores = evaluate(encoders, split.holdout, sessions, intake, tick=tick)
    judged = scores
    metrics: dict[str, Any] = {**scores, "pairs": {"train": len(train_pairs), "holdout": len(split.holdout)}}
    if config.audit_data:
        audit = audit_photos(config.audit_data)
        judged = evaluate(encoders, audit, sessions, intake, tick=tick)
        metrics["audit"] = {**judged, "photos": len(audit)}
    decision = gate(judged["candidate"], judged["serving"], config.min_improvement)
    metrics["gate"] = {"min_improvement": config.min_improvement, "accepted": decision.accepted,
                       "on": "audit" if config.audit_data else "held-out clicks"}
    log.info("training run %s %s", run_id, decision.message)
    candidate = _save_candidate(run_id, model=model, metadata=metadata, history=history,
                                serving_version=serving_version, metrics=metrics, run_dir=run_dir)
    return runs.record_outcome(sessions, run_id, candidate, accepted=decision.accepted, metrics=metrics,
                               message=decision.message)


def _save_candidate(run_id: str, *, model: nn.Module, metadata: ModelMetadata, history: list[dict],
                    serving_version: str, metrics: dict[str, Any], run_dir: Path) -> runs.Candidate:
    """The fine-tuned model as a serving-format checkpoint (``run_dir/model.pt``), rejected ones too: kept for
    inspection. Its metadata names the run, the model it was tuned from and the evaluation's numbers."""
    version = runs.candidate_version(run_id)
    candidate_meta = dataclasses.replace(
        metadata, version=version, parent_version=serving_version,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        notes={"run_id": run_id, "history": history, "metrics": metrics, "fine_tuned_from": metadata.version})
    path = save_checkpoint(run_dir / "model.pt", model.cpu().eval(), candidate_meta)
    return runs.Candidate(version, str(path), candidate_meta.architecture, candidate_meta.embedding_dim,
                          serving_version)
