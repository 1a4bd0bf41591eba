"""Which URIs an `ImageIntake` may read. Inline bytes always may; everything else is refused unless allowed here.

* Files (plain paths and file:// URIs) only under the catalogue `roots`, compared after `os.path.realpath`, so
  neither `..` nor a symlink leads out of them. The intake of public RPCs has no roots (`without_files`).
* http(s) URLs only to allow-listed hosts: `host` (ports 80/443 by scheme), `host:port`, or `*.example.com`
  (subdomains). The name is resolved here and every address must be public, unless it lies in one of the
  `private_networks` named explicitly; the fetch then connects to the address checked here (no second lookup a
  rebinding DNS server could answer differently). Redirects come back through `url_target` (fetch.py).

A refusal is `Refused`, carrying the reason for the server log only. The caller gets `expected()`, the same
sentence whether a file is missing, unreadable or outside the roots, or a host is refused, unreachable or
closed, so an error never tells a caller what exists on the server or its network.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

HTTP_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]


def is_url(uri: str) -> bool:
    """Whether `uri` names an http(s) URL (else: a file path or file:// URI, or something refused)."""
    return urllib.parse.urlparse(uri).scheme.lower() in HTTP_SCHEMES


class Refused(Exception):
    """Why a uri may not be read, for the server log; callers see only `IntakePolicy.expected()`."""


@dataclass(frozen=True, slots=True)
class UrlTarget:
    """An allowed URL, resolved: connect to `address`, speak to `host` (Host header, TLS name)."""

    url: str
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line
    address: str


@dataclass(frozen=True, slots=True)
class _HostRule:
    host: str  # lower case; "*.example.com" matches subdomains of example.com
    port: int | None  # None: the scheme's default port

    @classmethod
    def parse(cls, entry: str) -> _HostRule:
        parsed = urllib.parse.urlsplit("//" + entry.strip())
        try:
            port = parsed.port
        except ValueError:
            port = -1
        if not parsed.hostname or port == -1 or parsed.path or parsed.username:
            raise ValueError(f"expected an image URL host as host, host:port or *.domain, got {entry!r}")
        return cls(parsed.hostname.lower(), port)

    def admits(self, scheme: str, host: str, port: int) -> bool:
        if self.port is None and port != _DEFAULT_PORTS[scheme] or self.port is not None and port != self.port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the system resolver)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Refused(f"{host} does not resolve: {exc}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class IntakePolicy:
    """What besides inline bytes may be read. The default reads nothing else; `ImageSettings.image_intake()`
    builds the configured one."""

    roots: tuple[Path, ...] = ()
    url_hosts: tuple[str, ...] = ()
    private_networks: tuple[str, ...] = ()
    resolver: Resolver = field(default=resolve, repr=False, compare=False)
    _rules: tuple[_HostRule, ...] = field(init=False, repr=False, compare=False)
    _networks: tuple[Network, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Roots are resolved once, at start-up: a relative root is relative to the process's working directory.
        object.__setattr__(self, "roots", tuple(Path(os.path.realpath(root)) for root in self.roots))
        object.__setattr__(self, "_rules", tuple(_HostRule.parse(entry) for entry in self.url_hosts))
        object.__setattr__(self, "_networks", tuple(_network(n) for n in self.private_networks))

    def without_files(self) -> IntakePolicy:
        """The same URL rules, and no files at all: what public RPCs may read."""
        return replace(self, roots=())

    def expected(self) -> str:
        """What this policy accepts, as an error message says it."""
        kinds = ["inline image bytes"]
        if self.roots:
            kinds.append("a file under the catalogue roots")
        if self._rules:
            kinds.append("an http(s) URL on an allowed host")
        return "expected " + ", or ".join(kinds)

    # -- files ----------------------------------------------------------------------------------------------

    def under_roots(self, path: str | os.PathLike[str]) -> bool:
        """Whether `path`, after resolving symlinks and `..`, lies under one of the roots."""
        real = Path(os.path.realpath(path))
        return any(real.is_relative_to(root) for root in self.roots)

    def file_path(self, uri: str) -> Path:
        """The real path a plain path or file:// URI names, if it lies under a root; else Refused."""
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise Refused(f"a file URI on another host ({parsed.netloc})")
            path = urllib.parse.unquote(parsed.path)
        elif parsed.scheme == "":
            path = uri
        else:
            raise Refused(f"scheme {parsed.scheme!r}")
        if not self.roots:
            raise Refused("this intake reads no files")
        if not path or "\x00" in path:
            raise Refused("an empty path or a NUL byte in it")
        real = Path(os.path.realpath(path))
        if not self.under_roots(real):
            raise Refused(f"{real} is outside the catalogue roots")
        return real

    # -- URLs -----------------------------------------------------------------------------------------------

    def url_target(self, url: str) -> UrlTarget:
        """Where to fetch `url` from, if its host is allowed and resolves only to allowed addresses; else Refused."""
        parsed = urllib.parse.urlsplit(url)
        scheme = parsed.scheme.lower()
        if scheme not in HTTP_SCHEMES:
            raise Refused(f"scheme {scheme!r}")
        try:
            host, port = (parsed.hostname or "").lower(), parsed.port or _DEFAULT_PORTS[scheme]
        except ValueError:
            raise Refused("an invalid port") from None
        if not host or parsed.username is not None:
            raise Refused("no host, or credentials in the URL")
        if not any(rule.admits(scheme, host, port) for rule in self._rules):
            raise Refused(f"{host}:{port} is not an allowed image host")
        addresses = list(self.resolver(host, port))
        if not addresses:
            raise Refused(f"{host} resolves to no address")
        for address in addresses:
            self._check_address(host, address)
        path = parsed.path or "/"
        return UrlTarget(url, scheme, host, port, path + (f"?{parsed.query}" if parsed.query else ""), addresses[0])

    def _check_address(self, host: str, address: str) -> None:
        ip: Address = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in self._networks):
            return
        if not ip.is_global or ip.is_multicast:
            raise Refused(f"{host} resolves to {ip}, a loopback, private, link-local or reserved address")


def _network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"expected a network such as 10.0.0.0/8 or 127.0.0.1/32, got {text!r}") from None
