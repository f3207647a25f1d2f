"""Data splits through ``datasets``: load any form it takes, check batch by batch, encode with map.

Splits are Arrow (memory-mapped), never Python dicts; an error names the file and the line
(JSON Lines, CSV) or row, found again only when an error occurs (docs/architecture.md, Data flow).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import DataError, RowError
from .protocols import member

COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
MAX_FIELD_CHARS = 200_000   # a single text beyond this is almost surely a broken file
CHECK_BATCH = 10_000        # rows per batch handed to a task's check_batch
STREAM_BATCH = 1_000        # rows a stream is checked and encoded in at a time


# --------------------------------------------------------------------------- splits

@dataclass
class Split:
    """One loaded split and where it came from (for error messages and the manifest)."""

    name: str                      # train / validation / test
    dataset: Any                   # datasets.Dataset, or IterableDataset when streaming
    where: str                     # what error messages name: a path, a glob, "hub:...", "<Dataset>"
    files: list = field(default_factory=list)   # local files, in row order
    builder: str | None = None     # json / csv / parquet / arrow, for files
    record: dict = field(default_factory=dict)  # what the manifest stores
    source: Any = field(default=None, repr=False)   # the data source that loaded it (load_split)

    @property
    def streaming(self) -> bool:
        return not hasattr(self.dataset, "__len__")

    def error(self, index: int, field_name: str | None, message: str) -> DataError:
        """A DataError for the row at 0-based ``index`` of the loaded split."""
        file, line, row = self.locate(index)
        return DataError(message, file=file, line=line, row=row, field=field_name)

    def locate(self, index: int) -> tuple[str, int | None, int | None]:
        """(file, line, row) as the data source finds it (the line for line formats), else the
        1-based row number in ``where``."""
        locate = member(self.source, "locate")
        return locate(self, index) if locate else (self.where, None, index + 1)


def file_type(path: str) -> str:
    """A file's type as its last suffix, lower case, a compression suffix dropped (``.jsonl``)."""
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


# --------------------------------------------------------------------------- loading

def describe(spec) -> Any:
    """A JSON-serialisable stand-in for a split spec (config dumps, the manifest)."""
    if spec is None or isinstance(spec, str) or type(spec) is dict:
        return spec
    if isinstance(spec, os.PathLike):
        return os.fspath(spec)
    fingerprint = getattr(spec, "_fingerprint", None)
    kind = type(spec).__name__
    return f"<{kind} {fingerprint}>" if fingerprint else f"<{kind}>"


def load_split(spec, name: str, *, streaming: bool = False, registry=None) -> Split:
    """Load ``spec`` (a path, glob, folder, hub reference or in-memory dataset) as split ``name``
    with the first data source of ``registry`` (default: the installed plugins') that takes it."""
    if registry is None:
        from .manager import load_plugins

        registry = load_plugins().registry
    import datasets  # noqa: F401  (every source loads through it; imported here so it is silenced)

    from .progress import silence_libraries

    silence_libraries()
    source = registry.data_source_for(spec)
    split = source.load(spec, name, streaming)
    split.source = source
    return split


def hub_hint(spec: str) -> str:
    """A hint for a missing "owner/name" file: perhaps a hub dataset was meant."""
    parts = spec.split("/")
    if len(parts) == 2 and all(parts) and not file_type(spec):
        return f" (for a dataset on the Hugging Face Hub write hub:{spec})"
    return ""


# --------------------------------------------------------------------------- checks

def check(split: Split, task, options, state: dict | None) -> None:
    """Run the task's batched check (and the core's text-length bound) over every row."""
    if split.streaming:
        return   # checked as the rows stream: see checked_stream
    try:
        _check_batches(split, task, options, state)
    except UnicodeDecodeError as exc:   # pyarrow's JSON reader lets invalid UTF-8 into strings
        explain = member(split.source, "decode_error")
        if explain is None:
            raise
        raise explain(split, exc) from None


def _check_batches(split: Split, task, options, state: dict | None) -> None:
    ds = split.dataset
    start = 0
    # python batches (features decoded: a mixed-type JSON column arrives as its real values)
    # next to the same rows as Arrow, for the vectorised length bound
    for batch, table in zip(ds.iter(batch_size=CHECK_BATCH),
                            ds.with_format("arrow").iter(batch_size=CHECK_BATCH)):
        _check_lengths(split, table, start)
        try:
            task.check_batch(batch, options, state)
        except RowError as exc:
            if _lossy(ds, exc.field) and split.files:   # the file's own values say which row it was
                _check_raw(split, task, options, state)
            raise split.error(start + (exc.row or 0), exc.field, str(exc)) from None
        start += table.num_rows


def _lossy(ds, column: str | None) -> bool:
    """Arrow unified the column's JSON values into floats (1 and 1.5 → 1.0, 1.5), so the row
    its values flag may not be the row the file got wrong."""
    feature = getattr(ds, "features", {}).get(column) if column else None
    return str(getattr(feature, "dtype", "")).startswith("float")


def _check_raw(split: Split, task, options, state) -> None:
    """The task's check over the file's rows as Python parses them (exact types, exact lines)."""
    raw_rows = member(split.source, "raw_rows")
    for path in split.files if raw_rows else ():
        rows: list = []

        def flush():
            columns = {k for _, r in rows for k in r}
            batch = {k: [r.get(k) for _, r in rows] for k in columns}
            try:
                task.check_batch(batch, options, state)
            except RowError as exc:
                raise DataError(str(exc), file=path, line=rows[exc.row or 0][0], field=exc.field) from None
            rows.clear()

        for line, row in raw_rows(split, path):
            rows.append((line, row))
            if len(rows) >= CHECK_BATCH:
                flush()
        if rows:
            flush()


def _check_lengths(split: Split, table, start: int) -> None:
    """Texts over MAX_FIELD_CHARS, found with Arrow compute (no Python pass over the strings)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for name in table.column_names:
        column = table.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        too_long = pc.greater(pc.utf8_length(column), MAX_FIELD_CHARS)
        if pc.any(too_long).as_py():
            i = pc.index(too_long, True).as_py()
            length = len(column[i].as_py())
            raise split.error(start + i, name, f"text of {length:,} characters exceeds the limit of "
                                               f"{MAX_FIELD_CHARS:,}")


def checked_stream(split: Split, task, options, state: dict | None):
    """The streaming split with every row checked as it streams; a bad row raises the same
    one-line DataError (file, line, field) from inside the training loop."""

    def check_rows(batch, indices):
        try:
            task.check_batch(batch, options, state)
        except RowError as exc:
            raise split.error(indices[exc.row or 0], exc.field, str(exc)) from None
        for name, values in batch.items():
            for i, v in enumerate(values):
                if isinstance(v, str) and len(v) > MAX_FIELD_CHARS:
                    raise split.error(indices[i], name, f"text of {len(v):,} characters exceeds the limit "
                                                        f"of {MAX_FIELD_CHARS:,}")
        return batch

    return split.dataset.map(check_rows, batched=True, with_indices=True, batch_size=STREAM_BATCH)


def rows_of(batch: dict) -> Iterator[tuple[int, dict]]:
    """``(index, row)`` for each row of a column batch: for checks that read rows one at a time.
    A value missing from a row (null in Arrow) is left out of that row's dict."""
    columns = list(batch)
    n = len(batch[columns[0]]) if columns else 0
    for i in range(n):
        yield i, {c: batch[c][i] for c in columns if batch[c][i] is not None}


def each_row(batch: dict, check_row: Callable[[dict], None]) -> None:
    """Call ``check_row(row)`` per row; a RowError it raises gets the row's index."""
    for i, row in rows_of(batch):
        try:
            check_row(row)
        except RowError as exc:
            exc.row = i
            raise


def column_values(dataset, column: str, batch_size: int = 50_000) -> Iterator:
    """Every value of one column, batch by batch (for ``setup``: label sets and the like)."""
    if not hasattr(dataset, "__len__"):   # a stream
        for batch in dataset.select_columns([column]).iter(batch_size=batch_size):
            yield from batch[column]
        return
    features = dataset.features.__class__({column: dataset.features[column]})
    for table in arrow_batches(dataset, [column], batch_size):
        yield from features.decode_batch(table.to_pydict())[column]


def arrow_batches(dataset, columns: list[str], batch_size: int = 50_000) -> Iterator:
    """``columns`` of every row of a ``datasets.Dataset`` as pyarrow batches, for one pass.

    When the dataset is its Arrow files as written (no selection, no transform), the files
    are read with buffered reads rather than through the memory map: a pass over millions of
    rows then leaves none of their pages resident in this process (each page touched through
    the map stays in its RSS, and reading one column touches its neighbours' pages too)."""
    import pyarrow as pa

    paths = _plain_files(dataset)
    if paths is None:
        for table in dataset.select_columns(columns).with_format("arrow").iter(batch_size=batch_size):
            yield table
        return
    for path in paths:
        with pa.OSFile(path) as f:
            for batch in pa.ipc.open_stream(f):
                yield batch.select(columns)


def _plain_files(dataset) -> list[str] | None:
    """The Arrow files a Dataset is exactly, in row order, or None (indices, slices, casts,
    in-memory tables: anything that makes the files differ from the dataset's rows)."""
    from datasets.table import ConcatenationTable, MemoryMappedTable

    if getattr(dataset, "_indices", None) is not None:
        return None
    table = getattr(dataset, "data", None)
    rows = table.blocks if isinstance(table, ConcatenationTable) else [[table]]
    if any(len(row) != 1 for row in rows):
        return None
    blocks = [row[0] for row in rows]
    # datasets records a schema-metadata update as a replay: it changes no row
    if not blocks or not all(isinstance(b, MemoryMappedTable) and
                             all(op[0] == "replace_schema_metadata" for op in b.replays) for b in blocks):
        return None
    return [b.path for b in blocks]


def column_list(dataset, column: str) -> list | None:
    """One column of a ``datasets.Dataset`` as a Python list read in one buffered pass (see
    :func:`arrow_batches`), or None when it is not such a dataset or has no such column."""
    if not hasattr(dataset, "__len__") or column not in (getattr(dataset, "column_names", None) or ()):
        return None
    values: list = []
    for batch in arrow_batches(dataset, [column]):
        values.extend(batch.column(0).to_pylist())
    return values


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


# --------------------------------------------------------------------------- encoding

def encode(split_or_dataset, task, tokenizer, state: dict, options, train: bool, *,
           num_proc: int | None = None, cache_key: str | None = None):
    """``task.encode_batch`` over the dataset with ``Dataset.map(batched=True)``; the input
    columns are replaced by the encoded ones. ``cache_key`` (see prepcache) names the Arrow
    cache file, so the same inputs are encoded once across runs."""
    import datasets

    import inspect

    ds = getattr(split_or_dataset, "dataset", split_or_dataset)
    # encode_batch may take the rows' indices in the split (QA groups an example's windows by it)
    wants_indices = "indices" in inspect.signature(task.encode_batch).parameters

    def fn(batch, indices):
        if wants_indices:
            return task.encode_batch(batch, tokenizer, state, options, train, indices=indices)
        return task.encode_batch(batch, tokenizer, state, options, train)

    if isinstance(ds, datasets.IterableDataset):
        columns = ds.column_names or list(next(iter(ds.take(1))).keys())
        return ds.map(fn, batched=True, with_indices=True, remove_columns=columns, batch_size=STREAM_BATCH)
    from . import prepcache

    kwargs: dict = {}
    cache_file = prepcache.cache_file(cache_key) if cache_key else None
    if cache_file is not None:
        kwargs.update(cache_file_name=str(cache_file), load_from_cache_file=True)
    if cache_key:
        kwargs["new_fingerprint"] = cache_key[:32]   # no dill hashing of the task and tokenizer
    return ds.map(fn, batched=True, with_indices=True, remove_columns=ds.column_names, num_proc=num_proc,
                  desc=f"{'preprocess':<10} {getattr(split_or_dataset, 'name', None) or ('train' if train else 'evaluation')}", **kwargs)
