"""Fine-tuning the serving model on click pairs: what trains, the batches, the loop (progress goes through runs).

Training signal (the paper's consumer-to-shop setting): the anchor is the shopper's own photo, the positive an
image of the product they clicked, the negatives images of products shown above or around it that they
skipped (hard negatives), plus every other product in the batch (in-batch negatives). The project's
``batch_hard_triplet_loss`` mines the hardest of each per anchor.

What is unfrozen (``RetrainConfig.unfreeze``): by default only the embedding projection (``embedding_head``
and, when present, ``embedding_skip``); ``"fusion"`` adds the fusion layer and both branches, ``"top"`` also
the last backbone stage (at ``backbone_lr_scale`` x the learning rate). Measured on this machine: a FashionNet
trained on shop photos only (synthetic In-shop, 120 items, 96 px, ``fashion train`` defaults) serving a
synthetic consumer-to-shop catalogue of 200 products; every consumer photo searched once, its true product
clicked wherever shown (5% random clicks): 414 click pairs, 331 trained on, the newest 83 held out; 4 epochs
of 16 pairs with 2 hard negatives each, every trained parameter at the lr shown; s/step = one step on 64
images, 2 CPU threads:

=====================  ======  =====  ======  ======  ==========================================
unfreeze               lr      top-1  top-20  s/step  catalogue images whose category is unchanged
=====================  ======  =====  ======  ======  ==========================================
(serving, no tuning)   -       0.000  0.193   -       1.00
embedding              1e-3    0.012  0.337   0.19    1.00 (bit-identical, by construction)
embedding              1e-4    0.000  0.241   0.19    1.00
top                    1e-4    0.096  0.373   0.35    0.48
top + distill 1.0      1e-4    0.036  0.241   0.61    0.97
=====================  ======  =====  ======  ======  ==========================================

(``fusion``, on a smaller log of 133 / 33 pairs: top-20 unchanged at 0.303, categories unchanged 0.79.)
The s/step column was measured when every step ran the whole model on the pixels; see below for today's.

Training runs on cached backbone features (``services/retrain/features.py``). No level trains the backbone's
stride-16 stage, and ``embedding`` / ``fusion`` none of it, so the backbone's output for an image never changes
during a run: it now runs once per distinct image the run may draw (plain and mirrored, as batches mirror rows
at random), before the first step; the features are kept in memory and in ``RUNS_DIR/trunk-cache`` (keyed by
backbone weights and input size, named by a hash of the pixels, float16), so a resumed run and the next run on
the same serving model read them back instead of recomputing. Every step runs ``model.forward_trunk(mid,
pooled)`` (``top``: the last stage itself on the cached stride-16 map), the teacher too; the rows and random
draws are the same as before, the outputs equal up to float16 rounding. The evaluation gate still embeds full
images. Measured with ``OMP_NUM_THREADS=1 .venv/bin/python scripts/retrain_step_time.py --threads 1 --unfreeze
LEVEL [--distill 0]`` (40 synthetic items at 96 px, 63 click pairs, 3 epochs of 4 steps on 64 images; the
"before" numbers with the same script on the previous commit; 1 thread, because this machine's 2 cores were
shared with another job, which made 2-thread timings vary 5-fold from run to run), median s/step before ->
after: ``embedding`` 0.18-0.23 -> 0.016, ``fusion`` + distill 0.39-0.40 -> 0.059, ``top`` 0.35-0.38 -> 0.23,
``top`` + distill 0.51-0.57 -> 0.24 (``top`` keeps its last stage's forward and backward). The one-off feature
pass (133 images x 2 renderings) adds about 0.9 s before the first step; the whole ``finetune`` went from
2.5-3.0 s to 1.4 s (``embedding``) and from 6.6-7.4 s to 4.3-4.4 s (``top`` + distill).

Why the embedding projection by default: it wins about 80% of the top-20 gain of unfreezing the last backbone
stage (+14 vs +18 points) at half the cost per step, and leaves every other head bit-identical. The fused
features also feed the category and attribute heads, for which clicks carry no labels: unfreezing the
backbone changed the predicted category of half the catalogue, i.e. it would silently change the categories
and attributes products are stored and filtered with. Distilling the heads towards the serving model
(``distill``, applied automatically beyond ``"embedding"``) keeps 97% of categories but gives back most of
the gain at this weight; ``"top"`` stays selectable for large click logs, where the trade may differ.

Everything runs in eval mode (BatchNorm statistics frozen, no dropout): click batches are small and their
statistics are not the catalogue's. The whole run is deterministic per ``seed``, so a resumed run replays the
same batches.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session, sessionmaker
from torch import nn
from tqdm.auto import tqdm

from services.retrain import runs
from services.retrain.config import UNFREEZE, RetrainConfig
from services.retrain.features import TrunkFeatures, uses_cached_features
from services.retrain.pairs import ImageBank
from shared.db.repository import ClickPair
from shared.errors import InvalidInput
from shared.fashionnet.checkpoint import ModelMetadata, read_checkpoint, save_checkpoint
from shared.fashionnet.losses import batch_hard_triplet_loss, distillation_loss, supervised_contrastive_loss
from shared.fashionnet.model import FashionNetOutput
from shared.fashionnet.preprocess import normalize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    run_id: str
    epoch: int  # 0-based epoch in progress
    epochs: int
    step: int
    steps: int
    loss: float


ProgressCallback = Callable[[Progress], None]


def prepare_for_finetuning(model: nn.Module, config: RetrainConfig) -> list[dict[str, Any]]:
    """Freeze everything but the ``unfreeze`` level's parameters; the optimiser's parameter groups.

    Backbone parameters learn at ``backbone_lr_scale`` x ``lr`` (as in ``fashion train``): they start from
    features worth keeping, the heads from a projection worth moving.
    """
    prefixes = UNFREEZE[config.unfreeze]
    heads: list[nn.Parameter] = []
    backbone: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(prefixes))
        if param.requires_grad:
            (backbone if name.startswith("backbone.") else heads).append(param)
    if not heads and not backbone:
        raise InvalidInput(f"unfreeze={config.unfreeze!r} leaves no trainable parameter in this model")
    groups = [{"params": heads, "lr": config.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": config.lr * config.backbone_lr_scale})
    return groups


def epoch_batches(num_pairs: int, config: RetrainConfig, epoch: int) -> list[list[int]]:
    """Pair indices per step, deterministic per (seed, epoch); a last batch of one pair is dropped."""
    order = np.random.default_rng([config.seed, epoch]).permutation(num_pairs)
    size = config.batch_pairs
    batches = [order[i:i + size].tolist() for i in range(0, num_pairs, size)]
    batches = [b for b in batches if len(b) >= 2]
    if config.max_steps_per_epoch is not None:
        batches = batches[:config.max_steps_per_epoch]
    return batches


Row = tuple[str, bool]  # (image key, mirrored)


def triplet_rows(pairs: Sequence[ClickPair], bank: ImageBank, config: RetrainConfig, rng: np.random.Generator,
                 readable: Callable[[str], bool]) -> tuple[list[Row], torch.Tensor]:
    """Rows (anchor photos, a positive image each, hard negatives) as (image key, mirrored), and their labels.

    Anchors and positives of one product share a label; batch-hard mining then takes, per anchor, its
    positive and the closest image of any other product in the batch (skipped ones and in-batch ones).
    ``readable`` says which images decode (the bank's pixels, or the prepared features): the rows, and the
    random numbers drawn, are the same either way.
    """
    labels: dict[str, int] = {}
    rows: list[Row] = []
    row_labels: list[int] = []

    def add(key: str | None, product_id: str, flip: bool) -> None:
        if key is None or not readable(key):
            return
        rows.append((key, flip))
        row_labels.append(labels.setdefault(product_id, len(labels)))

    for pair in pairs:
        add(bank.photo_key(pair), pair.positive_product_id, rng.random() < 0.5)
        add(bank.pick(pair.positive_product_id, rng, readable), pair.positive_product_id, rng.random() < 0.5)
        for negative in _negatives(pair, bank, config):
            add(bank.pick(negative, rng, readable), negative, rng.random() < 0.5)
    return rows, torch.tensor(row_labels)


def _negatives(pair: ClickPair, bank: ImageBank, config: RetrainConfig) -> list[str]:
    return [n for n in pair.negative_product_ids if bank.uris.get(n)][:config.negatives_per_pair]


def triplet_batch(pairs: Sequence[ClickPair], bank: ImageBank, config: RetrainConfig,
                  rng: np.random.Generator) -> tuple[np.ndarray, torch.Tensor]:
    """:func:`triplet_rows` as pixels: (N, H, W, 3) uint8, mirrored rows flipped left to right."""
    rows, labels = triplet_rows(pairs, bank, config, rng, bank.readable)
    pixels = [bank.array(key) for key, _ in rows]
    mirrored = [array[:, ::-1] if flip else array for array, (_, flip) in zip(pixels, rows, strict=True)]
    return np.ascontiguousarray(np.stack(mirrored)), labels


def images_to_prepare(pairs: Sequence[ClickPair], bank: ImageBank, config: RetrainConfig) -> list[str]:
    """Every image :func:`triplet_rows` may draw for these pairs: photos, and all images of their clicked and
    skipped products."""
    keys = [bank.photo_key(pair) for pair in pairs]
    for pair in pairs:
        for product_id in (pair.positive_product_id, *_negatives(pair, bank, config)):
            keys.extend(bank.product_keys(product_id))
    return list(dict.fromkeys(keys))


def _teacher(model: nn.Module, config: RetrainConfig) -> nn.Module | None:
    """A frozen copy of the serving weights, when the level trained moves the category/attribute features."""
    if config.distill == 0 or config.unfreeze == "embedding":
        return None
    teacher = copy.deepcopy(model).eval()
    teacher.requires_grad_(False)
    return teacher


def _checkpoint_extra(run_id: str, base_version: str, epoch: int, history: list[dict], config: RetrainConfig,
                      optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {"optimizer": optimizer.state_dict(), "epoch": epoch, "run_id": run_id, "base_version": base_version,
            "history": history, "config": config.to_dict()}


def _resume(last: Path, run_id: str, base_version: str, model: nn.Module,
            optimizer: torch.optim.Optimizer) -> tuple[int, list[dict]]:
    """Load ``last.pt`` of this run (model, optimiser, epoch); (0, []) when there is none to resume."""
    if not last.exists():
        return 0, []
    blob = read_checkpoint(last)
    if blob.get("run_id") != run_id or blob.get("base_version") != base_version:
        log.warning("ignoring %s: it belongs to run %s from %s, not run %s from %s", last, blob.get("run_id"),
                    blob.get("base_version"), run_id, base_version)
        return 0, []
    model.load_state_dict(blob["state_dict"])
    optimizer.load_state_dict(blob["optimizer"])
    return int(blob["epoch"]), list(blob.get("history", []))


def prepare_features(model: nn.Module, metadata: ModelMetadata, pairs: Sequence[ClickPair], bank: ImageBank,
                     config: RetrainConfig, *, cache_dir: Path, device: torch.device, desc: str = "backbone features",
                     progress_bar: bool = True, tick: Callable[[], None] | None = None) -> TrunkFeatures:
    """The backbone's features of every image the run may draw (read from ``cache_dir`` or computed there)."""
    features = TrunkFeatures.for_model(model, metadata, cache_dir=cache_dir, device=device)
    features.prepare(images_to_prepare(pairs, bank, config), bank.array, desc=desc, progress_bar=progress_bar,
                     tick=tick)
    return features


def batch_outputs(model: nn.Module, teacher: nn.Module | None, pairs: Sequence[ClickPair], bank: ImageBank,
                  config: RetrainConfig, metadata: ModelMetadata, rng: np.random.Generator,
                  features: TrunkFeatures | None, device: torch.device,
                  ) -> tuple[FashionNetOutput, torch.Tensor, FashionNetOutput | None]:
    """One step's rows through the model and the teacher: (output, labels, teacher's output or None).

    On the cached backbone features when given (``TrunkFeatures.forward``), else the whole model on the
    pixels; the same rows either way, and the same result up to the cache's float16 rounding.
    """
    if features is not None:
        keys, labels = triplet_rows(pairs, bank, config, rng, features.readable)
        out, kept = features.forward(model, teacher, keys)
        return out, labels, kept
    rows, labels = triplet_batch(pairs, bank, config, rng)
    x = normalize(rows, metadata.mean, metadata.std).to(device)
    out = model(x)
    with torch.no_grad():
        kept = teacher(x) if teacher is not None else None
    return out, labels, kept


def metric_loss(out: FashionNetOutput, labels: torch.Tensor, config: RetrainConfig) -> torch.Tensor:
    if config.loss == "supcon":
        return supervised_contrastive_loss(out.embedding, labels, config.temperature)
    return batch_hard_triplet_loss(out.embedding, labels, config.margin)


def finetune(
    run_id: str,
    *,
    sessions: sessionmaker[Session],
    model: nn.Module,
    metadata: ModelMetadata,
    base_version: str,
    pairs: Sequence[ClickPair],
    bank: ImageBank,
    config: RetrainConfig,
    run_dir: Path,
    device: torch.device,
    progress_cb: ProgressCallback | None = None,
    progress_bar: bool = True,
    cache_dir: Path | None = None,
    cached_features: bool = True,
) -> list[dict]:
    """Fine-tune ``model`` in place; resumes from ``run_dir/last.pt``. Returns per-epoch history.

    Trains on the frozen backbone's features, computed once per image into ``cache_dir`` (default
    ``run_dir/trunk-cache``; :func:`run_training` shares one across runs), whenever the unfreeze level leaves
    the stride-16 stage frozen (every level today). ``cached_features=False`` runs the whole model on the
    pixels of every row instead (the path before the cache, kept for measurements and comparisons).
    """
    torch.manual_seed(config.seed)
    groups = prepare_for_finetuning(model, config)
    model.to(device).eval()
    teacher = _teacher(model, config)  # before resuming: it must hold the serving weights
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    features = None
    if cached_features and uses_cached_features(model):
        # Before resuming too: the features (and their cache key) are the serving backbone's.
        tick = (lambda: progress_cb(Progress(run_id, 0, config.epochs, 0, 0, float("nan")))
                ) if progress_cb is not None else None
        features = prepare_features(model, metadata, pairs, bank, config,
                                    cache_dir=cache_dir or run_dir / "trunk-cache", device=device,
                                    desc=f"retrain {run_id[:8]} backbone features", progress_bar=progress_bar,
                                    tick=tick)
        log.info("training run %s: %s", run_id, features.describe())
    last = run_dir / "last.pt"
    start_epoch, history = _resume(last, run_id, base_version, model, optimizer)
    if start_epoch > 0:
        log.info("resuming training run %s from epoch %d of %d (%s)", run_id, start_epoch, config.epochs, last)
        runs.note_resumed(sessions, run_id, start_epoch)
    started = time.monotonic()
    for epoch in range(start_epoch, config.epochs):
        batches = epoch_batches(len(pairs), config, epoch)
        total = drift = 0.0
        bar = tqdm(batches, desc=f"retrain {run_id[:8]} epoch {epoch + 1}/{config.epochs}", unit="step",
                   disable=not progress_bar)
        for step, indices in enumerate(bar):
            rng = np.random.default_rng([config.seed, epoch, step])
            out, labels, kept = batch_outputs(model, teacher, [pairs[i] for i in indices], bank, config, metadata,
                                              rng, features, device)
            loss = metric_loss(out, labels.to(device), config)
            if kept is not None:
                distill = distillation_loss(out, kept)
                drift += distill.item()
                loss = loss + config.distill * distill
            optimizer.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward()
                optimizer.step()
            total += loss.item()
            bar.set_postfix(loss=f"{total / (step + 1):.4f}")
            if progress_cb is not None:
                progress_cb(Progress(run_id, epoch, config.epochs, step + 1, len(batches), loss.item()))
        mean_loss = total / max(len(batches), 1)
        history.append({"epoch": epoch + 1, "loss": mean_loss, "distill": drift / max(len(batches), 1),
                        "steps": len(batches)})
        save_checkpoint(last, model, metadata,
                        **_checkpoint_extra(run_id, base_version, epoch + 1, history, config, optimizer))
        per_epoch = (time.monotonic() - started) / (epoch + 1 - start_epoch)
        runs.record_epoch(sessions, run_id, epoch=epoch + 1, epochs=config.epochs, loss=mean_loss,
                          eta_seconds=per_epoch * (config.epochs - epoch - 1))
        log.info("training run %s: epoch %d/%d loss %.4f", run_id, epoch + 1, config.epochs, mean_loss)
    return history
