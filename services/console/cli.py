"""`fashion console`: the web console alone, against any stack (registered on the `fashion` app in cli.py)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from services.state_file import live_state
from shared.config import StoreSettings

console = Console(stderr=True)


def console_command(
    address: Annotated[str | None, typer.Option(help="the services' gRPC host:port (default: the running "
                                                     "`fashion up`, else FASHION_CONSOLE_GRPC_ADDRESS)")] = None,
    host: Annotated[str | None, typer.Option(help="HTTP address (default FASHION_CONSOLE_HOST or 127.0.0.1)")]
    = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default FASHION_CONSOLE_PORT or 8080)")] = None,
    metrics_url: Annotated[list[str] | None, typer.Option(help="a Prometheus /metrics URL for the health page "
                                                               "(repeatable)")] = None,
) -> None:
    """The web console alone, against any stack's gRPC services."""
    from services.console.app import serve_alone
    from services.console.settings import ConsoleSettings

    overrides: dict = {"host": host, "port": port, "metrics_urls": metrics_url or None,
                       "grpc_address": address or live_state(StoreSettings().data_dir).get("grpc")}
    serve_alone(ConsoleSettings(**{k: v for k, v in overrides.items() if v is not None}),
                lambda url, target: console.print(f"[bold green]web console[/] {url} against {target}  (Ctrl-C to "
                                                  "stop)"))
