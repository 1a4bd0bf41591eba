"""Retraining from consumer-to-shop clicks: training pairs, fine-tuning, the evaluation gate. No Celery here.

A run moves ``queued -> running -> evaluating -> reindexing`` (accepted) or ``rejected`` / ``failed``. This
module stops at ``reindexing``: the promotion code, in the process that owns the vector store, re-indexes the
catalogue with the candidate, swaps the alias and marks the run ``promoted``.

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
import dataclasses
import datetime as dt
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
import torch
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker
from torch import nn
from tqdm.auto import tqdm

from services.retrain.features import TrunkFeatures, uses_cached_features
from shared.db import repository
from shared.db.models import ModelState, RunState, TrainingRun, utcnow
from shared.db.repository import ClickPair
from shared.errors import FashionError, InvalidInput, Unavailable
from shared.fashionnet.checkpoint import ModelMetadata, load_checkpoint, read_checkpoint, save_checkpoint
from shared.fashionnet.losses import batch_hard_triplet_loss, distillation_loss, supervised_contrastive_loss
from shared.fashionnet.model import FashionNetOutput
from shared.fashionnet.preprocess import image_to_array, normalize
from shared.imaging import ImageLimits, decode_image, read_uri
from shared.training.metrics import retrieval_topk
from shared.training.train import resolve_device

log = logging.getLogger(__name__)

DEFAULT_KEY = "retrain"
TOPK = (1, 20)
# Parameter-name prefixes trained by each unfreeze level; everything else keeps the serving model's weights.
UNFREEZE: dict[str, tuple[str, ...]] = {
    "embedding": ("embedding_head.", "embedding_skip."),
    "fusion": ("embedding_head.", "embedding_skip.", "fusion.", "global_branch.", "local_branch."),
    "top": ("embedding_head.", "embedding_skip.", "fusion.", "global_branch.", "local_branch.", "backbone.top."),
}
# States in which training still has work to do; later states belong to evaluation's outcome or promotion.
TRAINING_STATES = (RunState.QUEUED, RunState.RUNNING, RunState.EVALUATING)
_IMAGE_CACHE = 4096  # decoded images kept per run (uint8 at the model's input size)


# ----------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class RetrainConfig:
    """How a run trains and is judged. Stored in the run's ``params`` so a redelivered task trains the same."""

    epochs: int = 3
    lr: float = 1e-4
    backbone_lr_scale: float = 0.1
    batch_pairs: int = 16
    negatives_per_pair: int = 2
    max_steps_per_epoch: int | None = None
    unfreeze: str = "embedding"
    margin: float = 0.2  # only for loss="triplet"
    loss: str = "supcon"  # "supcon" (default, measured in docs/RESULTS.md) or "triplet" (batch-hard)
    temperature: float = 0.05
    weight_decay: float = 1e-4
    distill: float = 1.0
    min_improvement: float = 0.005
    min_pairs: int = 20
    holdout_fraction: float = 0.2
    seed: int = 0
    # A labelled audit set (a DeepFashion consumer-to-shop folder; its val-split consumer photos, item id =
    # product id). When set, the gate judges on it instead of on held-out clicks, which favour the serving
    # model by construction: a click only exists where the serving model showed the product.
    audit_data: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs >= 1", self.epochs),
            (self.lr > 0, "lr > 0", self.lr),
            (self.backbone_lr_scale > 0, "backbone_lr_scale > 0", self.backbone_lr_scale),
            (self.batch_pairs >= 2, "batch_pairs >= 2", self.batch_pairs),
            (self.negatives_per_pair >= 0, "negatives_per_pair >= 0", self.negatives_per_pair),
            (self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1, "max_steps_per_epoch >= 1",
             self.max_steps_per_epoch),
            (self.unfreeze in UNFREEZE, f"unfreeze one of {sorted(UNFREEZE)}", self.unfreeze),
            (self.margin > 0, "margin > 0", self.margin),
            (self.loss in ("supcon", "triplet"), "loss supcon or triplet", self.loss),
            (self.temperature > 0, "temperature > 0", self.temperature),
            (self.distill >= 0, "distill >= 0", self.distill),
            (self.min_pairs >= 2, "min_pairs >= 2", self.min_pairs),
            (0 < self.holdout_fraction < 1, "holdout_fraction between 0 and 1", self.holdout_fraction),
        ]
        for ok, expected, got in checks:
            if not ok:
                raise InvalidInput(f"retraining settings: expected {expected}, got {got!r}")

    def to_params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RetrainConfig:
        """The config a run was triggered with; other keys in ``params`` (progress notes) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> RetrainConfig:
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides or {}) - names)
        if unknown:
            raise InvalidInput(f"unknown retraining settings {unknown}: expected some of {sorted(names)}")
        return dataclasses.replace(self, **dict(overrides or {}))


# ----------------------------------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class PairSplit:
    train: list[ClickPair]
    holdout: list[ClickPair]


def _photo(pair: ClickPair) -> str:
    return pair.query_image_sha256 or pair.query_id


def too_few_pairs_message(needed: int, found: int) -> str:
    return (f"expected at least {needed} click pairs to retrain, found {found} "
            "(run `fashion simulate-clicks` or wait for more traffic)")


def split_pairs(pairs: Sequence[ClickPair], *, holdout_fraction: float = 0.2, min_pairs: int = 20) -> PairSplit:
    """Deduplicate (same photo, same clicked product) and split by time: oldest train, newest held out.

    A photo never straddles the split (two clicked products of one photo share its date), so the gate
    never scores a photo the candidate trained on. Too little data is :class:`InvalidInput`.
    """
    unique: dict[tuple[str, str], ClickPair] = {}
    for pair in sorted(pairs, key=lambda p: (p.created_at, p.query_id, p.positive_product_id)):
        unique.setdefault((_photo(pair), pair.positive_product_id), pair)
    ordered = list(unique.values())
    if len(ordered) < min_pairs:
        raise InvalidInput(too_few_pairs_message(min_pairs, len(ordered)))
    cut = len(ordered) - max(1, round(len(ordered) * holdout_fraction))
    while cut > 0 and _photo(ordered[cut - 1]) == _photo(ordered[cut]):
        cut -= 1
    if cut == 0:
        raise InvalidInput(f"expected click pairs from at least 2 distinct shopper photos, found "
                           f"{len({_photo(p) for p in ordered})}")
    return PairSplit(train=ordered[:cut], holdout=ordered[cut:])


def build_pairs(session: Session, *, holdout_fraction: float = 0.2, min_pairs: int = 20,
                since: datetime | None = None) -> PairSplit:
    """Training and held-out pairs from the click log (see :func:`split_pairs`)."""
    return split_pairs(repository.click_training_pairs(session, since), holdout_fraction=holdout_fraction,
                       min_pairs=min_pairs)


# ----------------------------------------------------------------------------------------------- trigger


def trigger_run(
    sessions: sessionmaker[Session],
    enqueue: Callable[[str], None],
    *,
    config: RetrainConfig | None = None,
    key: str = DEFAULT_KEY,
    stale_after_s: float | None = None,
) -> tuple[str, bool]:
    """Create a queued run (or return the active one) and enqueue its task: ``(run_id, created)``.

    One active run per ``key``: concurrent triggers get the same run and only the creator enqueues, after its
    transaction committed (a worker must find the row). With ``stale_after_s``, an existing queued/running run
    silent for longer than that is enqueued again (the task is idempotent on the run id), so a lost task
    cannot wedge retraining. If enqueueing fails the run is marked failed, so it blocks no later trigger.
    """
    config = config or RetrainConfig()
    with sessions.begin() as session:
        serving = repository.serving_version(session)
        if serving is None:
            raise InvalidInput("expected a serving model to fine-tune: promote one first (`fashion up --checkpoint` "
                               "registers and serves a checkpoint)")
        run, created = repository.create_or_get_active_run(session, key, epochs=config.epochs,
                                                           params=config.to_params(), base_version=serving.version)
        run_id = run.run_id
        resend = not created and stale_after_s is not None and _silent_for(run, utcnow()) > stale_after_s \
            and RunState(run.state) in TRAINING_STATES
    if created or resend:
        try:
            enqueue(run_id)
        except Exception as exc:
            if created:
                fail_run(sessions, run_id, f"could not enqueue the training task: {exc}")
            raise Unavailable(f"could not enqueue training run {run_id}: expected the Celery broker to accept "
                              f"the task ({exc})") from exc
        if resend:
            log.warning("training run %s showed no sign of life for over %.0f s; enqueued it again", run_id,
                        stale_after_s)
    return run_id, created


def _silent_for(run: Any, now: datetime) -> float:
    last = run.heartbeat_at or run.updated_at or run.created_at
    return (now - last).total_seconds()


# ----------------------------------------------------------------------------------------------- liveness


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    heartbeat_at: datetime | None


def run_status(sessions: sessionmaker[Session], run_id: str) -> RunStatus:
    with sessions.begin() as session:
        run = repository.get_run(session, run_id)
        return RunStatus(RunState(run.state), run.heartbeat_at)


def needs_training(status: RunStatus) -> bool:
    return status.state in TRAINING_STATES


def when_locked(status: RunStatus, run_id: str, holder_run_id: str | None, *, now: datetime,
                stale_after_s: float) -> str:
    """What to do when the training lock is taken: ``"skip"`` or ``"wait"`` (retry later).

    Skip only when the holder trains this very run and its heartbeat is fresh: another worker has it, and
    this delivery is a duplicate. A stale holder of this run died (its lock expires soon); any other holder
    is another run training: both mean wait.
    """
    fresh = status.heartbeat_at is not None and (now - status.heartbeat_at).total_seconds() <= stale_after_s
    if holder_run_id == run_id and fresh and status.state in (RunState.RUNNING, RunState.EVALUATING):
        return "skip"
    return "wait"


def heartbeat(sessions: sessionmaker[Session], run_id: str) -> bool:
    """Stamp the run's heartbeat (its worker is alive) while it trains; False once it left training.

    The state is read under the row lock, so a beat never lands on a run the promotion code already owns.
    """
    with sessions.begin() as session:
        state = session.scalar(sa.select(TrainingRun.state).where(TrainingRun.run_id == run_id).with_for_update())
        if state is None or RunState(state) not in TRAINING_STATES:
            return False
        repository.update_run(session, run_id, heartbeat=True)
        return True


def fail_run(sessions: sessionmaker[Session], run_id: str, message: str) -> None:
    """Mark a run failed with ``message`` unless it already left the training states."""
    with sessions.begin() as session:
        run = repository.get_run(session, run_id)
        if RunState(run.state) in TRAINING_STATES:
            repository.update_run(session, run_id, state=RunState.FAILED, message=message, heartbeat=True)


# ----------------------------------------------------------------------------------------------- images


class ImageBank:
    """Decoded images as uint8 arrays at the model's input size, by product (shop images) or by photo bytes.

    Every image has a key: ``photo:<sha256>`` for a shopper's photo, ``uri:<uri>`` for a shop image; the
    cached-feature path (``features.TrunkFeatures``) names images by the same keys. Bounded LRU: a large click
    log is read from disk again rather than held in memory.
    """

    def __init__(self, sessions: sessionmaker[Session], input_size: int, limits: ImageLimits) -> None:
        self.sessions = sessions
        self.input_size = input_size
        self.limits = limits
        self.uris: dict[str, list[str]] = {}
        self._cache: OrderedDict[str, np.ndarray | None] = OrderedDict()
        self._photos: dict[str, ClickPair] = {}

    def load_products(self, product_ids: Sequence[str]) -> None:
        wanted = [p for p in dict.fromkeys(product_ids) if p not in self.uris]
        with self.sessions() as session:
            found = repository.get_images_for_products(session, wanted, domain="shop")
        for product_id in wanted:
            self.uris[product_id] = [image.uri for image in found.get(product_id, []) if image.uri]

    def _cached(self, key: str, load: Callable[[], bytes], name: str) -> np.ndarray | None:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        try:
            array = image_to_array(decode_image(load(), self.limits, name=name), self.input_size)
        except FashionError as exc:
            log.warning("skipping an unreadable image: %s", exc)
            array = None
        self._cache[key] = array
        if len(self._cache) > _IMAGE_CACHE:
            self._cache.popitem(last=False)
        return array

    def uri(self, uri: str) -> np.ndarray | None:
        return self._cached("uri:" + uri, lambda: read_uri(uri, self.limits), uri)

    def photo_key(self, pair: ClickPair) -> str:
        key = "photo:" + _photo(pair)
        self._photos.setdefault(key, pair)
        return key

    def photo(self, pair: ClickPair) -> np.ndarray | None:
        return self.array(self.photo_key(pair))

    def array(self, key: str) -> np.ndarray | None:
        """The image behind a key (a ``photo:`` key once its pair went through ``photo_key``)."""
        if key.startswith("uri:"):
            return self.uri(key.removeprefix("uri:"))
        pair = self._photos[key]
        return self._cached(key, lambda: pair.query_image, f"query photo {pair.query_id}")

    def readable(self, key: str) -> bool:
        return self.array(key) is not None

    def product_keys(self, product_id: str) -> list[str]:
        return ["uri:" + uri for uri in self.uris.get(product_id, [])]

    def pick(self, product_id: str, rng: np.random.Generator, readable: Callable[[str], bool]) -> str | None:
        """The key of one readable image of the product, picked at random (None when it has none)."""
        keys = self.product_keys(product_id)
        rng.shuffle(keys)
        return next((key for key in keys if readable(key)), None)

    def product(self, product_id: str, rng: np.random.Generator) -> np.ndarray | None:
        """One readable image of the product, picked at random (None when it has none)."""
        key = self.pick(product_id, rng, self.readable)
        return None if key is None else self.array(key)


def usable_pairs(pairs: Sequence[ClickPair], bank: ImageBank) -> list[ClickPair]:
    """Pairs whose photo decodes and whose clicked product has a readable shop image."""
    bank.load_products([p.positive_product_id for p in pairs] + [n for p in pairs for n in p.negative_product_ids])
    rng = np.random.default_rng(0)
    kept = [p for p in pairs if bank.photo(p) is not None and bank.product(p.positive_product_id, rng) is not None]
    if len(kept) < len(pairs):
        log.warning("left out %d of %d click pairs without a readable photo or product image",
                    len(pairs) - len(kept), len(pairs))
    return kept


# ----------------------------------------------------------------------------------------------- training


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
            "history": history, "config": config.to_params()}


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
        with sessions.begin() as session:
            run = repository.get_run(session, run_id)
            repository.update_run(session, run_id, params={**run.params, "resumed_from_epoch": start_epoch},
                                  heartbeat=True)
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
        with sessions.begin() as session:
            repository.update_run(session, run_id, state=RunState.RUNNING, epoch=epoch + 1, epochs=config.epochs,
                                  loss=mean_loss, eta_seconds=per_epoch * (config.epochs - epoch - 1),
                                  heartbeat=True)
        log.info("training run %s: epoch %d/%d loss %.4f", run_id, epoch + 1, config.epochs, mean_loss)
    return history


# ----------------------------------------------------------------------------------------------- evaluation


def product_embeddings(image_emb: np.ndarray, image_products: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """One vector per product: the L2-normalised mean of its images' embeddings. (ids sorted, vectors)."""
    ids, inverse = np.unique(np.asarray(image_products, dtype=str), return_inverse=True)
    sums = np.zeros((len(ids), image_emb.shape[1]), np.float64)
    np.add.at(sums, inverse.reshape(-1), image_emb.astype(np.float64))
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return ids, (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def retrieval_scores(query_emb: np.ndarray, query_products: Sequence[str], gallery_emb: np.ndarray,
                     gallery_products: Sequence[str]) -> dict[str, float]:
    """Top-1 / top-20 accuracy of the clicked product when every catalogue product is ranked by cosine."""
    result = retrieval_topk(query_emb, np.asarray(query_products, dtype=str), gallery_emb,
                            np.asarray(gallery_products, dtype=str), ks=TOPK)
    return {f"top{k}": result["topk"][k] for k in TOPK}


@dataclass(frozen=True)
class GateDecision:
    accepted: bool
    message: str


def gate(candidate: Mapping[str, float], serving: Mapping[str, float], min_improvement: float) -> GateDecision:
    """Accept when the candidate's top-20 reaches the serving model's top-20 plus ``min_improvement``.

    The default margin (0.005) asks for a real gain; 0 accepts "not worse"; a negative margin accepts a
    slightly worse model (for forcing a promotion). Top-1 is reported, not gated: it is noisy on small holdouts.
    """
    needed = serving["top20"] + min_improvement
    verdict = (f"candidate top-20 {candidate['top20']:.4f} vs serving {serving['top20']:.4f} "
               f"(needed >= {needed:.4f}: serving + min_improvement {min_improvement:g}); "
               f"top-1 {candidate['top1']:.4f} vs {serving['top1']:.4f}")
    accepted = candidate["top20"] >= needed - 1e-12
    return GateDecision(accepted, ("accepted: " if accepted else "rejected: ") + verdict)


@dataclass
class Encoder:
    """A model with its own preprocessing (two versions may differ in input size or normalisation)."""

    model: nn.Module
    metadata: ModelMetadata
    device: torch.device
    batch_size: int = 64

    @torch.inference_mode()
    def embed(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        self.model.to(self.device).eval()
        parts = []
        for start in range(0, len(arrays), self.batch_size):
            x = normalize(np.stack(arrays[start:start + self.batch_size]), self.metadata.mean, self.metadata.std)
            parts.append(self.model(x.to(self.device)).embedding.float().cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, self.metadata.embedding_dim), np.float32)


def _decode(load: Callable[[], bytes], limits: ImageLimits, name: str) -> Image.Image | None:
    try:
        return decode_image(load(), limits, name=name)
    except FashionError as exc:
        log.warning("skipping an unreadable image: %s", exc)
        return None


def evaluate(encoders: Mapping[str, Encoder], holdout: Sequence[ClickPair], sessions: sessionmaker[Session],
             limits: ImageLimits, *, page_size: int = 256,
             tick: Callable[[], None] | None = None) -> dict[str, dict[str, float]]:
    """Each encoder's top-1/top-20 on the held-out photos against the whole live catalogue (shop images).

    Catalogue images are read page by page, decoded once and embedded by every encoder at its own input
    size; a product is the mean of its images' embeddings, for every encoder alike.
    """
    image_emb: dict[str, list[np.ndarray]] = {name: [] for name in encoders}
    image_products: list[str] = []
    after: str | None = None
    while True:
        with sessions() as session:
            page = repository.catalog_images_page(session, after_image_id=after, limit=page_size)
        if not page:
            break
        after = page[-1].image_id
        decoded = [(image.product_id, _decode(lambda uri=image.uri: read_uri(uri, limits), limits, image.uri))
                   for image in page if image.uri]
        decoded = [(p, im) for p, im in decoded if im is not None]
        image_products.extend(p for p, _ in decoded)
        for name, enc in encoders.items():
            image_emb[name].append(enc.embed([image_to_array(im, enc.metadata.input_size) for _, im in decoded]))
        if tick is not None:
            tick()
    if not image_products:
        raise InvalidInput("expected catalogue products with readable shop images to evaluate against, found none")
    photos = [(pair.positive_product_id, _decode(lambda pair=pair: pair.query_image, limits, f"query photo "
                                                 f"{pair.query_id}")) for pair in holdout]
    photos = [(p, im) for p, im in photos if im is not None]
    if not photos:
        raise InvalidInput("expected held-out click pairs with decodable shopper photos, found none")
    scores = {}
    for name, enc in encoders.items():
        ids, gallery = product_embeddings(np.concatenate(image_emb[name]), image_products)
        queries = enc.embed([image_to_array(im, enc.metadata.input_size) for _, im in photos])
        scores[name] = retrieval_scores(queries, [p for p, _ in photos], gallery, ids)
    return scores


@dataclasses.dataclass(frozen=True)
class LabelledPhoto:
    """An audit query: a shopper photo whose true product is known (the fields `evaluate` reads)."""

    query_id: str
    query_image: bytes
    positive_product_id: str


def audit_photos(root: str | Path, split: str = "val") -> list[LabelledPhoto]:
    """Consumer photos of one split (default val: test stays for reporting) of a consumer-to-shop folder,
    labelled with their item (= product) id."""
    from shared.data.deepfashion import load_benchmark

    bench = load_benchmark(root, "consumer2shop")
    photos = [LabelledPhoto(r.image, bench.path(r).read_bytes(), r.item_id or "")
              for r in bench.split(split) if r.domain == "consumer" and r.item_id]
    if not photos:
        raise InvalidInput(f"expected {split}-split consumer photos in the audit set {root}, found none")
    return photos


# ----------------------------------------------------------------------------------------------- the run


def candidate_version(run_id: str, now: datetime | None = None) -> str:
    return f"fn-{(now or utcnow()):%Y%m%d}-{run_id[:8]}"


def _base_checkpoint(session: Session, base_version: str | None) -> tuple[str, str]:
    """(version, checkpoint path) of the model the run fine-tunes: its base version, else today's serving."""
    model = repository.get_model_version(session, base_version) if base_version else repository.serving_version(
        session)
    if model is None:
        raise InvalidInput("expected a serving model to fine-tune, found none")
    return model.version, model.checkpoint_path


def _start(sessions: sessionmaker[Session], run_id: str) -> tuple[RunState, RetrainConfig, str, str]:
    with sessions.begin() as session:
        run = repository.get_run(session, run_id)
        state = RunState(run.state)
        if state not in TRAINING_STATES:
            return state, RetrainConfig(), "", ""
        config = RetrainConfig.from_params(run.params)
        base_version, base_path = _base_checkpoint(session, run.base_version)
        repository.update_run(session, run_id, state=RunState.RUNNING, epochs=config.epochs,
                              base_version=base_version, message=None, heartbeat=True)
    return RunState.RUNNING, config, base_version, base_path


def run_training(
    run_id: str,
    *,
    sessions: sessionmaker[Session],
    runs_dir: Path,
    device: str = "auto",
    limits: ImageLimits | None = None,
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
    limits = limits or ImageLimits()
    state, config, base_version, base_path = _start(sessions, run_id)
    if state not in TRAINING_STATES:
        return state
    try:
        return _train_and_judge(run_id, sessions=sessions, config=config, base_version=base_version,
                                base_path=base_path, run_dir=Path(runs_dir).resolve() / run_id,
                                device=resolve_device(device), limits=limits, progress_cb=progress_cb,
                                progress_bar=progress_bar,
                                cache_dir=Path(cache_dir or Path(runs_dir) / "trunk-cache").resolve())
    except Unavailable:
        raise
    except FashionError as exc:
        log.warning("training run %s failed: %s", run_id, exc)
        fail_run(sessions, run_id, str(exc))
        return RunState.FAILED


def _train_and_judge(run_id: str, *, sessions: sessionmaker[Session], config: RetrainConfig, base_version: str,
                     base_path: str, run_dir: Path, device: torch.device, limits: ImageLimits,
                     progress_cb: ProgressCallback | None, progress_bar: bool, cache_dir: Path) -> RunState:
    with sessions() as session:
        split = build_pairs(session, holdout_fraction=config.holdout_fraction, min_pairs=config.min_pairs)
    model, metadata = load_checkpoint(base_path)
    bank = ImageBank(sessions, metadata.input_size, limits)
    train_pairs = usable_pairs(split.train, bank)
    if len(train_pairs) < 2:
        raise InvalidInput(f"expected at least 2 training pairs with readable images, found {len(train_pairs)} of "
                           f"{len(split.train)}: check the catalogue images' uris")
    history = finetune(run_id, sessions=sessions, model=model, metadata=metadata, base_version=base_version,
                       pairs=train_pairs, bank=bank, config=config, run_dir=run_dir, device=device,
                       progress_cb=progress_cb, progress_bar=progress_bar, cache_dir=cache_dir)

    with sessions.begin() as session:
        repository.update_run(session, run_id, state=RunState.EVALUATING, eta_seconds=None, heartbeat=True)
        serving = repository.serving_version(session)
        serving_version, serving_path = (serving.version, serving.checkpoint_path) if serving else (
            base_version, base_path)
    serving_model, serving_meta = load_checkpoint(serving_path)
    encoders = {"candidate": Encoder(model, metadata, device), "serving": Encoder(serving_model, serving_meta, device)}
    tick = (lambda: progress_cb(Progress(run_id, config.epochs, config.epochs, 0, 0, float("nan")))
            ) if progress_cb is not None else None
    scores = evaluate(encoders, split.holdout, sessions, limits, tick=tick)
    judged = scores
    metrics: dict[str, Any] = {**scores, "pairs": {"train": len(train_pairs), "holdout": len(split.holdout)}}
    if config.audit_data:
        audit = audit_photos(config.audit_data)
        judged = evaluate(encoders, audit, sessions, limits, tick=tick)
        metrics["audit"] = {**judged, "photos": len(audit)}
    decision = gate(judged["candidate"], judged["serving"], config.min_improvement)
    metrics["gate"] = {"min_improvement": config.min_improvement, "accepted": decision.accepted,
                       "on": "audit" if config.audit_data else "held-out clicks"}
    log.info("training run %s %s", run_id, decision.message)
    return _record_outcome(run_id, sessions=sessions, model=model, metadata=metadata, history=history,
                           serving_version=serving_version, metrics=metrics, decision=decision, run_dir=run_dir)


def _record_outcome(run_id: str, *, sessions: sessionmaker[Session], model: nn.Module, metadata: ModelMetadata,
                    history: list[dict], serving_version: str, metrics: dict[str, Any], decision: GateDecision,
                    run_dir: Path) -> RunState:
    """Save the candidate as a serving-format checkpoint, register it, and move the run on.

    Accepted: the version is registered ``candidate`` and the run goes to ``reindexing`` for the promotion
    code to pick up. Rejected: registered ``rejected`` (kept for inspection) and the run ends ``rejected``.
    """
    version = candidate_version(run_id)
    candidate_meta = dataclasses.replace(
        metadata, version=version, parent_version=serving_version,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        notes={"run_id": run_id, "history": history, "metrics": metrics, "fine_tuned_from": metadata.version})
    path = save_checkpoint(run_dir / "model.pt", model.cpu().eval(), candidate_meta)
    state = RunState.REINDEXING if decision.accepted else RunState.REJECTED
    with sessions.begin() as session:
        repository.register_model_version(
            session, version, architecture=candidate_meta.architecture, checkpoint_path=str(path),
            embedding_dim=candidate_meta.embedding_dim, metrics=metrics, parent_version=serving_version,
            state=ModelState.CANDIDATE if decision.accepted else ModelState.REJECTED)
        repository.update_run(session, run_id, state=state, candidate_version=version, metrics=metrics,
                              message=decision.message, eta_seconds=0.0, heartbeat=True)
    return state


__all__ = [
    "DEFAULT_KEY", "UNFREEZE", "Encoder", "GateDecision", "ImageBank", "PairSplit", "Progress", "RetrainConfig",
    "RunStatus", "build_pairs", "epoch_batches", "evaluate", "fail_run", "finetune", "gate", "heartbeat",
    "batch_outputs", "images_to_prepare", "metric_loss", "needs_training", "prepare_features",
    "prepare_for_finetuning", "product_embeddings", "retrieval_scores", "run_status", "run_training", "split_pairs",
    "too_few_pairs_message", "trigger_run", "triplet_batch", "triplet_rows", "uses_cached_features", "when_locked",
]
