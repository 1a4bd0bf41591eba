"""The console's HTTP plumbing on the standard library: requests and responses, form and multipart bodies with
a size cap, the same-origin check every POST passes, and the server as a host component (start/stop)."""

from __future__ import annotations

import email.parser
import email.policy
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    form: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def arg(self, name: str, default: str = "") -> str:
        return (self.query.get(name) or [default])[0]

    def field(self, name: str, default: str = "") -> str:
        return (self.form.get(name) or [default])[0]

    def cookie(self, name: str) -> str | None:
        jar = SimpleCookie()
        try:
            jar.load(self.headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no session
            return None
        return jar[name].value if name in jar else None

    def same_origin(self) -> bool:
        """A POST from one of our own pages: Origin (or, without it, Referer) names this host. With the
        SameSite=Strict session cookie this keeps other sites from posting in an admin's name."""
        host = self.headers.get("host", "")
        origin = self.headers.get("origin") or self.headers.get("referer") or ""
        parts = urlsplit(origin)
        return bool(host) and parts.scheme in ("http", "https") and parts.netloc == host


@dataclass
class Response:
    body: bytes | str
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def redirect(location: str, *headers: tuple[str, str]) -> Response:
    return Response(b"", HTTPStatus.SEE_OTHER, "text/plain", [("Location", location), *headers])


class BodyTooLarge(Exception):
    pass


def parse_body(content_type: str, body: bytes) -> tuple[dict[str, list[str]], dict[str, bytes]]:
    """Fields and files of an application/x-www-form-urlencoded or multipart/form-data body."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True), {}
    if not content_type.startswith("multipart/form-data"):
        return {}, {}
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    form: dict[str, list[str]] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[name] = payload
        else:
            form.setdefault(name, []).append(payload.decode("utf-8", "replace"))
    return form, files


Handler = Callable[[Request], Response]


def _handler_class(handle: Handler, max_body_bytes: int) -> type[BaseHTTPRequestHandler]:
    class ConsoleHandler(BaseHTTPRequestHandler):
        server_version = "FashionConsole"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: object) -> None:
            log.debug("console %s", fmt % args)

        def _serve(self, method: str) -> None:
            split = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            request = Request(method, split.path, parse_qs(split.query), headers)
            if method == "POST":
                length = int(headers.get("content-length") or 0)
                if length > max_body_bytes:
                    self._send(Response(f"expected a request body of at most {max_body_bytes} bytes, got {length}",
                                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "text/plain; charset=utf-8",
                                        [("Connection", "close")]))
                    return
                request.form, request.files = parse_body(headers.get("content-type", ""), self.rfile.read(length))
            try:
                response = handle(request)
            except Exception:  # a bug shows as a short message; the traceback goes to the log only
                log.exception("console %s %s failed", method, split.path)
                response = Response("The console failed on this request; its log has the details.",
                                    HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8")
            self._send(response)

        def _send(self, response: Response) -> None:
            body = response.body.encode("utf-8") if isinstance(response.body, str) else response.body
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Referrer-Policy", "same-origin")
            for name, value in response.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

    return ConsoleHandler


class HttpServer:
    """`handle` served on host:port in a thread. `optional`: a taken port logs one warning instead of failing
    the process (`fashion up`'s console is a convenience; `fashion console` alone fails loudly)."""

    def __init__(self, handle: Handler, host: str, port: int, *, max_body_bytes: int, optional: bool = False,
                 on_stop: Callable[[], object] | None = None) -> None:
        self._handler = _handler_class(handle, max_body_bytes)
        self.host, self.port, self.optional = host, port, optional
        self._on_stop = on_stop
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str | None:
        if self._server is None:
            return None
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self._server.server_address[1]}"

    def start(self) -> HttpServer:
        try:
            self._server = ThreadingHTTPServer((self.host, self.port), self._handler)
        except OSError as exc:
            if not self.optional:
                raise
            log.warning("web console not started: %s:%s is taken (%s); set FASHION_CONSOLE_PORT", self.host,
                        self.port, exc)
            return self
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="console-http", daemon=True)
        self._thread.start()
        log.info("web console on %s", self.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._on_stop is not None:
            self._on_stop()
