"""Which running stack the CLI's commands (publish, search, models, ...) talk to."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from services.cli import _stack_state
from services.state_file import DEFAULT_DEMO_STACK, STATE_FILE


def _write_state(folder: Path, grpc_address: str, pid: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE_FILE).write_text(json.dumps({"pid": pid, "grpc": grpc_address,
                                                 "kafka_bootstrap": f"{grpc_address}-kafka"}))


def test_the_demo_stack_is_found_when_none_runs_in_the_data_dir(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FASHION_DATA_DIR", str(tmp_path / "var"))
    assert _stack_state() == {}
    _write_state(tmp_path / DEFAULT_DEMO_STACK, "127.0.0.1:1111", os.getpid())  # `fashion up --demo`, alive
    assert _stack_state()["kafka_bootstrap"] == "127.0.0.1:1111-kafka"
    _write_state(tmp_path / "var", "127.0.0.1:2222", os.getpid())  # a stack in the data dir wins
    assert _stack_state()["grpc"] == "127.0.0.1:2222"


def test_a_dead_demo_stack_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FASHION_DATA_DIR", str(tmp_path / "var"))
    _write_state(tmp_path / DEFAULT_DEMO_STACK, "127.0.0.1:1111", 2**22 + 12345)  # no such pid
    assert _stack_state() == {}
