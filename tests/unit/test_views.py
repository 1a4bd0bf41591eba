"""Augmented views: deterministic per content, and landmarks move exactly as the pixels do."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from shared.training.views import FLIP_ORDER, render_view, transform_landmarks, view_params
from shared.vocabulary import VIS_ABSENT, VIS_TRUNCATED, VIS_VISIBLE

SIZE = 96
DIGEST = "ab" * 32


def _dot_image(x: float, y: float) -> Image.Image:
    image = Image.new("RGB", (200, 160), (0, 0, 0))
    ImageDraw.Draw(image).ellipse((x * 200 - 4, y * 160 - 4, x * 200 + 4, y * 160 + 4), fill=(255, 255, 255))
    return image


def test_view_zero_is_the_plain_resize_and_views_repeat_per_content() -> None:
    image = _dot_image(0.5, 0.5)
    np.testing.assert_array_equal(render_view(image, DIGEST, 0, SIZE),
                                  np.asarray(image.resize((SIZE, SIZE), Image.BILINEAR)))
    np.testing.assert_array_equal(render_view(image, DIGEST, 3, SIZE), render_view(image, DIGEST, 3, SIZE))
    assert not np.array_equal(view_params(DIGEST, 1).affine, view_params("cd" * 32, 1).affine)


def test_landmarks_follow_the_pixels_through_crop_rotation_and_mirror() -> None:
    checked = 0
    for view in range(1, 40):
        params = view_params(DIGEST, view)
        if params.photometric or params.erase:
            continue  # blur and patches would move the dot's centre of mass; geometry is what is tested
        landmarks = np.array([[0.4, 0.45]] + [[0.0, 0.0]] * 7, np.float32)
        visibility = np.array([VIS_VISIBLE] + [VIS_ABSENT] * 7)
        moved, vis = transform_landmarks(landmarks, visibility, params)
        slot = FLIP_ORDER[0] if params.flip else 0
        if vis[slot] == VIS_TRUNCATED:
            continue
        pixels = render_view(_dot_image(0.4, 0.45), DIGEST, view, SIZE).astype(float).sum(axis=2)
        ys, xs = np.nonzero(pixels > 600)  # the dot is white; the fill outside the photo is grey (384)
        assert len(xs), view
        found = np.array([(xs.mean() + 0.5) / SIZE, (ys.mean() + 0.5) / SIZE])
        np.testing.assert_allclose(found, moved[slot], atol=0.03, err_msg=f"view {view}")
        assert (vis[[i for i in range(8) if i != slot]] == VIS_ABSENT).all()
        checked += 1
    assert checked >= 3


def test_a_landmark_cut_off_by_the_crop_becomes_truncated() -> None:
    params = next(view_params(DIGEST, v) for v in range(1, 100)
                  if np.linalg.inv(view_params(DIGEST, v).affine)[0, 2] != 0)
    corners = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]] + [[0.5, 0.5]] * 4, np.float32)
    _, vis = transform_landmarks(corners, np.zeros(8, np.int64), params)
    assert (vis == VIS_TRUNCATED).any()
