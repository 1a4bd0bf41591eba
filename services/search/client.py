"""`fashion search IMAGE`: call FindSimilar with a deadline, print the results, optionally write an HTML page.

The page is one self-contained file (every picture inlined as a data URI) so it can be mailed or archived:
the query photo with the predicted landmarks drawn on it, its category and attributes, and the ranked
results with thumbnails read from each hit's image_uri when that is a local file.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from html import escape
from pathlib import Path

import grpc
from PIL import Image, ImageOps
from rich.console import Console
from rich.table import Table

from fashion.v1 import common_pb2, search_pb2, search_pb2_grpc
from services.search.page import (
    CSS,
    QUERY_PX,
    THUMB_PX,
    card,
    data_uri,
    draw_garments,
    draw_landmarks,
    garment_rows,
    price,
    query_header,
)
from shared.config import ImageSettings
from shared.errors import FashionError, InvalidInput, TooLarge
from shared.grpc.client import call_with_deadline, channel
from shared.grpc.errors import error_from_rpc
from shared.grpc.server import DEFAULT_MAX_MESSAGE_BYTES
from shared.grpc.tls import client_credentials
from shared.imaging import ImageIntake, ImageSource

__all__ = ["draw_landmarks", "find_similar_cli", "print_results", "query_picture", "write_html"]


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
    region: tuple[float, float, float, float] | None = None,
) -> search_pb2.FindSimilarResponse:
    """Send `image_path` to FindSimilar at `address`, print a table, write the page to `html` if given.

    `region` (x1, y1, x2, y2 as fractions of the photo) searches just that part of it, as a shopper's adjusted
    box does. Failures raise the typed error matching the status code (the CLI prints its message).
    """
    console = console or Console()
    image_bytes = _read_query(image_path, max_message_bytes)
    request = search_pb2.FindSimilarRequest(
        image=common_pb2.ImageInput(data=image_bytes, id=image_path.name), top_k=top_k,
        filters=search_pb2.Filters(categories=list(categories), attributes=list(attributes), min_price=min_price,
                                   max_price=max_price, in_stock_only=in_stock_only),
        region=common_pb2.Box(x1=region[0], y1=region[1], x2=region[2], y2=region[3]) if region else None)
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


def parse_region(text: str) -> tuple[float, float, float, float]:
    """`x1,y1,x2,y2` (fractions of the photo) from the command line; the server checks the box itself."""
    parts = [p.strip() for p in text.split(",")]
    try:
        x1, y1, x2, y2 = (float(p) for p in parts)
    except ValueError:
        raise InvalidInput(f"expected --region x1,y1,x2,y2 (four fractions of the photo, e.g. 0.1,0.2,0.6,0.9), "
                           f"got {text!r}") from None
    return x1, y1, x2, y2


def _read_query(path: Path, max_bytes: int) -> bytes:
    if not path.is_file():
        raise InvalidInput(f"{path}: expected an existing image file")
    with path.open("rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TooLarge(f"{path}: expected at most {max_bytes} bytes (the gRPC message limit)")
    return data


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
                      price(hit), "yes" if hit.in_stock else "[red]no[/]")
    console.print(table)
    for n, g in enumerate(response.garments, start=1):
        d = g.garment
        console.print(f"garment {n}: {d.garment_class} ({d.score:.0%}) at ({d.box.x1:.2f}, {d.box.y1:.2f}, "
                      f"{d.box.x2:.2f}, {d.box.y2:.2f}), {g.analysis.category.name}: "
                      + ", ".join(f"{h.product_id} {h.score:.3f}" for h in g.hits[:5]))


# -- the HTML page ------------------------------------------------------------------------------------------

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
    return data_uri(image)


def query_picture(intake: ImageIntake, query_image_bytes: bytes,
                  response: search_pb2.FindSimilarResponse) -> Image.Image:
    """The query photo at a fixed display size (up or down, so dots look the same for any photo), with the
    landmarks the model predicted and each detected garment's numbered box drawn on it."""
    query = ImageOps.contain(intake.load(ImageSource(data=query_image_bytes), name="query image").image,
                             (QUERY_PX, QUERY_PX))
    if response.HasField("query_analysis"):
        query = draw_landmarks(query, response.query_analysis.landmarks)
    return draw_garments(query, response.garments)


def write_html(path: Path, query_image_bytes: bytes, response: search_pb2.FindSimilarResponse, *,
               intake: ImageIntake | None = None) -> Path:
    """Write one self-contained page: the query (landmarks and garment boxes drawn on it), a thumbnail per
    whole-image result, then one row per detected garment with its own results."""
    intake = intake or ImageSettings().image_intake()  # thumbnails of result files under the catalogue roots
    query = query_picture(intake, query_image_bytes, response)
    thumbs: dict[str, str | None] = {}

    def thumb(uri: str) -> str | None:
        if uri not in thumbs:
            thumbs[uri] = _thumbnail(uri, intake)
        return thumbs[uri]

    cards = [card(hit, thumb(hit.image_uri)) for hit in response.hits]
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>FashionNet search '
            f"{escape(response.query_id)}</title><style>{CSS}</style></head><body>"
            f"{query_header(data_uri(query), response)}"
            f'<main><div class="cards">{"".join(cards)}</div></main>'
            f"{garment_rows(response.garments, thumb)}</body></html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
