"""How a retraining run trains and is judged: :class:`RetrainConfig` and the ``UNFREEZE`` levels.

No torch here, on purpose: a process that only triggers runs (the admin service, ``RetrainSettings.config()``)
builds and validates a config without loading the training stack. Why each default is what it is (the
unfreeze level, the loss, the distillation weight) is measured in ``finetune.py``'s docstring and
docs/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import InvalidInput

# Parameter-name prefixes trained by each unfreeze level; everything else keeps the serving model's weights.
UNFREEZE: dict[str, tuple[str, ...]] = {
    "embedding": ("embedding_head.", "embedding_skip."),
    "fusion": ("embedding_head.", "embedding_skip.", "fusion.", "global_branch.", "local_branch."),
    "top": ("embedding_head.", "embedding_skip.", "fusion.", "global_branch.", "local_branch.", "backbone.top."),
}


@dataclass(frozen=True)
class RetrainConfig:
    """How a run trains and is judged. Stored in the run's ``config`` column so a redelivered task trains the same."""

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

    def to_dict(self) -> dict[str, Any]:
        """What a run stores in its ``config`` column (JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> RetrainConfig:
        """The config a run was triggered with. Keys this version does not know (a setting a newer version
        added, or one since removed) are ignored, so a run outlives the code that queued it."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in stored.items() if k in names})

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> RetrainConfig:
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides or {}) - names)
        if unknown:
            raise InvalidInput(f"unknown retraining settings {unknown}: expected some of {sorted(names)}")
        return dataclasses.replace(self, **dict(overrides or {}))
