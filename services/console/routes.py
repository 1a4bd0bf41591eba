"""What each console URL does: read the request, call the services over gRPC (`Backend`), render a page.

Errors from the services arrive as typed errors carrying the server's message; they are shown in the page's
error box with a matching HTTP status, never as a traceback.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from http import HTTPStatus
from secrets import token_urlsafe
from urllib.parse import unquote

from services.console import admin_views, search_views
from services.console.backend import Backend, SearchForm
from services.console.health import MetricsSource, read_health
from services.console.layout import JS, page
from services.console.sessions import (
    COOKIE,
    AdminSessions,
    clear_cookie_header,
    cookie_header,
    csrf_ok,
)
from services.console.web import Request, Response, redirect
from services.search.client import query_picture
from services.search.page import data_uri
from shared.errors import FashionError, InvalidInput, NotFound, TooLarge, Unauthenticated, Unavailable
from shared.imaging import ImageIntake

STATUS = ((Unauthenticated, 401), (TooLarge, 413), (InvalidInput, 400), (NotFound, 404), (Unavailable, 503))


ROUTES = {("GET", "/"): "search_get", ("POST", "/search"): "search_post", ("POST", "/click"): "click",
          ("GET", "/similar"): "similar", ("GET", "/catalogue"): "catalogue", ("GET", "/models"): "models",
          ("POST", "/login"): "login", ("POST", "/logout"): "logout", ("POST", "/models/retrain"): "retrain",
          ("POST", "/models/promote"): "promote", ("POST", "/models/rollback"): "rollback",
          ("GET", "/health"): "health", ("GET", "/console.js"): "script", ("GET", "/healthz"): "alive"}


def status_of(error: FashionError) -> int:
    return next((code for cls, code in STATUS if isinstance(error, cls)), HTTPStatus.BAD_GATEWAY)


class LRU(OrderedDict):
    """A small bounded cache (kept photos, thumbnails)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.lock = threading.Lock()

    def put(self, key, value) -> None:
        with self.lock:
            self[key] = value
            self.move_to_end(key)
            while len(self) > self.size:
                self.popitem(last=False)

    def take(self, key):
        with self.lock:
            return self.get(key)


def _float(text: str, name: str) -> float | None:
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise InvalidInput(f"expected a number for {name}, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def search_form(request: Request) -> SearchForm:
    top_k = request.field("top_k", "12").strip() or "12"
    if not top_k.isdigit():
        raise InvalidInput(f"expected a whole number of results, got {top_k!r}")
    return SearchForm(categories=_names(request.field("category")), attributes=_names(request.field("attributes")),
                      min_price=_float(request.field("min_price"), "the minimum price"),
                      max_price=_float(request.field("max_price"), "the maximum price"),
                      in_stock_only=bool(request.field("in_stock")), top_k=int(top_k))


class Console:
    """The console's routes. `intake` decodes a searched photo to draw its landmarks (after FindSimilar took it:
    the public intake, the same limits the search service applies)."""

    def __init__(self, backend: Backend, sessions: AdminSessions, intake: ImageIntake,
                 metrics: Sequence[MetricsSource], *, max_upload_bytes: int) -> None:
        self.backend = backend
        self.sessions = sessions
        self.intake = intake
        self.metrics = list(metrics)
        self.max_upload_bytes = max_upload_bytes
        self.photos = LRU(64)  # photo id -> bytes: change a filter without uploading again
        self.thumbs = LRU(1024)

    def handle(self, request: Request) -> Response:
        if request.method == "POST" and not request.same_origin():
            return Response("expected a form posted from this console (Origin or Referer naming this host)",
                            HTTPStatus.FORBIDDEN, "text/plain; charset=utf-8")
        name = ROUTES.get((request.method, request.path))
        if name is None and request.method == "GET" and request.path.startswith("/image/"):
            name = "image"
        if name is None:
            return Response(page("Not found", "", error=f"no page at {request.path}"), HTTPStatus.NOT_FOUND)
        return getattr(self, name)(request)

    # -- search --------------------------------------------------------------------------------------------
    def search_get(self, request: Request) -> Response:
        return Response(search_views.search_page(SearchForm()))

    def search_post(self, request: Request) -> Response:
        photo_id = request.field("photo_id")
        form = SearchForm()
        try:
            form = search_form(request)
            photo = request.files.get("photo") or None
            if photo is None:
                photo = self.photos.take(photo_id) if photo_id else None
                if photo is None:
                    raise InvalidInput("expected a photo: pick or drop an image file")
            elif len(photo) > self.max_upload_bytes:
                raise TooLarge(f"expected a photo of at most {self.max_upload_bytes // 2**20} MiB, got "
                               f"{len(photo) / 2**20:.1f} MiB")
            else:
                photo_id = token_urlsafe(12)
                self.photos.put(photo_id, photo)
            response = self.backend.find_similar(image=photo, form=form)
            query = data_uri(query_picture(self.intake, photo, response))
        except FashionError as exc:
            kept = photo_id if self.photos.take(photo_id) is not None else ""
            return Response(search_views.search_page(form, photo_id=kept, error=str(exc)), status_of(exc))
        return Response(search_views.search_page(form, response=response, query_src=query, photo_id=photo_id))

    def click(self, request: Request) -> Response:
        try:
            position = int(request.field("position", "-1"))
            accepted = self.backend.record_click(request.field("query_id"), request.field("product_id"), position)
            message = "click recorded" if accepted else "click not recorded"
            status = HTTPStatus.OK
        except (FashionError, ValueError) as exc:
            message, status = str(exc), status_of(exc) if isinstance(exc, FashionError) else HTTPStatus.BAD_REQUEST
        if request.arg("js"):
            return Response(message, status, "text/plain; charset=utf-8")
        body = '<main><p><a href="javascript:history.back()">Back to the results</a></p></main>'
        return Response(page("Click", body, note=message if status == 200 else None,
                             error=None if status == 200 else message), status)

    def similar(self, request: Request) -> Response:
        product_id = request.arg("product_id").strip()
        try:
            if not product_id:
                raise InvalidInput("expected a product_id")
            response = self.backend.find_similar(product_id=product_id, form=SearchForm(top_k=12))
            found = self.backend.list_products(product_id, limit=1, offset=0).products
            images = found[0].images if found and found[0].product_id == product_id else ()
            query = search_views.image_url(images[0].image_id, 360) if images else ""
        except FashionError as exc:
            return Response(search_views.similar_page(product_id, None, "", error=str(exc)), status_of(exc))
        return Response(search_views.similar_page(product_id, response, query))

    def catalogue(self, request: Request) -> Response:
        query = request.arg("q")
        page_no = int(request.arg("page", "0")) if request.arg("page", "0").isdigit() else 0
        try:
            listing = self.backend.list_products(query, limit=search_views.CATALOGUE_PAGE,
                                                 offset=page_no * search_views.CATALOGUE_PAGE)
        except FashionError as exc:
            return Response(search_views.catalogue_page(query, page_no, None, error=str(exc)), status_of(exc))
        return Response(search_views.catalogue_page(query, page_no, listing))

    def image(self, request: Request) -> Response:
        image_id = unquote(request.path.removeprefix("/image/"))
        px = int(request.arg("px", "220")) if request.arg("px", "220").isdigit() else 220
        key = (image_id, px)
        jpeg = self.thumbs.take(key)
        if jpeg is None:
            try:
                jpeg = self.backend.image(image_id, px)
            except FashionError as exc:
                return Response(str(exc), status_of(exc), "text/plain; charset=utf-8")
            self.thumbs.put(key, jpeg)
        return Response(jpeg, content_type="image/jpeg", headers=[("Cache-Control", "private, max-age=300")])

    # -- models (admin) ------------------------------------------------------------------------------------
    def _session(self, request: Request):
        return self.sessions.get(request.cookie(COOKIE))

    def models(self, request: Request, *, note: str | None = None, error: str | None = None,
               status: int = HTTPStatus.OK) -> Response:
        session = self._session(request)
        if session is None:
            return Response(admin_views.login_page(error=error), status)
        try:
            models, runs = self.backend.list_models(session.token), self.backend.list_runs(session.token)
        except FashionError as exc:
            if isinstance(exc, Unauthenticated):  # the services' token changed: log in again
                self.sessions.close(request.cookie(COOKIE))
                return Response(admin_views.login_page(error=str(exc)), HTTPStatus.UNAUTHORIZED,
                                headers=[("Set-Cookie", clear_cookie_header())])
            return Response(admin_views.models_page([], [], session.csrf, error=str(exc)), status_of(exc))
        return Response(admin_views.models_page(models, runs, session.csrf, note=note, error=error), status)

    def login(self, request: Request) -> Response:
        token = request.field("token").strip()
        try:
            if not token:
                raise InvalidInput("expected the admin token")
            self.backend.list_models(token)  # the services decide: a wrong token is refused there
        except FashionError as exc:
            message = ("The admin token was refused: " + str(exc)) if isinstance(exc, Unauthenticated) else str(exc)
            return Response(admin_views.login_page(error=message), status_of(exc))
        session_id = self.sessions.open(token)
        return redirect("/models", ("Set-Cookie", cookie_header(session_id, self.sessions.ttl_s)))

    def logout(self, request: Request) -> Response:
        if csrf_ok(self._session(request), request.field("csrf")):
            self.sessions.close(request.cookie(COOKIE))
        return redirect("/models", ("Set-Cookie", clear_cookie_header()))

    def _admin_action(self, request: Request, action) -> Response:
        session = self._session(request)
        if session is None:
            return Response(admin_views.login_page(error="expected an admin login first"), HTTPStatus.UNAUTHORIZED)
        if not csrf_ok(session, request.field("csrf")):
            return self.models(request, error="expected the form's CSRF token: reload the page and try again",
                               status=HTTPStatus.FORBIDDEN)
        try:
            note = action(session.token)
        except FashionError as exc:
            return self.models(request, error=str(exc), status=status_of(exc))
        return self.models(request, note=note)

    def retrain(self, request: Request) -> Response:
        epochs = request.field("epochs", "0").strip() or "0"

        def run(token: str) -> str:
            if not epochs.isdigit():
                raise InvalidInput(f"expected a whole number of epochs, got {epochs!r}")
            started = self.backend.trigger_retrain(token, reason=request.field("reason"), epochs=int(epochs))
            return f"training run {started.run_id} " + ("started" if started.created else "already active")

        return self._admin_action(request, run)

    def promote(self, request: Request) -> Response:
        version = request.field("version")
        return self._admin_action(request, lambda token: f"{self.backend.promote(token, version).version} is serving")

    def rollback(self, request: Request) -> Response:
        return self._admin_action(
            request, lambda token: f"rolled back: {self.backend.rollback(token).version} is serving again")

    # -- health and assets ---------------------------------------------------------------------------------
    def health(self, request: Request) -> Response:
        """The metrics for anyone; the latest dead letters only with the admin login, since their reasons can
        name the paths and hosts a catalogue event gave."""
        names = [getattr(s, "__name__", "metrics") for s in self.metrics]
        session = self._session(request)
        letters, letters_error = None, None
        if session is not None:
            try:
                letters = self.backend.list_dead_letters(session.token)
            except FashionError as exc:
                letters_error = (f"the admin token was refused, log in again ({exc})"
                                 if isinstance(exc, Unauthenticated) else str(exc))
        return Response(admin_views.health_page(read_health(self.metrics), names, logged_in=session is not None,
                                                dead_letters=letters, dead_letters_error=letters_error))

    def script(self, request: Request) -> Response:
        return Response(JS, content_type="text/javascript; charset=utf-8",
                        headers=[("Cache-Control", "no-cache")])

    def alive(self, request: Request) -> Response:
        return Response("ok", content_type="text/plain; charset=utf-8")
