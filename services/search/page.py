"""The search page: the query photo with its landmarks drawn, what the model saw, and the ranked products as
cards. One renderer for the page `fashion search --html` writes (self-contained, every picture a data URI) and
for the web console's search and catalogue pages (pictures served by the console)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from html import escape

from PIL import Image, ImageDraw

from fashion.v1 import common_pb2, search_pb2

QUERY_PX = 360
THUMB_PX = 220
# One colour per landmark slot (collar, sleeve, waistline, hem; left/right share a hue, right is lighter).
LANDMARK_COLOURS = ("#e6194b", "#f58231", "#3cb44b", "#9be37b", "#4363d8", "#76a9ff", "#911eb4", "#d69cf0")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f6f4;color:#222}
header{background:#fff;border-bottom:1px solid #e3e3e0;padding:24px 32px;display:flex;gap:28px;flex-wrap:wrap}
h1{font-size:20px;margin:0 0 10px}
.query img{max-width:360px;border-radius:6px;display:block}
.meta p{margin:4px 0}.muted{color:#666;font-size:13px}
.chip{display:inline-block;background:#eef1f7;border-radius:10px;padding:2px 9px;margin:2px;font-size:13px}
.legend span{display:inline-block;margin-right:10px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px;vertical-align:middle}
main{padding:24px 32px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:18px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);overflow:hidden}
.card .img{height:220px;display:flex;align-items:center;justify-content:center;background:#fafafa}
.card .img img{max-width:100%;max-height:220px}.noimg{color:#888;font-size:13px}
.card .body{padding:10px 12px;font-size:14px}.card .title{font-weight:600;margin:2px 0 4px}
.rank{float:right;color:#767676;font-size:12px}.out{color:#b3261e}
.garment{padding:8px 32px 16px}.garment h2{font-size:16px;margin:8px 0}
.garment h2 i{display:inline-block;width:12px;height:12px;margin-right:8px;vertical-align:middle}
"""


def data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def price(hit: search_pb2.SearchHit) -> str:
    return f"{hit.price:,.2f} {hit.currency}".strip() if hit.price or hit.currency else "-"


def draw_landmarks(image: Image.Image, landmarks: Sequence[common_pb2.Landmark]) -> Image.Image:
    """A copy of `image` with visible landmarks as filled dots and occluded ones as rings (absent/truncated: none)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    radius = max(3, min(out.size) // 45)
    for index, lm in enumerate(landmarks):
        if lm.visibility not in (common_pb2.VISIBILITY_VISIBLE, common_pb2.VISIBILITY_OCCLUDED):
            continue
        x, y = lm.x * out.width, lm.y * out.height
        box = (x - radius, y - radius, x + radius, y + radius)
        colour = LANDMARK_COLOURS[index % len(LANDMARK_COLOURS)]
        if lm.visibility == common_pb2.VISIBILITY_VISIBLE:
            draw.ellipse(box, fill=colour, outline="white", width=max(1, radius // 3))
        else:
            draw.ellipse(box, outline=colour, width=max(2, radius // 2))
    return out


GARMENT_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324")


def draw_garments(image: Image.Image, garments: Sequence[search_pb2.GarmentResult]) -> Image.Image:
    """A copy of `image` with each detected garment's box, numbered as its result row below the page's header."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(2, min(out.size) // 120)
    for n, g in enumerate(garments, start=1):
        b = g.garment.box
        colour = GARMENT_COLOURS[(n - 1) % len(GARMENT_COLOURS)]
        x1, y1 = b.x1 * out.width, b.y1 * out.height
        draw.rectangle((x1, y1, b.x2 * out.width, b.y2 * out.height), outline=colour, width=width)
        label = f"{n} {g.garment.garment_class}"
        draw.rectangle((x1, y1, x1 + 7 * len(label) + 6, y1 + 14), fill=colour)
        draw.text((x1 + 3, y1 + 1), label, fill="white")
    return out


def garment_rows(garments: Sequence[search_pb2.GarmentResult], thumb: Callable[[str], str | None]) -> str:
    """One section per detected garment: its colour and number (as drawn on the query), what it is, its hits."""
    e = escape
    rows = []
    for n, g in enumerate(garments, start=1):
        colour = GARMENT_COLOURS[(n - 1) % len(GARMENT_COLOURS)]
        d = g.garment
        rows.append(f'<section class="garment"><h2><i style="background:{colour}"></i>Garment {n}: '
                    f"{e(d.garment_class)} ({d.score:.0%}) &middot; {e(g.analysis.category.name)} "
                    f'<span class="muted">query {e(g.query_id)}</span></h2>'
                    f'<div class="cards">{"".join(card(h, thumb(h.image_uri)) for h in g.hits)}</div></section>')
    return "".join(rows)


def card(hit: search_pb2.SearchHit, thumb: str | None, *, actions: str = "") -> str:
    """One product card; `thumb` is the picture's src (None: a placeholder), `actions` extra HTML at the bottom
    (the console's click and "more like this" buttons)."""
    e = escape
    picture = (f'<img src="{e(thumb)}" alt="{e(hit.title or hit.product_id)}">' if thumb
               else '<span class="noimg">no local image</span>')
    stock = "in stock" if hit.in_stock else '<span class="out">out of stock</span>'
    brand = f"{e(hit.brand)} &middot; " if hit.brand else ""
    return (f'<div class="card" data-product="{e(hit.product_id)}" data-category="{e(hit.category)}">'
            f'<div class="img">{picture}</div>'
            f'<div class="body"><span class="rank">#{hit.position + 1} &middot; {hit.score:.3f}</span>'
            f'<div class="title">{e(hit.title or hit.product_id)}</div>'
            f'<div class="muted">{brand}{e(hit.category or "-")} &middot; {e(hit.product_id)}</div>'
            f"<div>{e(price(hit))} &middot; {stock}</div>{actions}</div></div>")


def analysis_details(analysis: common_pb2.ImageAnalysis | None, *, scores: bool = False) -> str:
    """Category, attribute chips (with their scores when `scores`) and the landmark colour legend."""
    if analysis is None:
        return ""
    e = escape
    chips = "".join(f'<span class="chip">{e(a.name)}' + (f" {a.score:.2f}" if scores else "") + "</span>"
                    for a in analysis.attributes)
    legend = "".join(f'<span><i style="background:{LANDMARK_COLOURS[i % len(LANDMARK_COLOURS)]}"></i>'
                     f"{e(lm.name)}</span>" for i, lm in enumerate(analysis.landmarks))
    return (f"<p><b>{e(analysis.category.name)}</b> "
            f'<span class="muted">{analysis.category.score:.0%}</span></p>'
            f"<p>{chips or '<span class=muted>no attribute above threshold</span>'}</p>"
            f'<p class="legend">{legend}</p>')


def response_summary(response: search_pb2.FindSimilarResponse) -> str:
    e = escape
    return (f'<p class="muted">query {e(response.query_id)} &middot; model {e(response.model.version)} '
            f"&middot; {len(response.hits)} results</p>")


def query_header(query_src: str, response: search_pb2.FindSimilarResponse, *, title: str = "Visually similar "
                 "products", scores: bool = False) -> str:
    """The header: the query picture (landmarks already drawn on it) beside what the model saw in it."""
    analysis = response.query_analysis if response.HasField("query_analysis") else None
    return (f'<header><div class="query"><img src="{escape(query_src)}" alt="query photo"></div>'
            f'<div class="meta"><h1>{escape(title)}</h1>{analysis_details(analysis, scores=scores)}'
            f"{response_summary(response)}</div></header>")
