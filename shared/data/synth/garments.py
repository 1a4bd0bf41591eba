"""Parametric silhouettes: polygons, ground-truth landmarks and body anchors built from the same parameters.

Geometry is built in garment units (x to the right from the centre line, y down from the neckline or waist;
1 unit is roughly a shoulder-to-hip span), then fitted onto a square canvas. Landmark slots follow
``LANDMARK_NAMES``; "left" is the image-left side of an unmirrored photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from shared.data.synth.catalog import ItemSpec
from shared.vocabulary import NUM_LANDMARKS

Point = np.ndarray

_FILL = 0.86  # share of the canvas the garment's longer side takes


@dataclass
class Garment:
    """One view of a garment on its canvas, in canvas pixels."""

    parts: list[tuple[str, np.ndarray]]  # (role, (N, 2) polygon), drawn in this order
    landmarks: np.ndarray  # (8, 2); NaN in slots this clothes type does not define
    anchors: dict[str, np.ndarray] = field(default_factory=dict)  # named points for parts and the wearer's body
    unit: float = 1.0  # canvas pixels per garment unit
    origin: np.ndarray | None = None  # canvas position of the garment-unit origin (neckline centre, or waist)

    def polygon(self, role: str) -> np.ndarray | None:
        for name, points in self.parts:
            if name == role:
                return points
        return None


def _pt(x: float, y: float) -> Point:
    return np.array([x, y], dtype=np.float64)


def quad_bezier(p0: Point, p1: Point, p2: Point, n: int = 12) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _mirror(points: np.ndarray) -> np.ndarray:
    """The right side of a symmetric outline, in reverse order so outlines stay closed."""
    out = points[::-1].copy()
    out[:, 0] *= -1
    return out


def _flip_x(p: Point) -> Point:
    return np.array([-p[0], p[1]])


class _Builder:
    """Collects parts, landmarks and anchors in garment units."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, np.ndarray]] = []
        self.landmarks = np.full((NUM_LANDMARKS, 2), np.nan)
        self.anchors: dict[str, np.ndarray] = {}

    def pair(self, name: str, left: Point) -> None:
        self.anchors[name + "_l"] = np.asarray(left, dtype=np.float64)
        self.anchors[name + "_r"] = _flip_x(np.asarray(left, dtype=np.float64))

    def landmark_pair(self, slot: int, left: Point) -> None:
        self.landmarks[slot] = left
        self.landmarks[slot + 1] = _flip_x(left)


def _bodice(b: _Builder, p: dict[str, float], back: bool, y_end: float, w_end: float, hem_curve: float | None) -> None:
    """Upper body from neckline to ``y_end``; closes with a hem curve, or flat when a skirt/legs continue below."""
    sh, nw = p["shoulder"], p["neck_w"]
    nd = 0.025 if back else p["neck_d"]
    sleeveless = p["sleeve_len"] <= 0
    neck = _pt(-nw, 0.0)
    if sleeveless:
        shoulder = _pt(-(nw + p["strap"]), p["shoulder_drop"] * 0.5)
        armpit = _pt(-sh * 0.93, p["armhole"] + 0.04)
        armhole = quad_bezier(shoulder, _pt(shoulder[0] - 0.01, armpit[1] * 0.85), armpit, 8)
        sleeve_mark = armhole[len(armhole) // 2]
    else:
        shoulder = _pt(-sh, p["shoulder_drop"])
        armpit = _pt(-sh * 0.93, p["armhole"])
        armhole = np.stack([shoulder, armpit])
    waist_y = float(np.clip(p["waist_y"], armpit[1] + 0.05, max(y_end - 0.02, armpit[1] + 0.06)))
    frac = (waist_y - armpit[1]) / max(y_end - armpit[1], 1e-6)
    ctrl_x = p["waist_w"] if y_end > p["waist_y"] else (sh * 0.93) * (1 - frac) + w_end * frac
    side = quad_bezier(armpit, _pt(-ctrl_x, waist_y), _pt(-w_end, y_end), 10)
    left = np.concatenate([neck[None], armhole, side[1:]])
    hem_mid = y_end + (hem_curve or 0.0)
    if hem_curve is not None:
        bottom = quad_bezier(left[-1], _pt(0.0, y_end + 2 * hem_curve), _flip_x(left[-1]), 10)[1:-1]
    else:
        bottom = np.zeros((0, 2))
    if nd > 0.1 and not back:  # v-neck: two nearly straight edges
        neckline = quad_bezier(_flip_x(neck), _pt(nw * 0.35, nd * 0.55), _pt(0.0, nd), 6)
    else:
        neckline = quad_bezier(_flip_x(neck), _pt(nw * 0.95, nd * 1.05), _pt(0.0, nd), 6)
    neckline = np.concatenate([neckline, _mirror(neckline)[1:]])
    body = np.concatenate([left, bottom, _mirror(left), neckline[1:-1]])

    if not sleeveless:
        a = math.radians(p["sleeve_angle"])
        d = np.array([-math.sin(a), math.cos(a)])
        out = np.array([-math.cos(a), -math.sin(a)])
        mid = (shoulder + armpit) / 2
        cuff = mid + d * p["sleeve_len"]
        sleeve = np.stack([shoulder, cuff + out * p["cuff_w"], cuff - out * p["cuff_w"], armpit])
        b.parts.append(("sleeve_l", sleeve))
        b.parts.append(("sleeve_r", _mirror(sleeve)))
        sleeve_mark = cuff
        b.pair("cuff", cuff)
        b.pair("cuff_out", cuff + out * p["cuff_w"])
        b.pair("cuff_in", cuff - out * p["cuff_w"])
        b.pair("sleeve_top", mid)
        hand = cuff + d * max(0.68 - p["sleeve_len"], 0.05)
    else:
        mid = sleeve_mark
        a = math.radians(12.0)
        hand = mid + np.array([-math.sin(a), math.cos(a)]) * 0.68
        b.pair("cuff", sleeve_mark)
    b.parts.append(("body", body))
    b.landmark_pair(0, neck)
    b.landmark_pair(2, sleeve_mark)
    b.pair("neck", neck)
    b.pair("shoulder", shoulder)
    b.pair("armpit", armpit)
    b.pair("chest", _pt(-sh * 0.48, p["armhole"] * 0.95))
    b.pair("arm", mid)
    b.pair("hand", hand)
    b.pair("hem", left[-1])
    b.anchors["neck_bottom"] = _pt(0.0, nd)
    b.anchors["hem_c"] = _pt(0.0, hem_mid)
    b.anchors["body_top"] = _pt(0.0, -0.02)
    b.anchors["head"] = _pt(0.0, -0.2)
    b.anchors["torso_waist_l"] = _pt(-p["waist_w"] * 0.95, p["waist_y"])
    b.anchors["torso_waist_r"] = _pt(p["waist_w"] * 0.95, p["waist_y"])


def _hood(b: _Builder, p: dict[str, float], back: bool) -> None:
    nw = p["neck_w"]
    t = np.linspace(0, math.pi, 16)
    if back:  # hanging flat over the upper back, drawn on top of the body
        pts = np.stack([-(nw + 0.06) * np.cos(t), 0.02 + 0.17 * np.sin(t)], axis=1)
        b.parts.append(("hood_back", pts))
    else:  # standing behind the neck, drawn before the body
        pts = np.stack([-(nw + 0.055) * np.cos(t), 0.04 - 0.2 * np.sin(t)], axis=1)
        b.parts.insert(0, ("hood", pts))


def _skirt(b: _Builder, p: dict[str, float], y0: float, waist: float, ruffle: bool) -> None:
    hip = waist * p["hip"] / p["waist"]
    hem_w = hip * p["flare"]
    length = p["skirt_len"]
    curve = p["skirt_curve"] * p["flare"]
    upper = quad_bezier(_pt(-waist, y0), _pt(-hip * 1.02, y0 + 0.06), _pt(-hip, y0 + 0.17), 6)
    hem_l = _pt(-hem_w, y0 + length)
    side = quad_bezier(upper[-1], _pt(-(hip + hem_w) / 2 - 0.01, y0 + (0.17 + length) / 2), hem_l, 6)[1:]
    left = np.concatenate([upper, side])
    bottom = quad_bezier(hem_l, _pt(0.0, y0 + length + 2 * curve), _flip_x(hem_l), 12)[1:-1]
    b.parts.append(("skirt", np.concatenate([left, bottom, _mirror(left)])))
    b.pair("waist", _pt(-waist, y0))
    b.pair("hip", _pt(-hip, y0 + 0.17))
    b.pair("hem", hem_l)
    b.anchors["waist_c"] = _pt(0.0, y0)
    b.anchors["hem_c"] = _pt(0.0, y0 + length + curve)
    b.landmark_pair(4, _pt(-waist, y0))
    mark = hem_l
    if ruffle:
        mark = _ruffle(b, p, hem_l, curve)
    b.landmark_pair(6, mark)
    b.pair("leg_top", _pt(-hip * 0.45, y0 + 0.3))


def _ruffle(b: _Builder, p: dict[str, float], hem_l: Point, curve: float) -> Point:
    """A wavy flounce below the hem; the hem landmarks move to its outer bottom corners."""
    depth, waves = p["ruffle_depth"], int(p["ruffle_waves"])
    top = quad_bezier(hem_l - _pt(0, 0.015), _pt(0.0, hem_l[1] + 2 * curve - 0.015), _flip_x(hem_l) - _pt(0, 0.015), 40)
    t = np.linspace(0, 1, len(top))
    spread = 1.0 + 0.12 * np.abs(2 * t - 1)
    lower = top.copy()
    lower[:, 0] *= spread
    lower[:, 1] += depth + 0.35 * depth * np.abs(np.sin(t * math.pi * waves))
    b.parts.append(("ruffle", np.concatenate([top, lower[::-1]])))
    b.anchors["ruffle_top_y"] = _pt(0.0, top[len(top) // 2, 1])
    return lower[0]


def _legs(b: _Builder, p: dict[str, float], y0: float, waist: float) -> None:
    hip = waist * p["hip"] / p["waist"]
    lw, length, rise = p["leg_w"], p["leg_len"], p["rise"]
    xc = max(hip * 0.52 + p["leg_spread"], lw + 0.02)
    hip_pt = _pt(-hip, y0 + 0.17)
    outer_hem, inner_hem = _pt(-xc - lw, y0 + length), _pt(-xc + lw, y0 + length)
    crotch = _pt(0.0, y0 + rise)
    knee_y = (hip_pt[1] + outer_hem[1]) / 2
    upper = quad_bezier(_pt(-waist, y0), _pt(-hip * 1.02, y0 + 0.06), hip_pt, 6)
    outer = quad_bezier(hip_pt, _pt((hip_pt[0] + outer_hem[0]) / 2 + p["knee_in"], knee_y), outer_hem, 8)[1:]
    inner_ctrl = _pt((inner_hem[0] + crotch[0]) / 2 - 0.01 + p["knee_in"] * 0.5, (inner_hem[1] + crotch[1]) / 2)
    inner = quad_bezier(inner_hem, inner_ctrl, crotch, 8)
    left = np.concatenate([upper, outer, inner[:-1]])
    b.parts.append(("legs", np.concatenate([left, crotch[None], _mirror(left)])))
    b.pair("waist", _pt(-waist, y0))
    b.pair("hip", hip_pt)
    b.pair("leg_hem", _pt(-xc, y0 + length))
    b.pair("leg_out", outer_hem)
    b.pair("leg_in", inner_hem)
    b.pair("knee", _pt(-xc + p["knee_in"] * 0.5, min(knee_y + 0.05, y0 + length - 0.06)))
    b.pair("hem", outer_hem)
    b.pair("leg_top", _pt(-xc, y0 + 0.3))
    b.anchors["waist_c"] = _pt(0.0, y0)
    b.anchors["crotch"] = crotch
    b.anchors["hem_c"] = _pt(0.0, y0 + length)
    b.landmark_pair(4, _pt(-waist, y0))
    b.landmark_pair(6, _pt(-xc, y0 + length))


def _wearer_lower(b: _Builder, p: dict[str, float]) -> None:
    """Body anchors above a lower-body garment (whose waist is at y = 0)."""
    b.anchors["head"] = _pt(0.0, -0.64)
    b.anchors["body_top"] = _pt(0.0, -0.46)
    b.pair("shoulder", _pt(-0.2, -0.42))
    b.pair("arm", _pt(-0.2, -0.36))
    b.pair("hand", _pt(-0.3, 0.22))
    b.anchors["torso_waist_l"] = _pt(-p["waist"] * 1.05, 0.02)
    b.anchors["torso_waist_r"] = _pt(p["waist"] * 1.05, 0.02)


def build_garment(item: ItemSpec, canvas: int, back: bool = False) -> Garment:
    """The item's silhouette (front or back view) fitted onto a ``canvas`` x ``canvas`` image.

    The fit is computed from the front view, so front and back layers of one item share the same pixel frame.
    """
    units = _build_units(item, back)
    front = units if not back else _build_units(item, False)
    pts = np.concatenate([poly for _, poly in front.parts])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    scale = _FILL * canvas / float(max(hi - lo))
    offset = np.array([canvas / 2, canvas / 2]) - scale * (lo + hi) / 2

    def fit(x: np.ndarray) -> np.ndarray:
        return x * scale + offset

    return Garment(
        parts=[(role, fit(poly)) for role, poly in units.parts],
        landmarks=fit(units.landmarks),
        anchors={name: fit(pt) for name, pt in units.anchors.items()},
        unit=scale,
        origin=offset,
    )


def _build_units(item: ItemSpec, back: bool) -> _Builder:
    b = _Builder()
    p = item.shape
    kind = item.spec.kind
    ruffle = item.has("ruffle hem")
    if kind == "top":
        _bodice(b, p, back, p["length"], p["hem_w"], p["hem_curve"])
        if ruffle:
            b.landmark_pair(6, _ruffle(b, p, b.anchors["hem_l"], p["hem_curve"]))
        else:
            b.landmark_pair(6, b.anchors["hem_l"])
        b.pair("leg_top", _pt(-0.09, 0.75))
        b.pair("foot", _pt(-0.12, 1.55))
        b.pair("hip", _pt(-p["hem_w"] * 0.9, min(p["length"], 0.6)))
        b.anchors["waist_c"] = _pt(0.0, p["waist_y"])
    elif kind in ("dress", "jumpsuit"):
        waist_y, waist = p["waist_y"], p["waist_w"]
        _bodice(b, p, back, waist_y, waist, None)
        if kind == "dress":
            _skirt(b, p, waist_y, waist, ruffle)
        else:
            _legs(b, p, waist_y, waist)
        b.anchors["head"] = _pt(0.0, -0.2)
        b.pair("foot", _pt(-0.12, waist_y + 1.12))
    else:
        if kind == "skirt":
            _skirt(b, p, 0.0, p["waist"], ruffle)
        else:
            _legs(b, p, 0.0, p["waist"])
        _wearer_lower(b, p)
        b.pair("foot", _pt(-0.12, 1.12))
    if item.has("hood"):
        _hood(b, p, back)
    return b
