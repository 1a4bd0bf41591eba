"""Reaping runs whose retrain worker died, and how the API shows them: the decisions against a SQLite database,
with the clock passed in (no workers, no Redis; tests/integration/test_retrain.py kills a real worker)."""

from __future__ import annotations

from datetime import timedelta

from services.admin.core import RunInfo
from services.retrain import runs
from shared.db import repository
from shared.db.models import RunState, utcnow

STALE_S = 60.0




def _run(sessions, state: RunState = RunState.TRAINING, key: str = "retrain") -> str:
    """A run in `state`, its heartbeat stamped now (as the worker's start does)."""
    with sessions.begin() as s:
        run, _ = repository.create_or_get_active_run(s, key, epochs=3)
        path = {RunState.QUEUED: [], RunState.TRAINING: [RunState.TRAINING],
                RunState.EVALUATING: [RunState.TRAINING, RunState.EVALUATING],
                RunState.REINDEXING: [RunState.TRAINING, RunState.EVALUATING, RunState.REINDEXING]}[state]
        for step in path:
            repository.move_run(s, run.run_id, step, heartbeat=True)
        return run.run_id


def _get(sessions, run_id: str):
    with sessions() as s:
        return repository.get_run(s, run_id)


def test_a_silent_run_is_reaped_once_and_says_so(sessions) -> None:
    run_id = _run(sessions)
    sent: list[str] = []
    now = utcnow()
    assert runs.reap_stale_runs(sessions, sent.append, stale_after_s=STALE_S, now=now + timedelta(seconds=30)) == []
    later = now + timedelta(seconds=STALE_S + 5)
    assert runs.reap_stale_runs(sessions, sent.append, stale_after_s=STALE_S, now=later) == [run_id]
    # The same pass again (a second admin process, or the next poll): the reap is on the row already.
    assert runs.reap_stale_runs(sessions, sent.append, stale_after_s=STALE_S, now=later) == []
    assert runs.reap_stale_runs(sessions, sent.append, stale_after_s=STALE_S,
                                now=later + timedelta(seconds=STALE_S)) == []
    assert sent == [run_id]
    run = _get(sessions, run_id)
    assert run.state == "training"  # nothing moved it: the resumed worker moves it on
    assert run.progress["reaps"] == 1 and run.progress["reaped_at"] == later.isoformat()
    assert run.message.startswith("re-enqueued at ") and "reap 1" in run.message and "last.pt" in run.message


def test_an_unanswered_reap_is_repeated_less_and_less_often(sessions) -> None:
    run_id = _run(sessions, RunState.QUEUED)  # no worker ever took it
    sent: list[str] = []
    t = _get(sessions, run_id).created_at
    times = []
    for second in range(0, int(STALE_S * 40), 5):
        now = t + timedelta(seconds=second)
        if runs.reap_stale_runs(sessions, sent.append, stale_after_s=STALE_S, now=now):
            times.append(second)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert times[0] == STALE_S + 5
    # 2, 4, 8, then every 16 stale periods (rounded up to the 5 s pass)
    assert gaps[:4] == [2 * STALE_S + 5, 4 * STALE_S + 5, 8 * STALE_S + 5, 16 * STALE_S + 5]
    assert _get(sessions, run_id).progress["reap_streak"] == len(times)


def test_a_worker_that_answered_makes_the_next_silence_a_fresh_reap(sessions) -> None:
    run_id = _run(sessions)
    sent: list[str] = []
    first = utcnow() + timedelta(seconds=STALE_S + 1)
    assert runs.reap_stale_runs(sessions, sent.append, stale_after_s=STALE_S, now=first)
    with sessions.begin() as s:  # a worker took the task and beat: the reap was answered
        repository.get_run(s, run_id).heartbeat_at = first + timedelta(seconds=1)
    # It died again: one stale period after its last beat it is reaped again, with a fresh streak.
    second = first + timedelta(seconds=STALE_S + 2)
    assert runs.reap_stale_runs(sessions, sent.append, stale_after_s=STALE_S, now=second) == [run_id]
    run = _get(sessions, run_id)
    assert (run.progress["reaps"], run.progress["reap_streak"], sent) == (2, 1, [run_id, run_id])


def test_only_runs_a_worker_owns_are_reaped(sessions) -> None:
    evaluating = _run(sessions, RunState.EVALUATING, key="a")
    reindexing = _run(sessions, RunState.REINDEXING, key="b")  # the promotion worker's: no heartbeat to judge
    sent: list[str] = []
    later = utcnow() + timedelta(seconds=STALE_S * 3)
    assert runs.reap_stale_runs(sessions, sent.append, stale_after_s=STALE_S, now=later) == [evaluating]
    assert _get(sessions, reindexing).progress == {}


def test_a_refused_send_is_recorded_and_retried_later(sessions) -> None:
    run_id = _run(sessions)

    def down(run_id: str) -> None:
        raise ConnectionError("redis is down")

    later = utcnow() + timedelta(seconds=STALE_S + 1)
    assert runs.reap_stale_runs(sessions, down, stale_after_s=STALE_S, now=later) == []
    assert "failed (redis is down); a later reap retries" in _get(sessions, run_id).message
    sent: list[str] = []
    assert runs.reap_stale_runs(sessions, sent.append, stale_after_s=STALE_S,
                                now=later + timedelta(seconds=2 * STALE_S + 1)) == [run_id]


def test_the_api_shows_a_silent_run_as_stalled(sessions) -> None:
    run_id = _run(sessions)
    run = _get(sessions, run_id)
    fresh = RunInfo.of(run, stale_after_s=STALE_S, now=run.heartbeat_at + timedelta(seconds=10))
    assert (fresh.state, fresh.stalled, fresh.message, fresh.heartbeat_at) == ("training", False, "", run.heartbeat_at)
    stale = RunInfo.of(run, stale_after_s=STALE_S, now=run.heartbeat_at + timedelta(seconds=STALE_S + 30))
    assert (stale.state, stale.stalled) == ("training", True)
    assert stale.message == f"stalled: no heartbeat from a retrain worker for {STALE_S + 30:.0f} s"
    assert not RunInfo.of(run, now=run.heartbeat_at + timedelta(days=1)).stalled  # no threshold: not judged
    runs.reap_stale_runs(sessions, lambda _: None, stale_after_s=STALE_S,
                         now=run.heartbeat_at + timedelta(seconds=STALE_S + 1))
    reaped = RunInfo.of(_get(sessions, run_id), stale_after_s=STALE_S,
                        now=run.heartbeat_at + timedelta(seconds=STALE_S + 30))
    assert reaped.stalled and reaped.message.startswith("stalled: no heartbeat")
    assert "; re-enqueued at" in reaped.message
