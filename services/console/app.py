"""The console deployable: one HTTP server (services/console/web.py) whose routes (routes.py) call the services
over gRPC. `fashion up` hosts it beside the services, pointed at its own gRPC port and its own metrics;
`fashion console` / `python -m services.console` run it alone against any stack."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from services.console.backend import Backend
from services.console.health import MetricsSource, url_source
from services.console.routes import Console
from services.console.sessions import AdminSessions
from services.console.settings import COMPONENT, ConsoleSettings
from services.console.web import HttpServer
from shared.config import ImageSettings
from shared.host import Components, Host, Named


def console_server(settings: ConsoleSettings, images: ImageSettings, *, grpc_address: Callable[[], str] | None = None,
                   metrics: Sequence[MetricsSource] = (), optional: bool = False) -> HttpServer:
    """The console's HTTP server; `grpc_address` defaults to the configured FASHION_CONSOLE_GRPC_ADDRESS."""
    admin = settings.admin_address
    backend = Backend(grpc_address or (lambda: settings.grpc_address), (lambda: admin) if admin else None,
                      timeout_s=settings.timeout_s, admin_timeout_s=settings.admin_timeout_s)
    console = Console(backend, AdminSessions(settings.session_ttl_s), images.public_image_intake(),
                      [*metrics, *(url_source(url) for url in settings.metrics_urls)],
                      max_upload_bytes=settings.max_upload_bytes)
    return HttpServer(console.handle, settings.host, settings.port, optional=optional,
                      max_body_bytes=settings.max_upload_bytes + 64 * 1024, on_stop=backend.close)


def build(settings: ConsoleSettings, resources: object, images: ImageSettings, *,
          grpc_address: Callable[[], str] | None = None, metrics: Sequence[MetricsSource] = (),
          optional: bool = False) -> Components:
    """The console opens no resource: it is a gRPC client of the services like any storefront."""
    return Components(parts=[Named(COMPONENT, console_server(settings, images, grpc_address=grpc_address,
                                                        metrics=metrics, optional=optional))])


def serve_alone(settings: ConsoleSettings, started: Callable[[str, str], object] = lambda url, target: None) -> None:
    """`fashion console`, `python -m services.console`: the console alone until SIGTERM/SIGINT."""
    server = console_server(settings, ImageSettings())
    host = Host()
    host.add(COMPONENT, server)
    host.start()
    started(server.url or "", settings.grpc_address)
    host.serve()
