"""Per-garment search and garment detection through real in-process gRPC servers (port 0), SQLite, Qdrant local
mode and the tiny model.

An untrained detector finds nothing, so where a test needs garments the analyzer in front of the real runtime
reports two (an upper-body one and a lower-body one) for whole photos: the search logic under test is what the
service does with detections, the detector's decoding is tested in tests/unit/test_detection.py.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from fashion.v1 import common_pb2, detection_pb2, detection_pb2_grpc, search_pb2, search_pb2_grpc
from services.models.server import model_servicers
from services.search.client import draw_garments, write_html
from services.search.core import SearchCore
from services.search.server import search_servicers
from shared.db import make_engine, repository, session_factory, sqlite_url, upgrade
from shared.detection.decode import Detection
from shared.fashionnet import save_checkpoint
from shared.fashionnet.checkpoint import ModelMetadata, build_model, read_checkpoint
from shared.grpc.server import create_server
from shared.imaging import ImageIntake, ImageLimits
from shared.serving.runtime import ModelRuntime
from shared.vectorstore import VectorPoint, open_store
from shared.vectorstore.payload import ProductPayload

VERSION = "tiny-1"
TIMEOUT = 30
QUERY_SIZE = 120
# product id -> category (the model's vocabulary: Tee and Blouse are upper-body, Jeans and Skirt lower-body)
CATALOGUE = {"t0": "Tee", "t1": "Blouse", "j0": "Jeans", "j1": "Skirt", "d0": "Dress"}
GARMENTS = (Detection((0.1, 0.05, 0.9, 0.5), "upper", 0.9), Detection((0.2, 0.45, 0.8, 0.98), "lower", 0.7))
UPPER, LOWER = {"Tee", "Blouse"}, {"Jeans", "Skirt"}


def _png(seed: int, size: int = 96) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 255, 3) + rng.normal(0, 60, (size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


class DetectingAnalyzer:
    """The real runtime; whole query photos (QUERY_SIZE square) come back with `garments` detected in them."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self.garments: tuple[Detection, ...] = GARMENTS
        self.calls: list[list[tuple[int, int]]] = []

    def analyze(self, images, version=None, timeout=60.0):
        self.calls.append([im.size for im in images])
        analyses = self.runtime.analyze(images, version, timeout)
        return [dataclasses.replace(a, garments=self.garments) if im.size == (QUERY_SIZE, QUERY_SIZE) else a
                for a, im in zip(analyses, images, strict=True)]

    def get(self, version=None):
        return self.runtime.get(version)


@dataclasses.dataclass
class Env:
    stub: search_pb2_grpc.SearchServiceStub
    analyzer: DetectingAnalyzer
    core: SearchCore


@pytest.fixture(scope="module")
def env(tiny_checkpoint, tmp_path_factory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("garments")
    url = sqlite_url(root / "fashion.db")
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    runtime = ModelRuntime(engine="eager", max_batch=8, max_wait_ms=2)
    runtime.load(tiny_checkpoint)
    store = open_store(root / "qdrant")
    pictures = {pid: Image.open(io.BytesIO(_png(k))).convert("RGB") for k, pid in enumerate(CATALOGUE)}
    analyses = runtime.analyze(list(pictures.values()), version=VERSION)
    with sessions.begin() as session:
        for pid, category in CATALOGUE.items():
            repository.upsert_product(session, pid, title=pid, brand="Acme", price=10.0, currency="EUR",
                                      in_stock=True, category=category, attributes=[])
            repository.upsert_image(session, f"{pid}-img", pid, uri=f"{pid}.png")
    store.ensure_collection(VERSION, runtime.get(VERSION).metadata.embedding_dim)
    store.upsert(VERSION, [VectorPoint(pid, f"{pid}-img", a.embedding, ProductPayload(
        title=pid, category=CATALOGUE[pid], price=10.0, in_stock=True).to_dict())
        for pid, a in zip(pictures, analyses, strict=True)])
    store.set_alias(VERSION)
    analyzer = DetectingAnalyzer(runtime)
    core = SearchCore(analyzer, sessions, store, ImageIntake(ImageLimits(max_bytes=500_000)),
                      click_sink=lambda click: None)
    server, port = create_server(search_servicers(core))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Env(search_pb2_grpc.SearchServiceStub(channel), analyzer, core)
    finally:
        server.stop(0)
        core.close()
        runtime.close()
        store.close()
        engine.dispose()


def _request(**kw) -> search_pb2.FindSimilarRequest:
    return search_pb2.FindSimilarRequest(image=common_pb2.ImageInput(data=_png(99, QUERY_SIZE)), top_k=10, **kw)


def test_each_garment_gets_its_analysis_and_hits_within_its_clothes_type(env: Env) -> None:
    env.analyzer.calls.clear()
    response = env.stub.FindSimilar(_request(), timeout=TIMEOUT)
    assert len(response.hits) == len(CATALOGUE)  # the whole-image results, as before
    upper, lower = response.garments
    assert (upper.garment.clothes_type, upper.garment.garment_class) == ("upper", "upper")
    assert lower.garment.clothes_type == "lower"
    assert upper.garment.box.x1 == pytest.approx(0.1) and upper.garment.box.y2 == pytest.approx(0.5)
    assert upper.garment.score == pytest.approx(0.9)
    assert {h.category for h in upper.hits} == UPPER
    assert {h.category for h in lower.hits} == LOWER
    assert upper.analysis.category.name and len(upper.analysis.landmarks) == 8
    assert len({response.query_id, upper.query_id, lower.query_id}) == 3
    # One analyze call for the photo, one for both crops together (the runtime's batcher takes them as a group).
    assert [len(c) for c in env.analyzer.calls] == [1, 2]


def test_asked_categories_override_the_garments_own_type(env: Env) -> None:
    response = env.stub.FindSimilar(_request(filters=search_pb2.Filters(categories=["Jeans"])), timeout=TIMEOUT)
    assert [h.category for g in response.garments for h in g.hits] == ["Jeans", "Jeans"]


def test_a_photo_without_garments_gets_the_whole_image_results(env: Env) -> None:
    env.analyzer.garments = ()
    try:
        response = env.stub.FindSimilar(_request(), timeout=TIMEOUT)
    finally:
        env.analyzer.garments = GARMENTS
    assert list(response.garments) == [] and len(response.hits) == len(CATALOGUE)


def test_a_click_on_a_garment_hit_is_accepted_with_the_garments_query_id(env: Env) -> None:
    response = env.stub.FindSimilar(_request(), timeout=TIMEOUT)
    garment = response.garments[1]
    hit = garment.hits[0]
    assert env.core.record_click(garment.query_id, hit.product_id, hit.position)


def test_a_region_searches_just_that_part(env: Env) -> None:
    env.analyzer.calls.clear()
    region = common_pb2.Box(x1=0.25, y1=0.25, x2=0.75, y2=0.75)
    response = env.stub.FindSimilar(_request(region=region), timeout=TIMEOUT)
    assert list(response.garments) == [] and len(response.hits) == len(CATALOGUE)
    (sizes,) = env.analyzer.calls
    assert sizes[0][0] == sizes[0][1] and sizes[0] != (QUERY_SIZE, QUERY_SIZE)  # the region's square crop


@pytest.mark.parametrize(("box", "message"), [
    ((0.5, 0.2, 1.4, 0.6), "got a box outside the image"),
    ((-0.1, 0.2, 0.4, 0.6), "got a box outside the image"),
    ((0.6, 0.2, 0.3, 0.6), "got an inverted box"),
    ((0.3, 0.7, 0.6, 0.2), "got an inverted box"),
    ((0.3, 0.2, 0.3, 0.6), "got a box of zero area"),
], ids=["right-of-image", "left-of-image", "inverted-x", "inverted-y", "zero-area"])
def test_bad_regions_are_invalid_argument_saying_what_was_expected(env: Env, box, message) -> None:
    region = common_pb2.Box(x1=box[0], y1=box[1], x2=box[2], y2=box[3])
    with pytest.raises(grpc.RpcError) as err:
        env.stub.FindSimilar(_request(region=region), timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expected region as fractions of the image with 0 <= x1 < x2 <= 1" in err.value.details()
    assert message in err.value.details()


def test_a_region_with_a_product_query_is_invalid_argument(env: Env) -> None:
    request = search_pb2.FindSimilarRequest(product_id="t0", top_k=3, region=common_pb2.Box(x2=1, y2=1))
    with pytest.raises(grpc.RpcError) as err:
        env.stub.FindSimilar(request, timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expected an image query with a region" in err.value.details()


@pytest.fixture(scope="module")
def detector_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny model with an (untrained) garment detector: it finds no garment in noise."""
    blob = read_checkpoint(tiny_checkpoint)
    metadata = dataclasses.replace(ModelMetadata.from_dict(blob["metadata"]), detector=True, version="tiny-det")
    model = build_model(metadata, pretrained=False)
    model.load_state_dict(blob["state_dict"], strict=False)
    return save_checkpoint(tmp_path_factory.mktemp("det") / "model.pt", model.eval(), metadata)


def test_detect_garments_answers_per_image_with_errors_kept_per_image(detector_checkpoint) -> None:
    runtime = ModelRuntime(engine="eager", max_batch=8, max_wait_ms=2)
    runtime.load(detector_checkpoint)
    server, port = create_server(model_servicers(runtime, ImageIntake(ImageLimits(max_bytes=200_000)),
                                                 ["analysis"]))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = detection_pb2_grpc.GarmentServiceStub(channel)
            images = [common_pb2.ImageInput(id="noise", data=_png(5)), common_pb2.ImageInput(id="bad", data=b"x")]
            response = stub.DetectGarments(detection_pb2.DetectGarmentsRequest(images=images), timeout=TIMEOUT)
            assert response.model.version == "tiny-det"
            noise, bad = response.results
            assert (noise.image_id, noise.error, list(noise.garments)) == ("noise", "", [])
            assert bad.image_id == "bad" and bad.error
            with pytest.raises(grpc.RpcError) as err:
                stub.DetectGarments(detection_pb2.DetectGarmentsRequest(images=images, min_score=2.0),
                                    timeout=TIMEOUT)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "expected min_score between 0 and 1, got 2.0" in err.value.details()
            with pytest.raises(grpc.RpcError) as err:
                stub.DetectGarments(detection_pb2.DetectGarmentsRequest(), timeout=TIMEOUT)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(0)
        runtime.close()


def test_the_result_page_draws_each_garments_box_with_its_own_row(env: Env, tmp_path: Path) -> None:
    query = _png(99, QUERY_SIZE)
    response = env.stub.FindSimilar(_request(), timeout=TIMEOUT)
    page = write_html(tmp_path / "page.html", query, response, intake=ImageIntake()).read_text()
    assert page.count('<section class="garment">') == 2
    assert "Garment 1: upper (90%)" in page and "Garment 2: lower (70%)" in page
    for g in response.garments:
        assert g.query_id in page
    plain = Image.open(io.BytesIO(query)).convert("RGB")
    drawn = np.asarray(draw_garments(plain, response.garments))
    x1, y1 = round(0.1 * QUERY_SIZE), round(0.05 * QUERY_SIZE)
    assert tuple(drawn[y1 + 20, x1]) == (0xE6, 0x19, 0x4B)  # garment 1's box edge, in its colour
    assert not np.array_equal(drawn, np.asarray(plain))
