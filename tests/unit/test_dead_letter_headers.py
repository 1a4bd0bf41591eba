"""Reading a dead letter back from its headers (shared/messaging/dlq.py): what `send_to_dlq` wrote, leniently, since
anyone may produce into a DLQ topic. tests/integration/test_dead_letters.py reads them from a real broker."""

from __future__ import annotations

from shared.messaging import (
    HEADER_ERROR_REASON,
    HEADER_ERROR_TIMESTAMP,
    HEADER_ERROR_TYPE,
    HEADER_ORIGINAL_OFFSET,
    HEADER_ORIGINAL_PARTITION,
    HEADER_ORIGINAL_TOPIC,
    HEADER_TRUNCATED,
    Record,
)
from shared.messaging.dlq import MAX_KEY_CHARS, dead_letter

HEADERS = ((HEADER_ORIGINAL_TOPIC, b"catalog.uploads"), (HEADER_ORIGINAL_PARTITION, b"2"),
           (HEADER_ORIGINAL_OFFSET, b"41"), (HEADER_ERROR_REASON, "caf\u00e9.jpg not found".encode()),
           (HEADER_ERROR_TYPE, b"NotFound"), (HEADER_ERROR_TIMESTAMP, b"1700000000123"))


def test_the_headers_send_to_dlq_writes_are_read_back() -> None:
    letter = dead_letter(Record("catalog.uploads.dlq", 1, 7, b"product-7", b"{...}", HEADERS, timestamp_ms=5))
    assert (letter.dlq_topic, letter.dlq_partition, letter.dlq_offset) == ("catalog.uploads.dlq", 1, 7)
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("catalog.uploads", 2, 41)
    assert (letter.error_type, letter.reason) == ("NotFound", "caf\u00e9.jpg not found")
    assert letter.dead_lettered_ms == 1_700_000_000_123 and letter.key == "product-7" and not letter.value_truncated


def test_a_record_dead_lettered_twice_reads_as_its_latest_failure() -> None:
    again = (*HEADERS, (HEADER_ERROR_REASON, b"second failure"), (HEADER_ORIGINAL_TOPIC, b"replayed"),
             (HEADER_TRUNCATED, b"300009"))
    letter = dead_letter(Record("d", 0, 0, None, b"", again))
    assert (letter.reason, letter.source_topic, letter.value_truncated, letter.key) == (
        "second failure", "replayed", True, "")


def test_a_record_without_the_headers_reads_leniently() -> None:
    junk = ((HEADER_ORIGINAL_PARTITION, b"two"), (HEADER_ERROR_REASON, b"\xff\xfe"))
    letter = dead_letter(Record("d", 0, 3, b"\xffkey" + b"k" * 500, b"x", junk, timestamp_ms=1_234))
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("", -1, -1)
    assert letter.reason == "\ufffd\ufffd" and letter.error_type == ""
    assert letter.dead_lettered_ms == 1_234  # the record's own time when the header is missing
    assert len(letter.key) == MAX_KEY_CHARS and letter.key.startswith("\ufffdkey") and letter.key.endswith("\u2026")
