"""P items x K images per batch, each item's K split between shopper and shop photos when it has both.

Batch-hard mining and contrastive losses learn the consumer-to-shop gap only from pairs that cross it: an item
drawn with four shop photos teaches nothing about shopper photos. Deterministic per (seed, epoch), so a resumed
run replays the same batches.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class CrossDomainBatchSampler(Sampler[list[int]]):
    def __init__(self, items: Sequence[int], domains: Sequence[str | None], items_per_batch: int,
                 images_per_item: int, seed: int = 0) -> None:
        self.by_item: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for index, (item, domain) in enumerate(zip(items, domains, strict=True)):
            if item >= 0:
                self.by_item[item][domain or "shop"].append(index)
        self.usable = sorted(i for i, by in self.by_item.items() if sum(len(v) for v in by.values()) >= 2)
        self.p = items_per_batch
        self.k = images_per_item
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.usable) // self.p

    def _draw(self, item: int, rng: np.random.Generator) -> list[int]:
        pools = [pool for _, pool in sorted(self.by_item[item].items())]
        if len(pools) == 1:
            pool = pools[0]
            return [int(i) for i in rng.choice(pool, size=self.k, replace=len(pool) < self.k)]
        picked: list[int] = []
        for j, pool in enumerate(pools):  # consumer first, then shop: an even split, the remainder to consumer
            share = self.k // len(pools) + (1 if j < self.k % len(pools) else 0)
            picked.extend(int(i) for i in rng.choice(pool, size=share, replace=len(pool) < share))
        return picked

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.usable)
        for start in range(0, len(self) * self.p, self.p):
            batch: list[int] = []
            for item in order[start:start + self.p]:
                batch.extend(self._draw(int(item), rng))
            yield batch
