"""Read data files row by row, checking each row against the task's schema.

Errors name the file, the line (1-based; for CSV the physical line) and the field.
Rows stay plain dicts until the runner turns them into a ``datasets.Dataset``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Callable, Iterator

from .errors import DataError, RowError

FORMATS = (".jsonl", ".json", ".csv", ".parquet")
MAX_FIELD_CHARS = 200_000   # a single text beyond this is almost surely a broken file


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def iter_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, row)``; raise DataError on malformed input."""
    path = str(path)
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found", file=path)
    suffix = p.suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"unsupported file type {suffix!r}; use one of {', '.join(FORMATS)}", file=path)
    if suffix == ".parquet":
        yield from _parquet_rows(path)
        return
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                        file=path, line=line) from None
    if suffix == ".csv":
        yield from _csv_rows(path, text)
    elif suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON: {exc.msg}", file=path, line=exc.lineno) from None
        for i, row in enumerate(rows, 1):
            if not isinstance(row, dict):
                raise DataError(f"item {i} is not a JSON object", file=path)
            yield i, row
    else:
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"malformed JSON: {exc.msg} (column {exc.colno})", file=path, line=n) from None
            if not isinstance(row, dict):
                raise DataError(f"expected a JSON object, got {type(row).__name__}", file=path, line=n)
            yield n, row


def _csv_rows(path: str, text: str) -> Iterator[tuple[int, dict]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise DataError(f"bad CSV: {exc}", file=path, line=1) from None
    try:
        for cells in reader:
            if not cells:
                continue
            if len(cells) != len(header):
                raise DataError(f"row has {len(cells)} fields, the header has {len(header)}",
                                file=path, line=reader.line_num)
            yield reader.line_num, dict(zip(header, cells))
    except csv.Error as exc:
        raise DataError(f"bad CSV: {exc}", file=path, line=reader.line_num) from None


def _parquet_rows(path: str) -> Iterator[tuple[int, dict]]:
    try:
        import pyarrow.parquet as pq
        table = pq.read_table(path)
    except Exception as exc:
        raise DataError(f"cannot read parquet: {exc}", file=path) from None
    for i, row in enumerate(table.to_pylist(), 1):
        yield i, row


def load_rows(path: str | Path, check: Callable[[dict], None] | None = None,
              limit: int | None = None) -> list[dict]:
    """Read up to ``limit`` rows, calling ``check(row)`` on each (a task's row check
    raising RowError). Empty files are an error."""
    rows: list[dict] = []
    for line, row in iter_rows(path):
        if limit is not None and len(rows) >= limit:
            break
        for key, value in row.items():
            if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
                raise DataError(f"text of {len(value):,} characters exceeds the limit of "
                                f"{MAX_FIELD_CHARS:,}", file=str(path), line=line, field=key)
        if check is not None:
            try:
                check(row)
            except RowError as exc:
                raise DataError(str(exc), file=str(path), line=line, field=exc.field) from None
        rows.append(row)
    if not rows:
        raise DataError("no rows (the file is empty)", file=str(path))
    return rows


def require_text(row: dict, column: str) -> str:
    """The non-empty string in ``row[column]``, or a RowError naming the column
    (the check every text task makes on every row)."""
    if column not in row:
        raise RowError(column, f"missing column {column!r} (columns: {', '.join(map(repr, row))})")
    value = row[column]
    if not isinstance(value, str):
        raise RowError(column, f"expected text, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise RowError(column, "empty text")
    return value
