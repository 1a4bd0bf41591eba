"""The web console without a browser or services: request parsing, the same-origin rule, admin sessions, the
health figures from Prometheus text, and the routes against a fake backend (tests/integration/
test_console_browser.py drives the real thing in Chromium)."""

from __future__ import annotations

import io
import socket
import urllib.request

import pytest
from PIL import Image
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from fashion.v1 import admin_pb2, common_pb2, search_pb2
from services.console.admin_views import dead_letters_section
from services.console.backend import SearchForm
from services.console.health import read_health
from services.console.routes import Console
from services.console.sessions import COOKIE, AdminSessions, csrf_ok
from services.console.web import HttpServer, Request, parse_body
from shared.errors import InvalidInput, Unauthenticated, Unavailable
from shared.imaging import ImageIntake

TOKEN = "s3cret"
HOST = "console.test:8080"
LETTER = admin_pb2.DeadLetter(dlq_topic="catalog.uploads.dlq", source_topic="catalog.uploads", source_partition=2,
                              source_offset=41, error_type="NotFound", reason="image /srv/<b>x</b>.jpg not found",
                              key="product-7")
LETTER.dead_lettered_at.FromMilliseconds(1_700_000_000_000)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 60), "red").save(buf, format="PNG")
    return buf.getvalue()


class FakeBackend:
    def __init__(self) -> None:
        self.clicks: list[tuple[str, str, int]] = []
        self.searches: list[SearchForm] = []
        self.dead_letters_down = False

    def find_similar(self, *, image=None, product_id=None, form=None):
        if image is not None and not image.startswith(b"\x89PNG"):
            raise InvalidInput("query image: expected an image (JPEG, PNG), got bytes no decoder recognises")
        self.searches.append(form)
        analysis = common_pb2.ImageAnalysis(
            category=common_pb2.ScoredLabel(name="Tee", score=0.9),
            attributes=[common_pb2.ScoredLabel(name="cotton", score=0.81)],
            landmarks=[common_pb2.Landmark(name="left_collar", x=0.5, y=0.5, visibility=common_pb2.VISIBILITY_VISIBLE)])
        return search_pb2.FindSimilarResponse(query_id="q-1", query_analysis=analysis, hits=[
            search_pb2.SearchHit(product_id="p1", image_id="i1", title="<Red tee>", category="Tee", position=0)])

    def record_click(self, query_id, product_id, position):
        self.clicks.append((query_id, product_id, position))
        return True

    def _check(self, token):
        if token != TOKEN:
            raise Unauthenticated("expected metadata authorization: Bearer <admin token>")

    def list_models(self, token):
        self._check(token)
        return [admin_pb2.ModelVersion(version="v1", state="serving", serving=True, architecture="fashionnet")]

    def list_runs(self, token, limit=20):
        self._check(token)
        return []

    def rollback(self, token):
        self._check(token)
        return admin_pb2.ModelVersion(version="v0")

    def list_dead_letters(self, token, limit=20):
        self._check(token)
        if self.dead_letters_down:
            raise Unavailable("the Kafka broker at 127.0.0.1:9 did not answer within 10 s")
        return admin_pb2.ListDeadLettersResponse(dead_letters=[LETTER])


@pytest.fixture()
def console() -> Console:
    return Console(FakeBackend(), AdminSessions(60.0), ImageIntake(), [], max_upload_bytes=4096)


def _post(path: str, form=None, files=None, origin: str | None = f"http://{HOST}", cookie: str = "") -> Request:
    headers = {"host": HOST, "cookie": cookie}
    if origin:
        headers["origin"] = origin
    return Request("POST", path, {}, headers, {k: [v] for k, v in (form or {}).items()}, files or {})


def _get(path: str, cookie: str = "", **query) -> Request:
    return Request("GET", path, {k: [v] for k, v in query.items()}, {"host": HOST, "cookie": cookie})


def _cookie(response) -> str:
    header = dict(response.headers)["Set-Cookie"]
    return header.split(";", 1)[0]


def test_multipart_and_urlencoded_bodies() -> None:
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"category\"\r\n\r\nTee, Dress\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + _png() + f"\r\n--{boundary}--\r\n".encode()
    form, files = parse_body(f"multipart/form-data; boundary={boundary}", body)
    assert form == {"category": ["Tee, Dress"]} and files["photo"] == _png()
    assert parse_body("application/x-www-form-urlencoded", b"a=1&b=&a=2") == ({"a": ["1", "2"], "b": [""]}, {})


def test_posts_from_other_origins_are_refused(console: Console) -> None:
    for origin in (None, "https://evil.example", f"http://{HOST}.evil.example"):
        response = console.handle(_post("/login", {"token": TOKEN}, origin=origin))
        assert response.status == 403 and "Set-Cookie" not in dict(response.headers)


def test_search_renders_the_analysis_and_cards_and_keeps_the_photo(console: Console) -> None:
    response = console.handle(_post("/search", {"category": "Tee, Dress", "top_k": "5", "in_stock": "1"},
                                    {"photo": _png()}))
    page = response.body
    assert response.status == 200 and 'alt="query photo"' in page and "cotton 0.81" in page
    assert "&lt;Red tee&gt;" in page and 'name="query_id" value="q-1"' in page and "/image/i1?px=220" in page
    assert console.backend.searches[-1] == SearchForm(categories=("Tee", "Dress"), top_k=5, in_stock_only=True)
    photo_id = page.split('name="photo_id" value="', 1)[1].split('"', 1)[0]
    again = console.handle(_post("/search", {"photo_id": photo_id, "category": "Dress"}))
    assert again.status == 200 and console.backend.searches[-1].categories == ("Dress",)


@pytest.mark.parametrize(("form", "files", "status", "message"), [
    ({}, {"photo": b"x" * 5000}, 413, "expected a photo of at most"),
    ({}, {"photo": b"not an image"}, 400, "expected an image"),
    ({"min_price": "cheap"}, {"photo": _png()}, 400, "expected a number for the minimum price"),
    ({}, {}, 400, "expected a photo"),
])
def test_bad_searches_get_readable_errors(console: Console, form, files, status, message) -> None:
    response = console.handle(_post("/search", form, files))
    assert response.status == status and message in response.body and "Traceback" not in response.body


def test_a_click_carries_the_query_id(console: Console) -> None:
    response = console.handle(Request("POST", "/click", {"js": ["1"]}, {"host": HOST, "origin": f"http://{HOST}"},
                                      {"query_id": ["q-1"], "product_id": ["p1"], "position": ["0"]}))
    assert (response.status, response.body) == (200, "click recorded")
    assert console.backend.clicks == [("q-1", "p1", 0)]


def test_admin_login_keeps_the_token_on_the_server(console: Console) -> None:
    refused = console.handle(_post("/login", {"token": "wrong"}))
    assert refused.status == 401 and "admin token was refused" in refused.body
    assert "Set-Cookie" not in dict(refused.headers)
    accepted = console.handle(_post("/login", {"token": TOKEN}))
    header = dict(accepted.headers)["Set-Cookie"]
    assert accepted.status == 303 and "HttpOnly" in header and "SameSite=Strict" in header and TOKEN not in header
    models = console.handle(_get("/models", cookie=_cookie(accepted)))
    assert models.status == 200 and 'id="models"' in models.body and TOKEN not in models.body
    assert 'id="token"' in console.handle(_get("/models")).body  # no cookie: the login form


def test_admin_actions_need_the_sessions_csrf_token(console: Console) -> None:
    cookie = _cookie(console.handle(_post("/login", {"token": TOKEN})))
    forged = console.handle(_post("/models/rollback", {"csrf": "guess"}, cookie=cookie))
    assert forged.status == 403 and "CSRF" in forged.body
    session = console.sessions.get(cookie.split("=", 1)[1])
    done = console.handle(_post("/models/rollback", {"csrf": session.csrf}, cookie=cookie))
    assert done.status == 200 and "rolled back: v0 is serving again" in done.body


def test_the_latest_dead_letters_need_the_admin_login(console: Console) -> None:
    anonymous = console.handle(_get("/health")).body
    assert "Log in on the" in anonymous and "/srv/" not in anonymous
    cookie = _cookie(console.handle(_post("/login", {"token": TOKEN})))
    page = console.handle(_get("/health", cookie=cookie)).body
    assert 'id="dead-letters"' in page and "catalog.uploads[2]@41" in page and "2023-11-14 22:13:20" in page
    assert "image /srv/&lt;b&gt;x&lt;/b&gt;.jpg not found" in page and "<b>x" not in page
    console.backend.dead_letters_down = True
    down = console.handle(_get("/health", cookie=cookie))
    assert down.status == 200 and "Not available: the Kafka broker at 127.0.0.1:9 did not answer" in down.body
    stale = f"{COOKIE}={console.sessions.open('a token the services no longer take')}"
    assert "the admin token was refused, log in again" in console.handle(_get("/health", cookie=stale)).body


def test_the_dead_letters_section_escapes_and_says_when_there_is_nothing() -> None:
    empty = dead_letters_section(admin_pb2.ListDeadLettersResponse(missing_topics=["search.clicks.dlq"]),
                                 logged_in=True)
    assert "Nothing dead-lettered." in empty and "Not on the broker yet" in empty and "search.clicks.dlq" in empty
    assert "<table" not in empty
    truncated = admin_pb2.DeadLetter(source_topic="t", source_partition=0, source_offset=3, error_type="<TooLarge>",
                                     reason="", key="<k>", value_truncated=True)
    html = dead_letters_section(admin_pb2.ListDeadLettersResponse(dead_letters=[truncated]), logged_in=True)
    assert "&lt;TooLarge&gt;" in html and "&lt;k&gt;" in html and "value too large: not copied" in html
    assert "<td>-</td>" in html  # no dead-letter time header: shown as "-", not as 1970
    refused = dead_letters_section(None, logged_in=True, error="the admin token was refused, log in again (<x>)")
    assert "Not available: the admin token was refused, log in again (&lt;x&gt;)" in refused


def test_sessions_expire_and_csrf_compares_exactly() -> None:
    now = [0.0]
    sessions = AdminSessions(10.0, clock=lambda: now[0])
    sid = sessions.open(TOKEN)
    session = sessions.get(sid)
    assert session.token == TOKEN and csrf_ok(session, session.csrf) and not csrf_ok(session, session.csrf[:-1])
    assert not csrf_ok(None, "x") and not csrf_ok(session, "")
    now[0] = 11.0
    assert sessions.get(sid) is None and COOKIE


def test_health_figures_come_from_prometheus_text() -> None:
    registry = CollectorRegistry()
    Gauge("fashion_kafka_consumer_lag", "", ["topic", "partition"], registry=registry).labels("catalog.uploads",
                                                                                              "0").set(7)
    Counter("fashion_kafka_records_dlq_total", "", ["topic"], registry=registry).labels("catalog.uploads").inc(2)
    Counter("fashion_ingest_failures_total", "", ["error_type"], registry=registry).labels("InvalidInput").inc(2)
    batch = Histogram("fashion_batch_size", "", ["batcher"], buckets=(1, 8, 32), registry=registry)
    for size in (4, 8, 30):
        batch.labels("fashionnet").observe(size)
    text = generate_latest(registry).decode()

    def down() -> str:
        raise OSError("connection refused")

    health = read_health([lambda: text, lambda: text, down])
    assert health.lag == {"catalog.uploads": 14.0} and health.dlq == {"catalog.uploads": 4.0}
    assert health.failures == {"InvalidInput": 4.0}
    histo = health.batches["fashionnet"]
    assert histo.count == 6 and histo.mean == pytest.approx(14.0) and histo.quantile(0.5) == 8.0
    assert len(health.errors) == 1 and "connection refused" in health.errors[0]


def test_health_sums_the_replicas_prometheus_federates() -> None:
    """Kubernetes points the console at Prometheus' /federate: one text of every replica's samples, each with its
    instance and job labels and a timestamp (the shape Prometheus 2/3 serves), summed like separate sources."""
    rpc = 'grpc_method="FindSimilar",grpc_service="fashion.v1.SearchService"'
    text = f"""# TYPE fashion_kafka_consumer_lag untyped
fashion_kafka_consumer_lag{{instance="10.0.0.5:9100",job="ingest",partition="0",topic="catalog.uploads"}} 3 1764500000
fashion_kafka_consumer_lag{{instance="10.0.0.6:9100",job="ingest",partition="1",topic="catalog.uploads"}} 4 1764500000
# TYPE fashion_ingest_images_total untyped
fashion_ingest_images_total{{instance="10.0.0.5:9100",job="ingest"}} 100 1764500000000
fashion_ingest_images_total{{instance="10.0.0.6:9100",job="ingest"}} 20 1764500000000
# TYPE grpc_server_handling_seconds_count untyped
grpc_server_handling_seconds_count{{{rpc},instance="a"}} 5 1764500000000
grpc_server_handling_seconds_count{{{rpc},instance="b"}} 7 1764500000000
"""
    health = read_health([lambda: text])
    assert health.lag == {"catalog.uploads": 7.0} and health.images_indexed == 120.0
    assert health.latency["SearchService/FindSimilar"].count == 12.0 and not health.errors


def test_an_optional_server_on_a_taken_port_only_warns() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        optional = HttpServer(lambda r: None, "127.0.0.1", port, max_body_bytes=10, optional=True).start()
        assert optional.url is None
        optional.stop()
        with pytest.raises(OSError):
            HttpServer(lambda r: None, "127.0.0.1", port, max_body_bytes=10).start()


def test_the_server_caps_bodies_and_hides_tracebacks() -> None:
    def boom(request: Request):
        raise RuntimeError("secret internals")

    server = HttpServer(boom, "127.0.0.1", 0, max_body_bytes=100).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as big:
            urllib.request.urlopen(urllib.request.Request(f"{server.url}/search", data=b"x" * 1000), timeout=10)
        assert big.value.code == 413
        with pytest.raises(urllib.error.HTTPError) as crash:
            urllib.request.urlopen(f"{server.url}/", timeout=10)
        body = crash.value.read().decode()
        assert crash.value.code == 500 and "secret internals" not in body and "Traceback" not in body
    finally:
        server.stop()
