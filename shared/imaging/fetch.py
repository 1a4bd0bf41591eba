"""Reading what an `IntakePolicy` allowed: a file under the catalogue roots, or an http(s) URL, within one deadline.

Not urllib, because of what an attack on the running system showed:

* A timeout there is per read: a host dripping one byte every 3 s kept twenty FindSimilar calls (and with them
  every gRPC worker) busy far past their deadlines. Here one timer shuts the socket at the fetch's deadline,
  whatever the host sends, and every socket operation times out by then too.
* urlopen resolves the name itself (a rebinding DNS server could answer a private address the policy never saw)
  and follows redirects unchecked (a redirect to a loopback URL was indexed). Here each hop goes through
  `IntakePolicy.url_target` and connects to the address it checked.

`FetchSlots` bounds the downloads in progress per intake, so slow URLs cannot occupy every thread that serves.
Name resolution (of allowed hosts only, in `IntakePolicy.url_target`) keeps the system resolver's own timeouts.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import ssl
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from shared.errors import Unavailable
from shared.imaging.policy import IntakePolicy, Refused, UrlTarget

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADERS = {"Accept": "image/*", "User-Agent": "fashionnet-image-intake"}


class FetchTimeout(Exception):
    """The download did not finish before its deadline (nor, waiting for a slot, start)."""


class FetchSlots:
    """At most `size` downloads at once. `wait=False` (public RPCs) refuses at once with Unavailable, so a flood of
    slow URLs is answered quickly and leaves the server's other threads free; `wait=True` (ingest, re-index)
    waits for a slot until the fetch's deadline."""

    def __init__(self, size: int, *, wait: bool) -> None:
        self.size = size
        self.wait = wait
        self._free = threading.BoundedSemaphore(size)

    @contextlib.contextmanager
    def hold(self, deadline: float) -> Iterator[None]:
        if self.wait:
            acquired = self._free.acquire(timeout=max(0.0, deadline - time.monotonic()))
            if not acquired:
                raise FetchTimeout(f"no download slot free before the deadline ({self.size} in progress)")
        elif not self._free.acquire(blocking=False):
            raise Unavailable(f"expected at most {self.size} image URL downloads at once on this server, and that "
                              "many are in progress: retry shortly, or send the image bytes inline")
        try:
            yield
        finally:
            self._free.release()


def read_file(path: Path, max_bytes: int) -> bytes:
    """At most max_bytes + 1 bytes of the regular file at `path` (a FIFO or device would block or never end)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise Refused(f"cannot open {path}: {exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Refused(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as file:
        try:
            return file.read(max_bytes + 1)
        except OSError as exc:
            raise Refused(f"cannot read {path}: {exc}") from None


def fetch_url(target: UrlTarget, policy: IntakePolicy, *, deadline: float, max_bytes: int) -> bytes:
    """At most max_bytes + 1 bytes of the body behind `target` (what `policy.url_target` allowed), every
    redirect checked by `policy` again.

    Refused for anything the policy refuses and any failure of the host (unreachable, closed, not 200, cut short);
    FetchTimeout when `deadline` (a time.monotonic() instant) passes first.
    """
    for redirects in range(MAX_REDIRECTS + 1):
        body, location = _get(target, deadline, max_bytes)
        if body is not None:
            return body
        if redirects == MAX_REDIRECTS:
            break
        target = policy.url_target(urllib.parse.urljoin(target.url, location))
    raise Refused(f"more than {MAX_REDIRECTS} redirects")


def _check(deadline: float) -> float:
    """Seconds left until `deadline`; FetchTimeout when none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchTimeout("the download did not finish before its deadline")
    return left


class _Connection(http.client.HTTPConnection):
    """HTTP to the address the policy checked (the Host header still names the host)."""

    def __init__(self, target: UrlTarget, deadline: float) -> None:
        super().__init__(target.host, target.port, timeout=_check(deadline))
        self.target = target
        self.deadline = deadline
        self.cut = False  # set by the deadline timer
        # The socket the timer shuts: `sock` is dropped once a response is read to the end of the connection.
        self.live: socket.socket | None = None

    def connect(self) -> None:
        self.sock = self.live = socket.create_connection((self.target.address, self.target.port), self.timeout)
        _check(self.deadline)  # the timer may have fired before there was a socket to shut


class _TlsConnection(_Connection):
    default_port = 443  # no ":443" in the Host header

    def connect(self) -> None:
        super().connect()
        # The handshake is started only once `sock` is the TLS socket, so the deadline timer can cut it too.
        tls = ssl.create_default_context().wrap_socket(self.sock, server_hostname=self.target.host,
                                                       do_handshake_on_connect=False)
        self.sock = self.live = tls
        _check(self.deadline)
        tls.do_handshake()


def _cut(connection: _Connection) -> None:
    """Shut the connection's socket: a read blocked on a dripping host returns at once."""
    connection.cut = True
    sock = connection.live
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: for TLS too, without a TLS goodbye


def _get(target: UrlTarget, deadline: float, max_bytes: int) -> tuple[bytes | None, str | None]:
    """(body, None) for a 200, or (None, location) for a redirect."""
    connection = (_TlsConnection if target.scheme == "https" else _Connection)(target, deadline)
    timer = threading.Timer(_check(deadline), _cut, args=(connection,))
    timer.daemon = True
    timer.start()
    try:
        connection.request("GET", target.path, headers=_HEADERS)
        response = connection.getresponse()
        if response.status in _REDIRECTS:
            location = response.getheader("Location")
            if not location:
                raise Refused(f"{target.url}: HTTP {response.status} without a Location")
            return None, location
        if response.status != 200:
            raise Refused(f"{target.url}: HTTP {response.status}")
        body = response.read(max_bytes + 1)
        if connection.cut:  # a read the timer cut short returns what it had
            raise FetchTimeout("the download did not finish before its deadline")
        if len(body) <= max_bytes and response.length:
            raise Refused(f"{target.url}: the body ended {response.length} bytes short")
        return body, None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if connection.cut:
            raise FetchTimeout("the download did not finish before its deadline") from None
        _check(deadline)  # a socket operation timed out at the deadline
        raise Refused(f"{target.url}: {type(exc).__name__}: {exc}") from None
    finally:
        timer.cancel()
        connection.close()
