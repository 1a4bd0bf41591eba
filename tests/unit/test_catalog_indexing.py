"""The one indexing path of ingest and re-indexing: read pictures, analyse them pinned to a version, build points;
the payload search reads back; and the serving alias's first creation."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from shared.catalog.alias import move_serving_alias, serving_version
from shared.catalog.indexing import (
    analyze_images,
    catalog_point,
    image_id_for,
    read_stored,
    read_upload,
    stored_payload,
)
from shared.errors import InvalidInput, TooLarge, Unavailable
from shared.imaging import ImageIntake, ImageLimits, ImageSource, IntakePolicy
from shared.serving.analyzer import analyze_pinned
from shared.serving.runtime import Analysis
from shared.vectorstore import open_store
from shared.vectorstore.payload import ProductPayload

DIM = 4


def _png(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (shade, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class FakeAnalyzer:
    """Answers with `answers_with` (default: the version asked for); `drop` answers one image short."""

    default: str = "v1"
    answers_with: str | None = None
    drop: bool = False

    def analyze(self, images, version=None, timeout=60.0):
        used = self.answers_with or version or self.default
        out = [Analysis(used, np.ones(DIM, np.float32), (), (("dress", 0.9),), ()) for _ in images]
        return out[:-1] if self.drop else out

    def get(self, version=None):
        return SimpleNamespace(version=version or self.default, metadata=SimpleNamespace(embedding_dim=DIM))


def test_product_payload_round_trips_what_search_shows() -> None:
    full = ProductPayload(title="Dress", category="dress", attributes=("floral",), price=19.5, in_stock=False,
                          brand="Acme", currency="EUR", image_uri="/a.jpg")
    assert ProductPayload.from_dict({**full.to_dict(), "product_id": "p1", "model_version": "v1"}) == full
    bare = ProductPayload(title="Plain")
    assert bare.to_dict() == {"category": None, "attributes": [], "price": 0.0, "in_stock": True, "title": "Plain",
                              "brand": "", "currency": "", "image_uri": ""}
    assert ProductPayload.from_dict(bare.to_dict()) == replace(bare, price=0.0)  # a missing price is stored as 0
    assert ProductPayload.from_dict({}) == ProductPayload(title="")


def test_analysis_is_pinned_to_the_version_asked_for() -> None:
    images = [Image.new("RGB", (16, 16))] * 2
    assert [a.version for a in analyze_pinned(FakeAnalyzer(), images, "v2", timeout=1)] == ["v2", "v2"]
    with pytest.raises(Unavailable, match="answered with model 'v1', expected 'v2'"):
        analyze_pinned(FakeAnalyzer(answers_with="v1"), images, "v2", timeout=1)
    with pytest.raises(RuntimeError, match="1 results for 2 images"):
        analyze_pinned(FakeAnalyzer(drop=True), images, "v2", timeout=1)


def test_uploads_get_content_ids_once_and_a_bad_picture_is_named(tmp_path) -> None:
    path = tmp_path / "b.png"
    path.write_bytes(_png(2))
    sources = [ImageSource(data=_png(1), id="front"), ImageSource(uri=str(path)), ImageSource(data=_png(1))]
    intake = ImageIntake(policy=IntakePolicy(roots=(tmp_path,)))
    images = read_upload(intake, "p1", sources)
    assert [(im.image_id, im.uri) for im in images] == [(image_id_for("p1", images[0].sha256), None),
                                                        (image_id_for("p1", images[1].sha256), str(path))]
    assert images[1].size == (32, 32)
    with pytest.raises(InvalidInput, match=r"^image #1 \(back\): .*expected inline image bytes, or a file under"):
        read_upload(intake, "p1", [sources[0], ImageSource(uri=str(tmp_path / "no.png"), id="back")])
    with pytest.raises(TooLarge, match="^image #0: inline data: expected at most 10 bytes"):
        read_upload(ImageIntake(ImageLimits(max_bytes=10)), "p1", [sources[2]])


def test_stored_images_keep_their_ids_and_points_carry_the_product_payload(tmp_path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(_png(3))
    row = SimpleNamespace(product_id="p1", image_id="stored-id", uri=path.as_uri())
    image = read_stored(ImageIntake(policy=IntakePolicy(roots=(tmp_path,))), row)  # type: ignore[arg-type]
    assert (image.image_id, image.uri) == ("stored-id", path.as_uri())
    with pytest.raises(InvalidInput, match="no stored uri"):
        read_stored(ImageIntake(), SimpleNamespace(product_id="p1", image_id="x", uri=None))  # type: ignore[arg-type]
    product = SimpleNamespace(title="Coat", category="coat", attributes=["wool"], price=None, in_stock=True,
                              brand=None, currency="EUR")
    with pytest.raises(RuntimeError, match="not analysed"):
        catalog_point(image, stored_payload(product))  # type: ignore[arg-type]
    analyze_images(FakeAnalyzer(), [image], "v1", timeout=1)
    point = catalog_point(image, stored_payload(product))  # type: ignore[arg-type]
    assert (point.product_id, point.image_id) == ("p1", "stored-id")
    assert point.payload == ProductPayload(title="Coat", category="coat", attributes=("wool",), currency="EUR",
                                           image_uri=path.as_uri()).to_dict()


def test_the_first_indexer_creates_the_serving_alias_and_promotion_moves_it() -> None:
    store = open_store(":memory:")
    try:
        assert store.alias_target() is None
        assert serving_version(store, FakeAnalyzer(default="v1")) == "v1"
        assert serving_version(store, FakeAnalyzer(default="v2")) == "v1"  # only the first one is created
        store.ensure_collection("v2", DIM)
        move_serving_alias(store, "v2")
        assert store.alias_target() == "v2" and serving_version(store, FakeAnalyzer()) == "v2"
    finally:
        store.close()

