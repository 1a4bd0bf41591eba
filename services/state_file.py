"""stack.json: what a running `fashion up` says about itself (pid, gRPC address, Kafka bootstrap, database), so
`fashion publish/search/models` find it with no flags.

A file outlives a SIGKILLed process, so every reader checks that its pid still runs: a stale file is cleared
by the next `fashion up` and refused by `fashion publish`, which would otherwise write into a broker no live
stack consumes from (or, before the broker died with its parent, into an orphan).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from shared.errors import InvalidInput

log = logging.getLogger(__name__)

STATE_FILE = "stack.json"
# Where `fashion up --demo` keeps its stores (under the demo's workdir, default var/demo): the CLI's other
# commands look there too when no stack runs in FASHION_DATA_DIR.
DEMO_STACK_DIRNAME = "stack"
DEFAULT_DEMO_STACK = Path("var/demo") / DEMO_STACK_DIRNAME


def read_state(data_dir: Path) -> dict:
    """The state file's contents, alive or not ({} when there is none)."""
    path = data_dir / STATE_FILE
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        return {}  # a half-written file from a crash is as good as none


def pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_state(data_dir: Path) -> dict:
    """The state of a `fashion up` that is still running; {} when there is none or it died."""
    state = read_state(data_dir)
    return state if pid_alive(state.get("pid")) else {}


def stale_state_error(data_dir: Path) -> str | None:
    """Why a state file cannot be trusted, or None (no file, or its process runs)."""
    state = read_state(data_dir)
    if state and not pid_alive(state.get("pid")):
        return (f"the `fashion up` that wrote {data_dir / STATE_FILE} (pid {state.get('pid')}) is not running, "
                f"so nothing would consume from its broker: start `fashion up` again")
    return None


class StateFile:
    """The host component that writes the file once serving and removes it first on stop."""

    def __init__(self, data_dir: Path, describe: Callable[[], dict]) -> None:
        self.path = data_dir / STATE_FILE
        self.describe = describe

    def claim(self) -> None:
        """Before anything starts: refuse a data dir a live stack uses; clear one a dead stack left behind."""
        state = read_state(self.path.parent)
        if not self.path.exists():
            return
        pid = state.get("pid")
        if pid_alive(pid) and pid != os.getpid():
            raise InvalidInput(f"expected no other `fashion up` on {self.path.parent}, but pid {pid} serves there "
                               "(stop it, or give this one its own FASHION_DATA_DIR)")
        log.warning("clearing %s, left by pid %s, which is not running", self.path, pid)
        _kill_orphan_broker(state.get("broker_pid"))
        self.path.unlink(missing_ok=True)

    def start(self) -> None:
        self.path.write_text(json.dumps({"pid": os.getpid(), **self.describe()}, indent=2) + "\n")

    def stop(self) -> None:
        self.path.unlink(missing_ok=True)


def _kill_orphan_broker(pid: object) -> None:
    """A broker a dead stack left running (it dies with its parent now; older ones did not)."""
    if not pid_alive(pid):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"tansu" in cmdline:  # a pid may have been reused: only ever stop a Tansu broker
        log.warning("stopping the orphan Kafka broker (pid %s) of that dead stack", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # type: ignore[arg-type]
