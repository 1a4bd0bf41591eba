"""Search and catalogue pages: the photo form with its filters, the query analysis and the ranked products
(the cards of services/search/page.py, the same as `fashion search --html`), and the catalogue browser."""

from __future__ import annotations

from html import escape
from urllib.parse import quote, urlencode

from fashion.v1 import search_pb2
from services.console.backend import SearchForm
from services.console.layout import hidden, page
from services.search.page import card, query_header

THUMB_PX = 220
CATALOGUE_PAGE = 12


def image_url(image_id: str, px: int = THUMB_PX) -> str:
    return f"/image/{quote(image_id, safe='')}?px={px}"


def _value(number: float | None) -> str:
    return "" if number is None else f"{number:g}"


def search_form(form: SearchForm, *, photo_id: str = "", suggestions: tuple[str, ...] = ()) -> str:
    """The photo (drop, pick, or a phone's camera) and the filters. With `photo_id`, the last photo is kept on
    the server, so changing a filter needs no new upload."""
    e = escape
    keep = (hidden("photo_id", photo_id) + '<p class="muted">Searching with the last photo; pick another to '
            "replace it.</p>") if photo_id else ""
    options = "".join(f'<option value="{e(s)}">' for s in suggestions)
    return (
        '<section class="panel"><h1>Search by photo</h1>'
        '<form id="search-form" method="post" action="/search" enctype="multipart/form-data">'
        '<div class="row"><div><label for="photo">Photo (drop it below, pick a file, or take one)</label>'
        f'<input type="file" id="photo" name="photo" accept="image/*"{"" if photo_id else " required"}>'
        '<div id="drop" class="drop" aria-hidden="true">Drop a photo here</div></div>'
        '<div><label for="category">Category (comma-separated)</label>'
        f'<input type="text" id="category" name="category" list="category-suggestions" '
        f'value="{e(", ".join(form.categories))}"><datalist id="category-suggestions">{options}</datalist></div>'
        '<div><label for="attributes">Attributes, all required (comma-separated)</label>'
        f'<input type="text" id="attributes" name="attributes" value="{e(", ".join(form.attributes))}"></div>'
        '<div><label for="min_price">Min price</label>'
        f'<input type="number" id="min_price" name="min_price" step="any" min="0" value="{_value(form.min_price)}">'
        '</div><div><label for="max_price">Max price</label>'
        f'<input type="number" id="max_price" name="max_price" step="any" min="0" value="{_value(form.max_price)}">'
        '</div><div><label for="in_stock"><input type="checkbox" id="in_stock" name="in_stock" value="1"'
        f'{" checked" if form.in_stock_only else ""}> In stock only</label></div>'
        '<div><label for="top_k">Results</label>'
        f'<input type="number" id="top_k" name="top_k" min="1" max="100" value="{form.top_k}"></div>'
        f'<div>{keep}<button type="submit">Search</button> '
        '<progress id="progress" max="1" value="0" hidden aria-label="upload progress"></progress></div>'
        "</div></form></section>")


def click_actions(hit: search_pb2.SearchHit, query_id: str) -> str:
    """RecordClick with the query's real id (a form, so it works without JavaScript too) and "more like this"."""
    return ('<div class="actions"><form class="click inline" method="post" action="/click">'
            f'{hidden("query_id", query_id)}{hidden("product_id", hit.product_id)}{hidden("position", hit.position)}'
            f'<button type="submit" class="secondary" aria-label="Open {escape(hit.title or hit.product_id)}">'
            'Open</button> <span class="status muted" role="status"></span></form>'
            f'<a href="/similar?{urlencode({"product_id": hit.product_id})}">More like this</a></div>')


def results(response: search_pb2.FindSimilarResponse, query_src: str, *, title: str) -> str:
    cards = "".join(card(hit, image_url(hit.image_id) if hit.image_id else None,
                         actions=click_actions(hit, response.query_id)) for hit in response.hits)
    empty = "" if response.hits else '<p class="muted">No product matches these filters.</p>'
    return (f"{query_header(query_src, response, title=title, scores=True)}"
            f'<main><div class="cards" id="results">{cards}</div>{empty}</main>')


def search_page(form: SearchForm, *, response: search_pb2.FindSimilarResponse | None = None,
                query_src: str = "", photo_id: str = "", error: str | None = None) -> str:
    suggestions: tuple[str, ...] = ()
    if response is not None and response.HasField("query_analysis"):
        suggestions = tuple(c.name for c in response.query_analysis.categories)
    body = search_form(form, photo_id=photo_id, suggestions=suggestions)
    if response is not None:
        body += results(response, query_src, title="Visually similar products")
    return page("Search", body, active="/", error=error)


def similar_page(product_id: str, response: search_pb2.FindSimilarResponse | None, query_src: str, *,
                 error: str | None = None) -> str:
    body = results(response, query_src, title=f"More like {product_id}") if response is not None else ""
    return page(f"More like {product_id}", body, active="/catalogue", error=error)


def _prediction(image: search_pb2.CatalogImage) -> str:
    if not image.HasField("prediction"):
        return '<span class="muted">no stored prediction</span>'
    p = image.prediction
    attrs = ", ".join(f"{escape(a.name)} {a.score:.2f}" for a in p.attributes[:6]) or "no attributes"
    return f"{escape(p.category.name or '-')} {p.category.score:.0%}<br>{attrs}"


def _product(product: search_pb2.CatalogProduct) -> str:
    e = escape
    figures = "".join(
        f'<figure><img src="{image_url(i.image_id, 320)}" alt="{e(product.title or product.product_id)}, '
        f'{e(i.domain)} photo {e(i.image_id)}"><figcaption>{_prediction(i)}</figcaption></figure>'
        for i in product.images)
    price = f"{product.price:,.2f} {product.currency}".strip() if product.price or product.currency else "-"
    return (f'<article class="product" data-product="{e(product.product_id)}"><div class="info">'
            f'<h2>{e(product.title or product.product_id)}</h2><p class="muted">{e(product.product_id)}'
            f'{" &middot; " + e(product.brand) if product.brand else ""}</p>'
            f'<p>{e(product.category or "-")} &middot; {e(price)} &middot; '
            f'{"in stock" if product.in_stock else "out of stock"}</p>'
            f'<p>{"".join(f"<span class=chip>{e(a)}</span>" for a in product.attributes)}</p>'
            f'<p><a href="/similar?{urlencode({"product_id": product.product_id})}">More like this</a></p></div>'
            f'<div class="imgs">{figures}</div></article>')


def catalogue_page(query: str, page_no: int, listing: search_pb2.ListProductsResponse | None, *,
                   error: str | None = None) -> str:
    e = escape
    form = ('<section class="panel"><h1>Catalogue</h1><form method="get" action="/catalogue" class="row">'
            '<div><label for="q">Product id or title</label>'
            f'<input type="search" id="q" name="q" value="{e(query)}"></div>'
            '<div><button type="submit">Find</button></div></form></section>')
    if listing is None:
        return page("Catalogue", form, active="/catalogue", error=error)
    first = page_no * CATALOGUE_PAGE
    summary = (f'<p class="muted">{listing.total} products'
               + (f", showing {first + 1}-{first + len(listing.products)}" if listing.products else "")
               + (f"; predictions of model {e(listing.model_version)}" if listing.model_version else "") + "</p>")
    links = []
    if page_no > 0:
        links.append(f'<a href="/catalogue?{urlencode({"q": query, "page": page_no - 1})}">Previous</a>')
    if first + len(listing.products) < listing.total:
        links.append(f'<a href="/catalogue?{urlencode({"q": query, "page": page_no + 1})}">Next</a>')
    body = (form + f"<main>{summary}{''.join(_product(p) for p in listing.products)}"
            f'<p>{" &middot; ".join(links)}</p></main>')
    return page("Catalogue", body, active="/catalogue", error=error)
