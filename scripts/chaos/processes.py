"""Service processes: started cold (`python -m services.<name>`), or *held*.

A held process is a fresh interpreter that imports what the services' entry points import (torch above all, the
slowest part of any start) and then waits for an order on stdin: which module to run, with which arguments,
environment and log file. It then runs that module exactly as `python -m MODULE ARGS...` would (runpy, as
`__main__`). Holding lets the imports overlap with something that is not being measured: the life of the
incarnation about to be killed, or the teardown of the previous scenario (a "spare"). `--cold` turns it off.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
PRELOAD = ",".join(["services.ingest.app", "services.ingest.settings", "services.search.app", "services.process",
                    "services.stack", "services.cli"])
_HELD_ENTRY = (
    "import importlib, json, os, runpy, sys\n"
    "for name in sys.argv[1].split(','):\n"
    "    importlib.import_module(name)\n"
    "line = sys.stdin.readline()\n"
    "if not line:\n"
    "    sys.exit(0)\n"
    "order = json.loads(line)\n"
    "sys.stdout.flush(); sys.stderr.flush()\n"
    "fd = os.open(order['log'], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)\n"
    "os.dup2(fd, 1); os.dup2(fd, 2); os.close(fd)\n"
    "os.chdir(order['cwd'])\n"
    "os.environ.clear(); os.environ.update(order['env'])\n"
    "sys.argv = [order['module'], *order['argv']]\n"
    "runpy.run_module(order['module'], run_name='__main__', alter_sys=True)\n")


def tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "<no log>"


def service_args(targets: str) -> list[str]:
    """`python -m services.<name>` for one target, `python -m services.cli up --target a,b` for several."""
    if "," in targets:
        return ["-m", "services.cli", "up", "--target", targets]
    return ["-m", f"services.{targets}"]


class Service:
    """One service as a real process; ready once its stack.json names its pid (written when serving).

    `held=True`: `start()` launches the held interpreter (or, with `cold=True`, nothing yet) and `release()` lets
    it run `args` (`-m MODULE ...`) under `env`, logging to `log_path`; `release` may name other ones (a spare is
    started before anyone knows what it will run)."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log_path: Path, *, held: bool = False,
                 cold: bool = False) -> None:
        self.args, self.env, self.log_path = list(args), dict(env), log_path
        self.held, self.cold = held, cold
        self.proc: subprocess.Popen[bytes] | None = None
        self.state: dict[str, Any] = {}
        self.started_at = 0.0

    @property
    def data_dir(self) -> Path:
        return Path(self.env["FASHION_DATA_DIR"])

    def _popen(self, cmd: list[str], stdin: int) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=stdin, start_new_session=True)
        self.started_at = time.monotonic()

    def start(self) -> Service:
        if "FASHION_DATA_DIR" in self.env:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.held:
            self._popen([PYTHON, *self.args], subprocess.DEVNULL)
        elif not self.cold:
            self._popen([PYTHON, "-c", _HELD_ENTRY, PRELOAD], subprocess.PIPE)
        return self

    def release(self, args: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
                log_path: Path | None = None) -> Service:
        """Run the entry point now (optionally another one than given at construction)."""
        if args is not None:
            self.args = list(args)
        if env is not None:
            self.env = dict(env)
        if log_path is not None:
            self.log_path = log_path
        if not self.held:
            return self
        if self.args[0] != "-m":
            raise ValueError(f"a held start runs a module: expected -m MODULE ..., got {self.args}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.held = False
        if self.cold or self.proc is None:
            self._popen([PYTHON, *self.args], subprocess.DEVNULL)
            return self
        order = {"module": self.args[1], "argv": self.args[2:], "env": self.env, "log": str(self.log_path),
                 "cwd": str(ROOT)}
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(order).encode() + b"\n")
            self.proc.stdin.close()
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 180.0) -> dict[str, Any]:
        """stack.json of this process (pid, grpc, kafka_bootstrap); raises when it exits or times out."""
        from .harness import wait_for

        path = self.data_dir / "stack.json"

        def ready() -> dict[str, Any] | None:
            if not self.alive:
                code = self.proc.returncode if self.proc is not None else None
                raise RuntimeError(f"{' '.join(self.args)} exited with {code} before serving; "
                                   f"log {self.log_path}:\n{tail(self.log_path)}")
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(path.read_text())
                if state.get("pid") == self.pid:
                    return state
            return None

        state = wait_for(ready, timeout, 0.2)
        if state is None:
            self.kill()
            raise RuntimeError(f"{' '.join(self.args)} did not serve within {timeout:.0f}s; log {self.log_path}:"
                               f"\n{tail(self.log_path)}")
        self.state = state
        return state

    def kill(self) -> None:
        """SIGKILL (what a crash or the OOM killer does); waits for the process to be gone."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        if self.proc is not None and self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def terminate(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait; the exit code, or None when it had to be killed after `timeout`."""
        if not self.alive:
            return self.proc.returncode if self.proc is not None else None
        os.kill(self.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def memory_kib(self, field_name: str = "VmHWM") -> int | None:
        """A /proc/<pid>/status figure in KiB (VmHWM: peak resident set so far; VmRSS: now)."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
        return None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
