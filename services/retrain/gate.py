"""The evaluation gate: is the candidate better than the serving model at finding the clicked product?

Both models embed the same held-out shopper photos and the whole live catalogue (each at its own input size
and normalisation); a product is the mean of its images' embeddings; the score is top-1 / top-20 accuracy of
the true product when every catalogue product is ranked by cosine. With an audit set (``audit_data``) the
gate judges on labelled photos instead of held-out clicks, which favour the serving model by construction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sqlalchemy.orm import Session, sessionmaker
from torch import nn

from services.retrain.pairs import decode_or_skip
from shared.db import repository
from shared.db.repository import ClickPair
from shared.errors import InvalidInput
from shared.fashionnet.checkpoint import ModelMetadata
from shared.fashionnet.preprocess import image_to_array, normalize
from shared.imaging import ImageIntake, ImageSource
from shared.training.metrics import retrieval_topk

TOPK = (1, 20)


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


def evaluate(encoders: Mapping[str, Encoder], holdout: Sequence[ClickPair], sessions: sessionmaker[Session],
             intake: ImageIntake, *, page_size: int = 256,
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
        decoded = [(image.product_id, decode_or_skip(ImageSource(uri=image.uri), intake, image.uri))
                   for image in page if image.uri]
        decoded = [(p, im) for p, im in decoded if im is not None]
        image_products.extend(p for p, _ in decoded)
        for name, enc in encoders.items():
            image_emb[name].append(enc.embed([image_to_array(im, enc.metadata.input_size) for _, im in decoded]))
        if tick is not None:
            tick()
    if not image_products:
        raise InvalidInput("expected catalogue products with readable shop images to evaluate against, found none")
    photos = [(pair.positive_product_id, decode_or_skip(ImageSource(data=pair.query_image), intake,
                                                        f"query photo {pair.query_id}")) for pair in holdout]
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
