"""Model servicers through a real in-process gRPC server on port 0: results, per-image errors, codes."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from fashion.v1 import (
    analysis_pb2,
    analysis_pb2_grpc,
    attributes_pb2,
    attributes_pb2_grpc,
    common_pb2,
    embedding_pb2,
    embedding_pb2_grpc,
    landmark_pb2,
    landmark_pb2_grpc,
)
from services.models.server import model_servicers
from shared.grpc.server import create_server
from shared.imaging import ImageIntake, ImageLimits, IntakePolicy
from shared.serving.runtime import ModelRuntime


def _jpeg(seed: int, size=(96, 96)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    """A catalogue root holding one real image, which the model services must not read anyway."""
    root = tmp_path_factory.mktemp("catalogue")
    (root / "x.jpg").write_bytes(_jpeg(9))
    return root


@pytest.fixture(scope="module")
def channel(tiny_checkpoint, catalogue):
    runtime = ModelRuntime(engine="eager", max_batch=8, max_wait_ms=2)
    runtime.load(tiny_checkpoint)
    # As a process builds it: the catalogue intake's public face (ImageSettings.public_image_intake).
    intake = ImageIntake(ImageLimits(max_bytes=200_000), IntakePolicy(roots=(catalogue,))).for_public()
    server, port = create_server(model_servicers(runtime, intake))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    server.stop(0)
    runtime.close()


def test_embed_returns_normalised_vectors_and_model(channel) -> None:
    stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
    images = [common_pb2.ImageInput(id="a", data=_jpeg(1)), common_pb2.ImageInput(id="b", data=_jpeg(2))]
    response = stub.Embed(embedding_pb2.EmbedRequest(images=images), timeout=30)
    assert response.model.version == "tiny-1" and response.model.embedding_dim == 32
    assert [r.image_id for r in response.results] == ["a", "b"]
    for r in response.results:
        assert r.error == "" and len(r.vector) == 32
        assert np.linalg.norm(r.vector) == pytest.approx(1.0, abs=1e-4)


def test_one_bad_image_does_not_fail_the_batch(channel, catalogue) -> None:
    """A model service reads no files, not even under the catalogue roots: an existing one and a missing one
    get the same answer, which says what it takes instead."""
    stub = landmark_pb2_grpc.LandmarkServiceStub(channel)
    images = [common_pb2.ImageInput(id="good", data=_jpeg(3)), common_pb2.ImageInput(id="bad", data=b"nope"),
              common_pb2.ImageInput(id="missing", uri="/nonexistent/x.jpg"),
              common_pb2.ImageInput(id="existing", uri=str(catalogue / "x.jpg")),
              common_pb2.ImageInput(id="url", uri="http://127.0.0.1:9/x.jpg")]
    response = stub.DetectLandmarks(landmark_pb2.DetectLandmarksRequest(images=images), timeout=30)
    good, bad, missing, existing, url = response.results
    assert len(good.landmarks) == 8 and good.error == ""
    assert all(0 <= lm.x <= 1 and 0 <= lm.y <= 1 for lm in good.landmarks)
    assert "no decoder recognises" in bad.error and not bad.landmarks
    assert [missing.error, existing.error, url.error] == [f"image {name}: expected inline image bytes"
                                                         for name in ("missing", "existing", "url")]


def test_attributes_top_k_and_threshold(channel) -> None:
    stub = attributes_pb2_grpc.AttributeServiceStub(channel)
    request = attributes_pb2.TagAttributesRequest(images=[common_pb2.ImageInput(data=_jpeg(4))], top_k=3,
                                                  threshold=0.0)
    result = stub.TagAttributes(request, timeout=30).results[0]
    assert len(result.categories) == 3 and result.category == result.categories[0]
    scores = [c.score for c in result.categories]
    assert scores == sorted(scores, reverse=True)
    assert len(result.attributes) >= 40  # threshold 0 keeps every attribute


def test_analyze_matches_embed_from_one_pass(channel) -> None:
    image = common_pb2.ImageInput(data=_jpeg(5))
    analysis = analysis_pb2_grpc.AnalysisServiceStub(channel).Analyze(
        analysis_pb2.AnalyzeRequest(images=[image], want_embedding=True, want_landmarks=True, want_attributes=True),
        timeout=30).results[0]
    embed = embedding_pb2_grpc.EmbeddingServiceStub(channel).Embed(
        embedding_pb2.EmbedRequest(images=[image]), timeout=30).results[0]
    assert np.allclose(analysis.embedding, embed.vector, atol=1e-5)
    assert len(analysis.analysis.landmarks) == 8 and analysis.analysis.category.name


@pytest.mark.parametrize(("request_", "code", "message"), [
    (embedding_pb2.EmbedRequest(), grpc.StatusCode.INVALID_ARGUMENT, "empty batch"),
    (embedding_pb2.EmbedRequest(images=[common_pb2.ImageInput(data=b"x" * 300_000)]), None, "at most 200000 bytes"),
    (embedding_pb2.EmbedRequest(images=[common_pb2.ImageInput(data=_jpeg(1))], model_version="nope"),
     grpc.StatusCode.NOT_FOUND, "'nope' is not loaded"),
])
def test_errors(channel, request_, code, message) -> None:
    stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
    if code is None:  # oversize image: a per-image error, the batch itself succeeds
        assert message in stub.Embed(request_, timeout=30).results[0].error
        return
    with pytest.raises(grpc.RpcError) as err:
        stub.Embed(request_, timeout=30)
    assert err.value.code() == code and message in err.value.details()


def test_attribute_arguments_validated(channel) -> None:
    stub = attributes_pb2_grpc.AttributeServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.TagAttributes(attributes_pb2.TagAttributesRequest(images=[common_pb2.ImageInput(data=_jpeg(1))],
                                                               top_k=0), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "top_k between 1 and 1000" in err.value.details()
