"""`python -m services.console`: the web console alone, against FASHION_CONSOLE_GRPC_ADDRESS."""

from services.console.app import serve_alone
from services.console.settings import ConsoleSettings
from shared.grpc import configure_logging

configure_logging()
serve_alone(ConsoleSettings())
