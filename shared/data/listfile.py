"""The one reader of DeepFashion list files (Anno/*.txt, Eval/*.txt), as released.

Layout: line 1 is the number of data lines, line 2 the column names, then one entry per line with columns
padded by runs of spaces. Every malformed line becomes a :class:`~shared.errors.DataFormatError` naming the
file, the 1-based line and what was expected there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from shared.errors import DataFormatError

if TYPE_CHECKING:
    from shared.data.records import ImageRecord

PARTITION = "Eval/list_eval_partition.txt"  # every image of a benchmark is listed here first

INTEGER = re.compile(r"-?[0-9]+")
_MAX_GOT = 80  # longer offending lines (an attribute line is ~3000 characters) are cut in messages


class Row(NamedTuple):
    """One data line, carrying where it came from so every check can say file and line."""

    file: Path
    line: int
    text: str  # the line without its line ending and outer spaces
    tokens: list[str]

    def error(self, expected: str, got: str | None = None) -> DataFormatError:
        if got is None:
            got = self.text if len(self.text) <= _MAX_GOT else self.text[:_MAX_GOT] + "..."
        return DataFormatError(self.file, self.line, expected, got)

    def expect_columns(self, count: int, columns: str) -> None:
        if len(self.tokens) != count:
            raise self.error(f"{count} columns ({columns})", f"{len(self.tokens)} columns")

    def integer(self, index: int, expected: str, allowed: range | tuple[int, ...] | None = None) -> int:
        token = self.tokens[index]
        if not INTEGER.fullmatch(token) or (allowed is not None and int(token) not in allowed):
            raise self.error(expected, token)
        return int(token)


def read_list(path: Path, header: tuple[str, ...] | None, *, header_optional: bool = False) -> Iterator[Row]:
    """Yield the data lines of a DeepFashion list file, checking its count line and header on the way.

    Streams line by line because list_attr_img.txt is close to a gigabyte. ``header`` holds the leading column
    names the second line must start with (a missing header would otherwise silently eat a data line);
    ``header_optional`` is for list_item_inshop.txt, released without one. Trailing empty lines are allowed,
    empty lines between entries are not, and the count on line 1 must equal the number of data lines.
    """
    found, blank_at = 0, None
    try:
        with path.open(encoding="utf-8") as handle:  # universal newlines: CRLF files read like LF ones
            lines = enumerate(handle, start=1)
            count = _read_count(path, next(lines, (1, "")))
            for line_no, raw in lines:
                text = raw.strip()
                tokens = text.split()
                if line_no == 2 and header is not None and _is_header(path, tokens, header, header_optional):
                    continue
                if not tokens:
                    blank_at = blank_at or line_no
                    continue
                if blank_at is not None:
                    raise DataFormatError(path, blank_at, "a data line (no empty lines between entries)", "")
                found += 1
                yield Row(path, line_no, text, tokens)
    except UnicodeDecodeError as error:
        raise DataFormatError(path, None, "UTF-8 (in practice ASCII) text", str(error)) from None
    if found != count:
        raise DataFormatError(path, 1, f"{count} data lines, as the count on line 1 says", f"{found} data lines")


def _read_count(path: Path, first: tuple[int, str]) -> int:
    text = first[1].strip()
    if not INTEGER.fullmatch(text) or int(text) < 0:
        raise DataFormatError(path, 1, "the number of data lines as a non-negative integer", text)
    return int(text)


def _is_header(path: Path, tokens: list[str], header: tuple[str, ...], optional: bool) -> bool:
    if tuple(tokens[: len(header)]) == header:
        return True
    if optional:
        return False
    raise DataFormatError(path, 2, f"the column names line starting with '{' '.join(header)}'", " ".join(tokens))


def require_file(root: Path, relative: str, benchmark: str) -> Path:
    path = root / relative
    if not path.is_file():
        raise DataFormatError(path, None, f"the file {relative}, which the {benchmark} benchmark needs", "missing")
    return path


def lookup(row: Row, records: dict[str, ImageRecord]) -> ImageRecord:
    """The record of the image a line names, which the partition file must have listed."""
    record = records.get(row.tokens[0])
    if record is None:
        raise row.error(f"an image listed in {PARTITION}", row.tokens[0])
    return record
