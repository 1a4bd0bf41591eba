"""Shop and consumer photos of a rendered garment, with landmarks moved by exactly the pixels' homography.

Shop photos: plain or studio-gradient background, garment centred, front/side/back views (side = horizontal
squeeze plus a little yaw), a full-length model shot and a zoomed detail shot. Consumer photos add the domain gap:
perspective, rotation, scale and off-centre crops that truncate the garment, clutter, a wearer, occluders
(bags, arms, hair, objects), lighting gradients, colour casts, noise, blur and low JPEG quality.
"""

from __future__ import annotations

import colorsys
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from shared.data.synth import geometry as geo
from shared.data.synth.catalog import ItemSpec
from shared.data.synth.render import Layer
from shared.data.synth.textures import grid, smooth_noise
from shared.vocabulary import NUM_LANDMARKS, VIS_OCCLUDED, VIS_TRUNCATED, VIS_VISIBLE

SHOP_VIEWS: tuple[str, ...] = ("front", "side", "back", "full", "additional")
POSE_TYPE = {"front": 1, "side": 2, "back": 3, "full": 1, "additional": 1, "consumer": 1}
_SWAP = np.array([1, 0, 3, 2, 5, 4, 7, 6])  # left/right slot pairs


@dataclass(frozen=True)
class PhotoPlan:
    domain: str  # shop / consumer
    view: str  # one of SHOP_VIEWS, or "consumer"


@dataclass
class PhotoResult:
    """Annotations of one written photo, in its pixels."""

    landmarks: np.ndarray  # (8, 2) int, clipped to the image; zeros where the clothes type has no such landmark
    visibility: np.ndarray  # (8,) int VIS_* codes; -1 where absent
    bbox: tuple[int, int, int, int]
    variation: int  # 1 normal pose, 2 medium pose, 3 large pose, 4 medium zoom-in, 5 large zoom-in
    pose: int  # 1 frontal, 2 side, 3 back


@dataclass
class _Pose:
    rot: float = 0.0
    zoom: float = 1.0  # relative to the framing scale
    squeeze: float = 1.0
    px: float = 0.0
    py: float = 0.0
    mirror: bool = False
    target: tuple[float, float] = (0.5, 0.5)  # where the garment's anchor point lands, as a share of the size
    anchor: tuple[float, float] = (0.5, 0.5)  # the point of the garment's bbox that is placed at target

    def variation(self, side: bool) -> int:
        persp = max(abs(self.px), abs(self.py))
        if self.zoom >= 1.6:
            return 5
        if self.zoom >= 1.25:
            return 4
        if abs(self.rot) >= 15 or persp >= 0.25 or self.squeeze < 0.7:
            return 3
        if abs(self.rot) >= 6 or persp >= 0.12 or self.squeeze < 0.9 or side:
            return 2
        return 1


def homography(pose: _Pose, garment_box: tuple[float, float, float, float], size: int, fill: float) -> np.ndarray:
    """Canvas -> photo: centre on the anchor, scale to fill the frame, squeeze, rotate, tilt, place at target."""
    x0, y0, x1, y1 = garment_box
    anchor = (x0 + (x1 - x0) * pose.anchor[0], y0 + (y1 - y0) * pose.anchor[1])
    scale = fill * size / max(x1 - x0, y1 - y0) * pose.zoom
    half = size / 2
    return geo.compose(
        geo.translation(pose.target[0] * size, pose.target[1] * size),
        geo.scaling(half),
        geo.projective(pose.px, pose.py),
        geo.scaling(1 / half),
        geo.rotation(pose.rot),
        geo.scaling(scale * pose.squeeze * (-1 if pose.mirror else 1), scale),
        geo.translation(-anchor[0], -anchor[1]),
    )


def render_photo(
    item: ItemSpec, layers: dict[str, Layer], plan: PhotoPlan, size: int, rng: np.random.Generator
) -> tuple[bytes, PhotoResult]:
    """One JPEG photo of the item and its annotations."""
    consumer = plan.domain == "consumer"
    view = plan.view
    layer = layers["back" if view == "back" else "front"]
    box = layer.mask.getbbox() or (0, 0, size, size)
    pose, fill = _consumer_pose(rng) if consumer else _shop_pose(view, item, rng)
    h = homography(pose, box, size, fill)

    background = _clutter(size, rng) if consumer else _studio(size, rng)
    wearer = view == "full" or (consumer and rng.random() < 0.65)
    mannequin = not consumer and rng.random() < 0.35
    if wearer:
        head = _draw_wearer(background, item, layer, h, rng, mannequin)
    warped = geo.warp(layer.image, h, (size, size))
    if not consumer:
        shadow = geo.warp(layer.mask, geo.compose(geo.translation(size * 0.015, size * 0.02), h), (size, size))
        shadow = np.asarray(shadow.filter(ImageFilter.GaussianBlur(size * 0.02)), np.float32) / 255.0
        dimmed = np.asarray(background, np.float32) * (1.0 - 0.22 * shadow[..., None])
        background = Image.fromarray(dimmed.astype(np.uint8))
    photo = Image.alpha_composite(background.convert("RGBA"), warped).convert("RGB")
    if wearer and head is not None:  # the face is in front of a hood or collar
        _draw_head(photo, *head)
    occluder = Image.new("L", (size, size), 0)
    points = geo.apply(h, layer.garment.landmarks)
    if consumer:
        _occlude(photo, occluder, points, item, layer, h, rng)
        photo = consumer_camera(photo, rng)
        quality = int(rng.integers(25, 71))
    else:
        quality = int(rng.integers(88, 96))

    alpha_box = warped.getchannel("A").point(lambda a: 255 if a > 96 else 0).getbbox()
    bbox = (0, 0, size - 1, size - 1) if alpha_box is None else (*alpha_box[:2], alpha_box[2] - 1, alpha_box[3] - 1)
    landmarks, visibility = _annotate(points, layer.covered, np.asarray(occluder), size)
    if pose.mirror:
        landmarks, visibility = landmarks[_SWAP], visibility[_SWAP]
    result = PhotoResult(landmarks, visibility, bbox, pose.variation(view == "side"), POSE_TYPE[view])
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue(), result


def _annotate(
    points: np.ndarray, covered: np.ndarray, occluder: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    landmarks = np.zeros((NUM_LANDMARKS, 2), np.int64)
    visibility = np.full(NUM_LANDMARKS, -1, np.int64)
    for slot, (x, y) in enumerate(points):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        ix, iy = math.floor(x), math.floor(y)
        if not (0 <= ix < size and 0 <= iy < size):
            visibility[slot] = VIS_TRUNCATED
        elif covered[slot] or occluder[iy, ix] > 127:
            visibility[slot] = VIS_OCCLUDED
        else:
            visibility[slot] = VIS_VISIBLE
        landmarks[slot] = (min(max(ix, 0), size - 1), min(max(iy, 0), size - 1))
    return landmarks, visibility


# --------------------------------------------------------------------------------------------------- poses


def _shop_pose(view: str, item: ItemSpec, rng: np.random.Generator) -> tuple[_Pose, float]:
    fill = rng.uniform(0.78, 0.9)
    pose = _Pose(rot=float(np.clip(rng.normal(0, 1.5), -4, 4)), zoom=rng.uniform(0.96, 1.04))
    pose.target = (0.5 + rng.normal(0, 0.015), 0.5 + rng.normal(0, 0.015))
    if view == "side":
        pose.squeeze = rng.uniform(0.7, 0.84)
        pose.px = rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.11)
    elif view == "full":  # a model shot: the garment is smaller and sits where it is worn
        pose.zoom = rng.uniform(0.5, 0.64)
        ct = item.spec.clothes_type
        pose.target = (0.5, 0.3 if ct == 1 else 0.62 if ct == 2 else 0.45)
    elif view == "additional":  # a detail shot
        pose.zoom = rng.uniform(1.3, 2.1)
        pose.anchor = (rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.75))
    return pose, fill


def _consumer_pose(rng: np.random.Generator) -> tuple[_Pose, float]:
    fill = rng.uniform(0.7, 0.92)
    zoom = float(np.exp(rng.uniform(math.log(0.72), math.log(1.9))))
    shift = rng.uniform(-0.15, 0.15, 2)
    if rng.random() < 0.3:  # off-centre crop that cuts the garment
        axis = int(rng.integers(2))
        shift[axis] = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.32)
    pose = _Pose(
        rot=float(np.clip(rng.normal(0, 9), -28, 28)),
        zoom=zoom,
        squeeze=rng.uniform(0.8, 1.0),
        px=rng.uniform(-0.32, 0.32),
        py=rng.uniform(-0.32, 0.32),
        mirror=bool(rng.random() < 0.25),
        target=(0.5 + shift[0], 0.5 + shift[1]),
        anchor=(rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)),
    )
    return pose, fill


# ------------------------------------------------------------------------------------------- backgrounds


def _hsv255(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _studio(size: int, rng: np.random.Generator) -> Image.Image:
    """Plain or studio-gradient backdrop, light and low-saturation like catalogue photos."""
    base = np.array(_hsv255(rng.uniform(0, 1), rng.uniform(0, 0.12), rng.uniform(0.82, 0.98)), np.float32)
    if rng.random() < 0.5:
        return Image.new("RGB", (size, size), tuple(int(v) for v in base))
    x, y = grid(size)
    r = np.hypot(x / size - 0.5, y / size - 0.45)
    shade = 1.0 - rng.uniform(0.05, 0.2) * r * 2 - rng.uniform(0.0, 0.08) * (y / size)
    return Image.fromarray(np.clip(base * shade[..., None], 0, 255).astype(np.uint8))


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """Everyday scene colours: mostly muted, sometimes a saturated object."""
    saturation = rng.uniform(0.5, 0.9) if rng.random() < 0.15 else rng.uniform(0.0, 0.45)
    return _hsv255(rng.uniform(0, 1), saturation, rng.uniform(0.15, 0.95))


def _clutter(size: int, rng: np.random.Generator) -> Image.Image:
    """A busy scene: colour gradients, a floor line, furniture-like boxes, blobs, stripes and texture."""
    coarse = np.array([_random_color(rng) for _ in range(9)], np.uint8).reshape(3, 3, 3)
    img = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.6:
        horizon = rng.uniform(0.55, 0.85) * size
        draw.polygon(
            [(0, horizon + rng.normal(0, 8)), (size, horizon + rng.normal(0, 8)), (size, size), (0, size)],
            fill=_random_color(rng),
        )
    for _ in range(int(rng.integers(6, 16))):
        kind = rng.integers(4)
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
        w, h = rng.uniform(0.08, 0.5, 2) * size
        color = _random_color(rng)
        if kind == 0:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=color)
            if rng.random() < 0.4:  # a striped object
                for k in range(int(rng.integers(3, 9))):
                    yy = y0 + h * k / 8
                    draw.line([(x0, yy), (x0 + w, yy)], fill=_random_color(rng), width=int(rng.integers(1, 4)))
        elif kind == 1:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=color)
        elif kind == 2:
            pts = (x0 + w / 2, y0 + h / 2) + rng.uniform(-0.5, 0.5, (int(rng.integers(3, 7)), 2)) * (w, h)
            draw.polygon([tuple(p) for p in pts], fill=color)
        else:
            draw.line([(x0, y0), (x0 + w, y0 + h)], fill=color, width=int(rng.integers(2, max(3, size // 20))))
    arr = np.asarray(img, np.float32)
    arr = arr * (0.85 + 0.3 * smooth_noise(rng, size, int(rng.integers(8, 30))))[..., None]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.6:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.5) * size / 256))
    return img


# ---------------------------------------------------------------------------------------- wearer, occluders


def _skin(rng: np.random.Generator) -> tuple[int, int, int]:
    return _hsv255(rng.uniform(0.03, 0.08), rng.uniform(0.2, 0.5), rng.uniform(0.3, 0.92))


def _draw_wearer(
    image: Image.Image, item: ItemSpec, layer: Layer, h: np.ndarray, rng: np.random.Generator, mannequin: bool
) -> tuple[tuple[float, float], float, tuple[int, int, int], tuple[int, int, int] | None] | None:
    """A simple person behind the garment (legs, torso, arms, neck), placed by the garment's anchors.

    Returns where the head goes (centre, radius, skin, hair) so it can be drawn after the garment.
    """
    a = layer.garment.anchors
    px = geo.local_scale(h, layer.garment.landmarks[np.isfinite(layer.garment.landmarks[:, 0])].mean(axis=0))
    unit = px * layer.garment.unit

    def at(name: str) -> tuple[float, float]:
        x, y = geo.apply(h, a[name][None])[0]
        return float(x), float(y)

    skin = (205, 205, 200) if mannequin else _skin(rng)
    kind = item.spec.kind
    legs = _hsv255(rng.uniform(0.55, 0.65), rng.uniform(0.2, 0.6), rng.uniform(0.15, 0.5)) if kind == "top" else skin
    torso = _random_color(rng) if item.spec.clothes_type == 2 else skin
    draw = ImageDraw.Draw(image)
    for side in "lr":
        if "leg_top_" + side in a and "foot_" + side in a:
            draw.line([at("leg_top_" + side), at("foot_" + side)], fill=legs, width=max(2, int(0.12 * unit)))
            fx, fy = at("foot_" + side)
            r = 0.05 * unit
            draw.ellipse((fx - r * 1.4, fy - r, fx + r * 1.4, fy + r * 0.6), fill=(30, 28, 30))
    if "torso_waist_l" in a:
        draw.polygon([at("shoulder_l"), at("shoulder_r"), at("torso_waist_r"), at("torso_waist_l")], fill=torso)
    for side in "lr":
        if "hand_" + side in a:
            draw.line([at("arm_" + side), at("hand_" + side)], fill=skin, width=max(2, int(0.08 * unit)))
            hx, hy = at("hand_" + side)
            r = 0.045 * unit
            draw.ellipse((hx - r, hy - r, hx + r, hy + r), fill=skin)
    if "head" not in a:
        return None
    draw.line([at("body_top"), at("head")], fill=skin, width=max(2, int(0.09 * unit)))
    hair = None if mannequin else _hsv255(rng.uniform(0.02, 0.12), rng.uniform(0.3, 0.8), rng.uniform(0.05, 0.6))
    return at("head"), 0.1 * unit, skin, hair


def _draw_head(image: Image.Image, centre: tuple[float, float], r: float, skin, hair) -> None:
    hx, hy = centre
    draw = ImageDraw.Draw(image)
    draw.ellipse((hx - r * 0.85, hy - r, hx + r * 0.85, hy + r), fill=skin)
    if hair is not None:
        draw.chord((hx - r * 0.9, hy - r * 1.08, hx + r * 0.9, hy + r * 0.5), 180, 360, fill=hair)


def _occlude(
    photo: Image.Image,
    mask: Image.Image,
    points: np.ndarray,
    item: ItemSpec,
    layer: Layer,
    h: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Bags, arms, hair and random objects over the garment; each is also drawn into ``mask``."""
    count = int(rng.choice([0, 1, 2, 3], p=[0.3, 0.45, 0.2, 0.05]))
    if count == 0:
        return
    size = photo.size[0]
    finite = points[np.isfinite(points[:, 0])]
    unit = geo.local_scale(h, layer.garment.landmarks[np.isfinite(layer.garment.landmarks[:, 0])].mean(axis=0))
    unit *= layer.garment.unit
    draw, mdraw = ImageDraw.Draw(photo), ImageDraw.Draw(mask)
    for _ in range(count):
        if rng.random() < 0.75 and len(finite):
            cx, cy = finite[int(rng.integers(len(finite)))] + rng.normal(0, 0.04 * unit, 2)
        else:
            cx, cy = rng.uniform(finite.min(axis=0), finite.max(axis=0)) if len(finite) else rng.uniform(0, size, 2)
        kind = int(rng.integers(4))
        if kind == 0:  # bag with a strap
            w, hh = rng.uniform(0.15, 0.3) * unit, rng.uniform(0.12, 0.25) * unit
            color = _random_color(rng)
            box = (cx - w / 2, cy - hh / 2, cx + w / 2, cy + hh / 2)
            strap = [(cx - w * 0.3, cy - hh / 2), (cx + rng.normal(0, w), cy - hh * 2.5)]
            for d, fill in ((draw, color), (mdraw, 255)):
                d.rounded_rectangle(box, radius=max(1, int(w * 0.15)), fill=fill)
                d.line(strap, fill=fill, width=max(1, int(unit * 0.015)))
        elif kind == 1:  # an arm crossing the garment
            ang = rng.uniform(0, 2 * math.pi)
            length = rng.uniform(0.3, 0.6) * unit
            start = (cx - math.cos(ang) * length, cy - math.sin(ang) * length)
            width = max(2, int(rng.uniform(0.07, 0.1) * unit))
            r = width * 0.7
            skin = _skin(rng)
            for d, fill in ((draw, skin), (mdraw, 255)):
                d.line([start, (cx, cy)], fill=fill, width=width)
                d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif kind == 2:  # long hair falling over the shoulder
            hair = _hsv255(rng.uniform(0.02, 0.12), rng.uniform(0.3, 0.8), rng.uniform(0.05, 0.5))
            t = np.linspace(0, 2 * math.pi, 14, endpoint=False)
            rx, ry = rng.uniform(0.04, 0.09) * unit, rng.uniform(0.1, 0.25) * unit
            jag = rng.uniform(0.75, 1.2, 14)
            poly = [(cx + rx * j * math.cos(a), cy + ry * j * math.sin(a)) for a, j in zip(t, jag, strict=True)]
            for d, fill in ((draw, hair), (mdraw, 255)):
                d.polygon(poly, fill=fill)
        else:  # some object: phone, cup, another person's shoulder
            t = np.sort(rng.uniform(0, 2 * math.pi, 7))
            rad = rng.uniform(0.05, 0.14) * unit * rng.uniform(0.7, 1.3, 7)
            poly = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(t, rad, strict=True)]
            color = _random_color(rng)
            for d, fill in ((draw, color), (mdraw, 255)):
                d.polygon(poly, fill=fill)


def consumer_camera(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Lighting gradient, colour cast, exposure/contrast, sensor noise and blur."""
    size = photo.size[0]
    arr = np.asarray(photo, np.float32)
    x, y = grid(size)
    ang = rng.uniform(0, 2 * math.pi)
    ramp = ((x / size - 0.5) * math.cos(ang) + (y / size - 0.5) * math.sin(ang)) * 2
    light = 1.0 + rng.uniform(0.1, 0.45) * ramp
    cast = rng.uniform(0.8, 1.2, 3).astype(np.float32)
    cast /= cast.mean()
    exposure = rng.uniform(0.7, 1.2)
    contrast = rng.uniform(0.7, 1.15)
    arr = arr * (light[..., None] * cast * exposure)
    mean = float(arr.mean())
    arr = (arr - mean) * contrast + mean
    arr = arr + rng.normal(0, rng.uniform(1, 6), arr.shape).astype(np.float32)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    roll = rng.random()
    if roll < 0.45:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.5) * size / 256))
    elif roll < 0.65:  # motion blur along x or y
        k = 5
        kernel = np.zeros((k, k))
        kernel[k // 2, :] = 1.0
        if rng.random() < 0.5:
            kernel = kernel.T
        out = out.filter(ImageFilter.Kernel((k, k), kernel.reshape(-1).tolist(), scale=k))
    return out
