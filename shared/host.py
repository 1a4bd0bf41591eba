"""One process host: start components in order, serve until SIGTERM, drain and stop them in reverse.

Every deployable is a list of components (a gRPC server, consumer threads, pollers, the resources they
share), built by its service's `build` (services/<name>/app.py). The host knows nothing about which
service it runs; it only guarantees the lifecycle the grpc examples teach:

* `start()` starts each component in order; if one fails, the ones already started stop in reverse and the
  error propagates, so a half-built process never serves.
* `serve()` blocks until SIGTERM/SIGINT (or a stop event), then `stop()`s.
* `stop()` stops in reverse order, each once, and keeps going when one fails (it is logged), so a failed
  consumer cannot leave the gRPC server or the broker running.
* A component that exposes `error` (a consumer thread) and ends with one makes `on_failure` run once, which
  the composition uses to turn health NOT_SERVING so the orchestrator restarts the process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from shared.grpc.server import stop_on_signals

log = logging.getLogger(__name__)


@runtime_checkable
class Component(Protocol):
    def start(self) -> object: ...

    def stop(self) -> object: ...


@dataclass
class Named:
    name: str
    component: Component


@dataclass
class Components:
    """What a service's `build` returns: servicers for the process's one gRPC server, and the components
    (consumer threads, pollers, cores that flush on close) the host starts in this order."""

    servicers: list[tuple[object, object]] = field(default_factory=list)
    parts: list[Named] = field(default_factory=list)


class Closing:
    """A component for something that only needs closing (a core that flushes a log, a client)."""

    def __init__(self, close: Callable[[], object]) -> None:
        self._close = close

    def start(self) -> Closing:
        return self

    def stop(self) -> None:
        self._close()


@dataclass
class Host:
    components: list[Named] = field(default_factory=list)
    on_failure: Callable[[str, BaseException], None] | None = None
    watch_interval_s: float = 5.0
    _started: list[Named] = field(default_factory=list, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)

    def add(self, name: str, component: Component) -> Component:
        self.components.append(Named(name, component))
        return component

    def start(self) -> Host:
        try:
            for named in self.components:
                named.component.start()
                self._started.append(named)
        except BaseException:
            self.stop()
            raise
        if self.on_failure is not None:
            threading.Thread(target=self._watch, name="host-watch", daemon=True).start()
        return self

    def serve(self, stop: threading.Event | None = None) -> None:
        """Block until SIGTERM/SIGINT (main thread) or `stop` is set, then stop everything."""
        stop = stop if stop is not None else threading.Event()
        with stop_on_signals(stop):
            stop.wait()
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        while self._started:
            named = self._started.pop()
            try:
                named.component.stop()
            except Exception as exc:  # keep stopping the rest: a failed consumer reports, it does not block
                log.warning("%s stopped with: %s", named.name, exc)

    def _watch(self) -> None:
        """The first component that ended on an error reports it through `on_failure`, once."""
        while not self._stopping.wait(self.watch_interval_s):
            for named in list(self._started):
                error = getattr(named.component, "error", None)
                if error is not None:
                    log.error("%s failed (%s)", named.name, error)
                    assert self.on_failure is not None
                    self.on_failure(named.name, error)
                    return
