"""Admin sessions: the admin token is entered once, kept here on the server under a random session id, and
never sent back to the browser or put in a URL. The browser holds only the id, in an HttpOnly, SameSite=Strict
cookie; each session also has a CSRF token its forms carry."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "fashion_console"


@dataclass
class AdminSession:
    token: str
    csrf: str
    expires: float


class AdminSessions:
    def __init__(self, ttl_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._sessions: dict[str, AdminSession] = {}
        self._lock = threading.Lock()

    def open(self, token: str) -> str:
        """A new session holding `token`; returns its id (the cookie's value)."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._drop_expired()
            self._sessions[session_id] = AdminSession(token, secrets.token_urlsafe(24), self._clock() + self.ttl_s)
        return session_id

    def get(self, session_id: str | None) -> AdminSession | None:
        if not session_id:
            return None
        with self._lock:
            self._drop_expired()
            return self._sessions.get(session_id)

    def close(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def _drop_expired(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]


def csrf_ok(session: AdminSession | None, given: str | None) -> bool:
    return session is not None and bool(given) and hmac.compare_digest(session.csrf.encode(), (given or "").encode())


def cookie_header(session_id: str, ttl_s: float) -> str:
    return f"{COOKIE}={session_id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={int(ttl_s)}"


def clear_cookie_header() -> str:
    return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
