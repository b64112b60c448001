"""Line-oriented readers for the Amazon files: text or gzip, one record per line, every error naming file and line.

Amazon 2014 review files are JSON lines; the metadata files (and P5's `meta.json.gz`) are Python-dict literals. Both are
parsed without `eval`: JSON first, `ast.literal_eval` as the fallback.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DataFormatError


def iter_raw_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield `(line_number, bytes)` with line endings (LF or CRLF) stripped; gzip is detected from the content."""
    path = Path(path)
    with path.open("rb") as probe:
        is_gzip = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if is_gzip else open
    line_no = 0
    try:
        with opener(path, "rb") as handle:
            for line_no, raw in enumerate(handle, start=1):  # noqa: B007 - line_no is reported after the loop
                yield line_no, raw.rstrip(b"\r\n")
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataFormatError(path, f"corrupt or truncated gzip after line {line_no} ({err})", line_no + 1) from err


def decode(path: Path, line_no: int, raw: bytes) -> str:
    """One line as text, or an error naming the line."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(path, f"not UTF-8 text ({err})", line_no) from err


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield `(line_number, text)` with line endings stripped (see `iter_raw_lines`)."""
    path = Path(path)
    for line_no, raw in iter_raw_lines(path):
        yield line_no, decode(path, line_no, raw)


def parse_record(path: Path, line_no: int, text: str) -> dict[str, Any]:
    """Parse one JSON or Python-literal dict line."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        try:
            record = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
            raise DataFormatError(
                path, f"neither JSON nor a Python literal ({err.__class__.__name__})", line_no
            ) from err
    if not isinstance(record, dict):
        raise DataFormatError(path, f"expected a dict record, got {type(record).__name__}", line_no)
    return record


def iter_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line_number, record)` for every non-blank line."""
    path = Path(path)
    for line_no, text in iter_lines(path):
        if text.strip():
            yield line_no, parse_record(path, line_no, text)


def require(path: Path, line_no: int, record: dict[str, Any], field: str, kind: type | tuple[type, ...]) -> Any:
    """Return `record[field]`, or raise naming the file, line and field when it is missing or of the wrong type."""
    if field not in record:
        raise DataFormatError(path, f"missing field {field!r}", line_no)
    value = record[field]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise DataFormatError(path, f"field {field!r} has type {type(value).__name__}, expected {kind}", line_no)
    return value


def fingerprint(path: str | Path) -> dict[str, object]:
    """Size and SHA-256 of an input file, recorded as provenance in the manifest and the card."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": Path(path).stat().st_size, "sha256": digest.hexdigest()}
