"""Hostile image hosts, all on 127.0.0.1 and owned by the chaos process: they count every request, so a scenario can
tell whether a service fetched what it must not.

* `ImageHost`: answers any path with a valid image (a loopback host a catalogue event must not make ingest read).
* `Redirector`: answers 302 to a URL of another host (every redirect must be re-checked).
* `DripHost`: sends HTTP headers, then one body byte every `interval_s` seconds (a slow host: each read
  returns before a per-read socket timeout, so only a total deadline stops it).
* `SilentHost`: accepts the connection and never answers.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def png_bytes(size: int = 64, colour: tuple[int, int, int] = (200, 40, 90)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, format="PNG")
    return out.getvalue()


class _CountingServer:
    """A ThreadingHTTPServer on 127.0.0.1:<free port> in a daemon thread, counting requests by path."""

    def __init__(self, respond) -> None:
        counts: Counter[str] = Counter()
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with lock:
                    counts[self.path] += 1
                respond(self)

            def log_message(self, *args: object) -> None:
                pass

        self.counts = counts
        self._lock = lock
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="chaos-http", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def requests(self, path: str | None = None) -> int:
        with self._lock:
            return sum(self.counts.values()) if path is None else self.counts[path]


class ImageHost(_CountingServer):
    def __init__(self, image: bytes | None = None) -> None:
        body = image or png_bytes()

        def respond(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)

        super().__init__(respond)
        self.image = body

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class Redirector(_CountingServer):
    def __init__(self, target: str) -> None:
        def respond(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(302)
            handler.send_header("Location", target)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        super().__init__(respond)

    def url(self, path: str = "/r.jpg") -> str:
        # `localhost`, not 127.0.0.1: a host allow-list may admit the first hop; the target is still loopback.
        return f"http://localhost:{self.port}{path}"


class _SocketHost:
    """A raw listening socket; each connection is handled by `serve(conn)` in its own thread until `close()`."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.connections = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="chaos-socket-host", daemon=True)

    def url(self, path: str = "/slow.jpg") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self):
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
            threading.Thread(target=self._serve_quietly, args=(conn,), daemon=True).start()

    def _serve_quietly(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.serve(conn)

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop accepting and close every connection (a blocked reader then sees the end of the stream)."""
        self.stopped.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone keeps it listening
        with contextlib.suppress(OSError):
            self.sock.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


class DripHost(_SocketHost):
    def __init__(self, interval_s: float = 3.0, length: int = 100_000) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.length = length

    def serve(self, conn: socket.socket) -> None:
        conn.recv(65536)  # the request; whatever it is, the answer drips
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
                     + f"Content-Length: {self.length}\r\n\r\n".encode())
        for _ in range(self.length):
            if self.stopped.wait(self.interval_s):
                return
            conn.sendall(b"\xff")


class SilentHost(_SocketHost):
    def serve(self, conn: socket.socket) -> None:
        self.stopped.wait()  # accepted, never read, never answered
