"""Training pairs from the click log, and the images behind them.

The training signal is the paper's consumer-to-shop setting: the shopper's own photo (the anchor), an image
of the product they clicked (the positive), images of products shown around it that they skipped (hard
negatives). :func:`split_pairs` turns logged clicks into such pairs, split by time so the gate scores photos
the candidate never trained on; :class:`ImageBank` decodes the pictures, once, at the model's input size.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from shared.db import repository
from shared.db.repository import ClickPair
from shared.errors import FashionError, InvalidInput
from shared.fashionnet.preprocess import image_to_array
from shared.imaging import ImageIntake, ImageSource

log = logging.getLogger(__name__)

_IMAGE_CACHE = 4096  # decoded images kept per run (uint8 at the model's input size)


def decode_or_skip(source: ImageSource, intake: ImageIntake, name: str) -> Image.Image | None:
    """The image ``source`` names, read and decoded through the process's intake (its limits and input
    policy); None (and a warning) when it cannot be, so one missing file or corrupt photo among thousands
    leaves a run, or an evaluation, going."""
    try:
        return intake.load(source, name=name).image
    except FashionError as exc:
        log.warning("skipping an unreadable image: %s", exc)
        return None


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


class ImageBank:
    """Decoded images as uint8 arrays at the model's input size, by product (shop images) or by photo bytes.

    Every image has a key: ``photo:<sha256>`` for a shopper's photo, ``uri:<uri>`` for a shop image; the
    cached-feature path (``features.TrunkFeatures``) names images by the same keys. Bounded LRU: a large click
    log is read from disk again rather than held in memory.
    """

    def __init__(self, sessions: sessionmaker[Session], input_size: int, intake: ImageIntake) -> None:
        self.sessions = sessions
        self.input_size = input_size
        self.intake = intake
        self.uris: dict[str, list[str]] = {}
        self._cache: OrderedDict[str, np.ndarray | None] = OrderedDict()
        self._photos: dict[str, ClickPair] = {}

    def load_products(self, product_ids: Sequence[str]) -> None:
        wanted = [p for p in dict.fromkeys(product_ids) if p not in self.uris]
        with self.sessions() as session:
            found = repository.get_images_for_products(session, wanted, domain="shop")
        for product_id in wanted:
            self.uris[product_id] = [image.uri for image in found.get(product_id, []) if image.uri]

    def _cached(self, key: str, source: ImageSource, name: str) -> np.ndarray | None:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        image = decode_or_skip(source, self.intake, name)
        array = None if image is None else image_to_array(image, self.input_size)
        self._cache[key] = array
        if len(self._cache) > _IMAGE_CACHE:
            self._cache.popitem(last=False)
        return array

    def uri(self, uri: str) -> np.ndarray | None:
        return self._cached("uri:" + uri, ImageSource(uri=uri), uri)

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
        return self._cached(key, ImageSource(data=pair.query_image), f"query photo {pair.query_id}")

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
