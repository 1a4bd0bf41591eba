"""`fashion search IMAGE`: call FindSimilar with a deadline, print the results, optionally write an HTML page.

The page is one self-contained file (every picture inlined as a data URI) so it can be mailed or archived:
the query photo with the predicted landmarks drawn on it, its category and attributes, and the ranked
results with thumbnails read from each hit's image_uri when that is a local file.
"""

from __future__ import annotations

import base64
import io
import urllib.parse
from collections.abc import Sequence
from html import escape
from pathlib import Path

import grpc
from PIL import Image, ImageDraw, ImageOps
from rich.console import Console
from rich.table import Table

from fashion.v1 import common_pb2, search_pb2, search_pb2_grpc
from shared.config import ImageSettings
from shared.errors import FashionError, InvalidInput, TooLarge
from shared.grpc.client import call_with_deadline, channel
from shared.grpc.errors import error_from_rpc
from shared.grpc.server import DEFAULT_MAX_MESSAGE_BYTES
from shared.grpc.tls import client_credentials
from shared.imaging import ImageIntake, ImageSource

QUERY_PX = 360
THUMB_PX = 220
# One colour per landmark slot (collar, sleeve, waistline, hem; left/right share a hue, right is lighter).
LANDMARK_COLOURS = ("#e6194b", "#f58231", "#3cb44b", "#9be37b", "#4363d8", "#76a9ff", "#911eb4", "#d69cf0")


def find_similar_cli(
    address: str,
    image_path: Path,
    *,
    top_k: int = 10,
    categories: Sequence[str] = (),
    attributes: Sequence[str] = (),
    min_price: float | None = None,
    max_price: float | None = None,
    in_stock_only: bool = False,
    html: Path | None = None,
    timeout: float = 60.0,
    console: Console | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> search_pb2.FindSimilarResponse:
    """Send `image_path` to FindSimilar at `address`, print a table, write the page to `html` if given.

    Failures raise the typed error matching the status code (the CLI prints its message).
    """
    console = console or Console()
    image_bytes = _read_query(image_path, max_message_bytes)
    request = search_pb2.FindSimilarRequest(
        image=common_pb2.ImageInput(data=image_bytes, id=image_path.name), top_k=top_k,
        filters=search_pb2.Filters(categories=list(categories), attributes=list(attributes), min_price=min_price,
                                   max_price=max_price, in_stock_only=in_stock_only))
    with channel(address, max_message_bytes, credentials=client_credentials()) as ch:
        try:
            response = call_with_deadline(search_pb2_grpc.SearchServiceStub(ch).FindSimilar, request, timeout)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
    print_results(response, console, title=str(image_path))
    if html is not None:
        write_html(html, image_bytes, response)
        console.print(f"wrote {html}")
    return response


def _read_query(path: Path, max_bytes: int) -> bytes:
    if not path.is_file():
        raise InvalidInput(f"{path}: expected an existing image file")
    with path.open("rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TooLarge(f"{path}: expected at most {max_bytes} bytes (the gRPC message limit)")
    return data


def _price(hit: search_pb2.SearchHit) -> str:
    return f"{hit.price:,.2f} {hit.currency}".strip() if hit.price or hit.currency else "-"


def print_results(response: search_pb2.FindSimilarResponse, console: Console, *, title: str = "query") -> None:
    """A rich table of the hits, with what the model saw in the query above it."""
    if response.HasField("query_analysis"):
        analysis = response.query_analysis
        attrs = ", ".join(a.name for a in analysis.attributes[:8]) or "-"
        console.print(f"[bold]{title}[/]: {analysis.category.name} ({analysis.category.score:.0%}); "
                      f"attributes: {attrs}")
    table = Table(title=f"{len(response.hits)} similar products  (query {response.query_id}, "
                        f"model {response.model.version})")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("product")
    table.add_column("title")
    table.add_column("category")
    table.add_column("price", justify="right")
    table.add_column("in stock", justify="center")
    for hit in response.hits:
        table.add_row(str(hit.position + 1), f"{hit.score:.3f}", hit.product_id, hit.title, hit.category or "-",
                      _price(hit), "yes" if hit.in_stock else "[red]no[/]")
    console.print(table)
    for n, g in enumerate(response.garments, start=1):
        d = g.garment
        console.print(f"garment {n}: {d.garment_class} ({d.score:.0%}) at ({d.box.x1:.2f}, {d.box.y1:.2f}, "
                      f"{d.box.x2:.2f}, {d.box.y2:.2f}), {g.analysis.category.name}: "
                      + ", ".join(f"{h.product_id} {h.score:.3f}" for h in g.hits[:5]))


# -- the HTML page ------------------------------------------------------------------------------------------

def _data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _local_path(uri: str) -> Path | None:
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme == "" and uri:
        return Path(uri)
    return None


def _thumbnail(uri: str, intake: ImageIntake) -> str | None:
    """A data URI for a local image (None for remote or unreadable ones: the page stays self-contained)."""
    path = _local_path(uri)
    if path is None or not path.is_file():
        return None
    try:
        image = intake.load(ImageSource(uri=str(path))).image
    except FashionError:
        return None
    image.thumbnail((THUMB_PX, THUMB_PX))
    return _data_uri(image)


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


def _garment_rows(garments: Sequence[search_pb2.GarmentResult], thumb) -> str:
    """One section per detected garment: its colour and number (as drawn on the query), what it is, its hits."""
    e = escape
    rows = []
    for n, g in enumerate(garments, start=1):
        colour = GARMENT_COLOURS[(n - 1) % len(GARMENT_COLOURS)]
        d = g.garment
        rows.append(f'<section class="garment"><h2><i style="background:{colour}"></i>Garment {n}: '
                    f"{e(d.garment_class)} ({d.score:.0%}) &middot; {e(g.analysis.category.name)} "
                    f'<span class="muted">query {e(g.query_id)}</span></h2>'
                    f'<div class="row">{"".join(_card(h, thumb(h.image_uri)) for h in g.hits)}</div></section>')
    return "".join(rows)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f6f4;color:#222}
header{background:#fff;border-bottom:1px solid #e3e3e0;padding:24px 32px;display:flex;gap:28px;flex-wrap:wrap}
h1{font-size:20px;margin:0 0 10px}
.query img{max-width:360px;border-radius:6px;display:block}
.meta p{margin:4px 0}.muted{color:#777;font-size:13px}
.chip{display:inline-block;background:#eef1f7;border-radius:10px;padding:2px 9px;margin:2px;font-size:13px}
.legend span{display:inline-block;margin-right:10px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px;vertical-align:middle}
main{padding:24px 32px;display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:18px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);overflow:hidden}
.card .img{height:220px;display:flex;align-items:center;justify-content:center;background:#fafafa}
.card .img img{max-width:100%;max-height:220px}.noimg{color:#aaa;font-size:13px}
.card .body{padding:10px 12px;font-size:14px}.card .title{font-weight:600;margin:2px 0 4px}
.rank{float:right;color:#999;font-size:12px}.out{color:#b3261e}
.garment{padding:8px 32px 16px}.garment h2{font-size:16px;margin:8px 0}
.garment h2 i{display:inline-block;width:12px;height:12px;margin-right:8px;vertical-align:middle}
.garment .row{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:18px}
"""


def _card(hit: search_pb2.SearchHit, thumb: str | None) -> str:
    e = escape
    picture = (f'<img src="{thumb}" alt="{e(hit.product_id)}">' if thumb
               else '<span class="noimg">no local image</span>')
    stock = "in stock" if hit.in_stock else '<span class="out">out of stock</span>'
    brand = f"{e(hit.brand)} &middot; " if hit.brand else ""
    return (f'<div class="card"><div class="img">{picture}</div><div class="body">'
            f'<span class="rank">#{hit.position + 1} &middot; {hit.score:.3f}</span>'
            f'<div class="title">{e(hit.title or hit.product_id)}</div>'
            f'<div class="muted">{brand}{e(hit.category or "-")} &middot; {e(hit.product_id)}</div>'
            f"<div>{e(_price(hit))} &middot; {stock}</div></div></div>")


def write_html(path: Path, query_image_bytes: bytes, response: search_pb2.FindSimilarResponse, *,
               intake: ImageIntake | None = None) -> Path:
    """Write one self-contained page: the query (landmarks and garment boxes drawn on it), a thumbnail per
    whole-image result, then one row per detected garment with its own results."""
    e = escape
    intake = intake or ImageSettings().image_intake()  # thumbnails of result files under the catalogue roots
    # Scaled to a fixed display size (up or down) before drawing, so dots look the same for any photo.
    query = ImageOps.contain(intake.load(ImageSource(data=query_image_bytes), name="query image").image,
                             (QUERY_PX, QUERY_PX))
    analysis = response.query_analysis if response.HasField("query_analysis") else None
    if analysis is not None:
        query = draw_landmarks(query, analysis.landmarks)
    query = draw_garments(query, response.garments)
    details = []
    if analysis is not None:
        details.append(f"<p><b>{e(analysis.category.name)}</b> "
                       f'<span class="muted">{analysis.category.score:.0%}</span></p>')
        chips = "".join(f'<span class="chip">{e(a.name)}</span>' for a in analysis.attributes)
        details.append(f"<p>{chips or '<span class=muted>no attribute above threshold</span>'}</p>")
        legend = "".join(f'<span><i style="background:{LANDMARK_COLOURS[i % len(LANDMARK_COLOURS)]}"></i>'
                         f"{e(lm.name)}</span>" for i, lm in enumerate(analysis.landmarks))
        details.append(f'<p class="legend">{legend}</p>')
    details.append(f'<p class="muted">query {e(response.query_id)} &middot; model {e(response.model.version)} '
                   f"&middot; {len(response.hits)} results</p>")
    thumbs: dict[str, str | None] = {}

    def thumb(uri: str) -> str | None:
        if uri not in thumbs:
            thumbs[uri] = _thumbnail(uri, intake)
        return thumbs[uri]

    cards = [_card(hit, thumb(hit.image_uri)) for hit in response.hits]
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>FashionNet search '
            f"{e(response.query_id)}</title><style>{_CSS}</style></head><body>"
            f'<header><div class="query"><img src="{_data_uri(query)}" alt="query photo"></div>'
            f'<div class="meta"><h1>Visually similar products</h1>{"".join(details)}</div></header>'
            f'<main>{"".join(cards)}</main>{_garment_rows(response.garments, thumb)}</body></html>\n')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
