"""Data splits through ``datasets``: load any form it takes, check batch by batch, encode with map.

Splits are Arrow (memory-mapped), never Python dicts; an error names the file and the line
(JSON Lines, CSV) or row, found again only when an error occurs (docs/architecture.md, Data flow).
"""

from __future__ import annotations

import csv
import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import DataError, RowError, first_line
from .util import sha256_file

BUILDERS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv", ".tsv": "csv",
            ".parquet": "parquet", ".arrow": "arrow"}
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
MAX_FIELD_CHARS = 200_000   # a single text beyond this is almost surely a broken file
CHECK_BATCH = 10_000        # rows per batch handed to a task's check_batch
STREAM_BATCH = 1_000        # rows a stream is checked and encoded in at a time
MAX_DEPTH = 1_000           # JSON nesting beyond this is read by Python, not pyarrow (see load_split)
OPENERS, CLOSERS = (ord("["), ord("{")), (ord("]"), ord("}"))


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

    @property
    def streaming(self) -> bool:
        return not hasattr(self.dataset, "__len__")

    def error(self, index: int, field_name: str | None, message: str) -> DataError:
        """A DataError for the row at 0-based ``index`` of the loaded split."""
        file, line, row = self.locate(index)
        return DataError(message, file=file, line=line, row=row, field=field_name)

    def locate(self, index: int) -> tuple[str, int | None, int | None]:
        """(file, line, row): the line for line formats, else the 1-based row number."""
        if not self.files:
            return self.where, None, index + 1
        remaining = index
        for path in self.files:
            if self.builder in ("json", "csv") and _is_line_format(path):
                line, count = _line_of(path, remaining, csv_sep=self._csv_sep(path))
            else:
                line, count = None, _row_count(path, self.builder)
            if line is not None:
                return path, line, None
            if remaining < count:
                return path, None, remaining + 1
            remaining -= count
        return self.where, None, index + 1

    @staticmethod
    def _csv_sep(path: str) -> str | None:
        suffix = _suffix(path)
        return "\t" if suffix == ".tsv" else "," if suffix == ".csv" else None


def _suffix(path: str) -> str:
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _is_line_format(path: str) -> bool:
    return _suffix(path) in (".jsonl", ".ndjson", ".csv", ".tsv") or (
        _suffix(path) == ".json" and not _starts_with_bracket(path))


def _starts_with_bracket(path: str) -> bool:
    with _open_text(path) as f:
        head = f.read(4096).lstrip("\ufeff \t\r\n")
    return head.startswith("[")


def _open_text(path: str):
    """Text mode, UTF-8 (a BOM is dropped), compressed files by their suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gz":
        import gzip
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    if suffix == ".bz2":
        import bz2
        return bz2.open(path, "rt", encoding="utf-8-sig", newline="")
    if suffix == ".xz":
        import lzma
        return lzma.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _line_of(path: str, index: int, csv_sep: str | None) -> tuple[int | None, int]:
    """The physical line of row ``index`` (0-based) of a line-format file, or (None, rows)."""
    with _open_text(path) as f:
        n = 0
        if csv_sep:
            reader = csv.reader(f, delimiter=csv_sep)
            next(reader, None)   # the header
            for cells in reader:
                if cells:   # blank lines are no rows (pandas skips them too)
                    if n == index:
                        return reader.line_num, n
                    n += 1
            return None, n
        for number, line in enumerate(f, 1):
            if line.strip():
                if n == index:
                    return number, n
                n += 1
        return None, n


def _row_count(path: str, builder: str | None) -> int:
    if builder == "parquet":
        import pyarrow.parquet as pq
        return pq.ParquetFile(path).metadata.num_rows
    if builder == "json":
        with _open_text(path) as f:
            return len(json.load(f))
    import datasets
    return len(datasets.Dataset.from_file(path))


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


def is_object(spec) -> bool:
    """An in-memory dataset or DataFrame given through the Python API (not a path or hub spec;
    a DatasetDict is a dict subclass, so plain dicts are told apart by their exact type)."""
    return spec is not None and not isinstance(spec, (str, os.PathLike)) and type(spec) is not dict


def hub_reference(spec) -> dict | None:
    """``hub:owner/name[:split]`` or ``{path: ..., name: ..., split: ..., revision: ...}`` → kwargs."""
    if type(spec) is dict:
        return dict(spec)
    if isinstance(spec, str) and spec.startswith("hub:"):
        ref = spec[4:]
        out: dict = {}
        if ":" in ref:
            ref, out["split"] = ref.rsplit(":", 1)
        out["path"] = ref
        return out
    return None


def load_split(spec, name: str, *, streaming: bool = False) -> Split:
    """Load ``spec`` (a path, glob, folder, hub reference or in-memory dataset) as split ``name``."""
    import datasets

    if is_object(spec):
        return _from_object(spec, name, streaming)
    hub = hub_reference(spec)
    if hub is not None:
        return _from_hub(hub, name, streaming)
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        if not any(os.path.exists(os.path.join(spec, f)) for f in ("state.json", "dataset_dict.json")):
            raise DataError("is a directory, not a data file nor a datasets save_to_disk folder", file=spec)
        try:
            loaded = datasets.load_from_disk(spec)
        except Exception as exc:
            raise DataError(f"cannot load the save_to_disk folder: {first_line(exc)}", file=spec) from None
        split = _from_object(loaded, name, streaming, where=spec)
        split.record = {"path": os.path.abspath(spec), "fingerprint": getattr(split.dataset, "_fingerprint", None)}
        return split
    files = _expand(spec)
    suffixes = {_suffix(f) for f in files}
    if len(suffixes) > 1:
        raise DataError(f"mixes file types {', '.join(sorted(suffixes))}; give files of one type", file=spec)
    (suffix,) = suffixes
    builder = BUILDERS.get(suffix)
    if builder is None:
        raise DataError(f"unsupported file type {suffix!r}; use one of {', '.join(BUILDERS)} "
                        "(optionally compressed), a save_to_disk folder or a hub: reference", file=spec)
    for f in files:
        if not os.access(f, os.R_OK):
            raise DataError("cannot read the file (permission denied)", file=f)
    kwargs: dict = {}
    if builder == "csv":
        # every cell as written: no "NA"/"null" → NaN guessing, which would turn texts into floats
        kwargs.update(sep="\t" if suffix == ".tsv" else ",", keep_default_na=False)
    split = Split(name, None, spec, files, builder,
                  {"path": [os.path.abspath(f) for f in files] if len(files) > 1 else os.path.abspath(files[0]),
                   "sha256": [sha256_file(f) for f in files] if len(files) > 1 else sha256_file(files[0])})
    if all(os.path.getsize(f) == 0 for f in files):
        raise DataError("no rows (the file is empty)", file=spec)
    if builder == "json" and any(_bracket_depth(f) > MAX_DEPTH for f in files):
        # pyarrow's JSON reader overflows its stack (the process dies) on deep nesting: read
        # such files with Python's parser, which refuses them with an error instead
        for f in files:
            diagnose(f, builder)
        split.dataset = _from_raw_rows(files, builder, ",", streaming)
        return split
    try:
        with _datasets_silent():   # its "Failed to load JSON" log lines: we say it in one line
            split.dataset = datasets.load_dataset(builder, data_files=files, split="train",
                                                  streaming=streaming, **kwargs)
    except Exception as exc:   # Arrow could not read it: find the first broken line ourselves
        if builder not in ("json", "csv"):
            raise DataError(f"cannot read: {first_line(exc)}", file=spec) from None
        for f in files:
            diagnose(f, builder, kwargs.get("sep", ","))
        # every line parses (e.g. mixed types next to blank lines, which the pandas fallback of
        # datasets' JSON reader refuses): build the Arrow table from our own row reader
        split.dataset = _from_raw_rows(files, builder, kwargs.get("sep", ","), streaming)
    if not streaming and len(split.dataset) == 0:
        raise DataError("no rows (the file is empty)", file=spec)
    return split


def _bracket_depth(path: str, chunk: int = 1 << 24) -> int:
    """An upper bound of the JSON nesting depth (brackets inside strings count too),
    computed with numpy over the raw bytes: about a second per GB."""
    import numpy as np

    depth = top = 0
    with _open_binary(path) as f:
        for block in iter(lambda: f.read(chunk), b""):
            a = np.frombuffer(block, dtype=np.uint8)
            step = np.isin(a, OPENERS).astype(np.int32) - np.isin(a, CLOSERS).astype(np.int32)
            if not step.any():
                continue
            levels = np.cumsum(step) + depth
            top = max(top, int(levels.max()))
            depth = int(levels[-1])
    return top


def _open_binary(path: str):
    suffix = Path(path).suffix.lower()
    if suffix in (".gz", ".bz2", ".xz"):
        import bz2, gzip, lzma
        return {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[suffix](path, "rb")
    return open(path, "rb")


def _raw_rows(files, builder, sep, mtimes):
    for f in files:
        for _, row in iter_raw_rows(f, builder, sep):
            yield row


def _from_raw_rows(files: list, builder: str, sep: str, streaming: bool):
    import datasets

    kwargs = {"files": files, "builder": builder, "sep": sep,
              "mtimes": [os.path.getmtime(f) for f in files]}   # part of the cache key
    try:
        if streaming:
            return datasets.IterableDataset.from_generator(_raw_rows, gen_kwargs=kwargs)
        return datasets.Dataset.from_generator(_raw_rows, gen_kwargs=kwargs)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read: {first_line(exc)}", file=files[0]) from None


class _datasets_silent:
    """datasets' logger off for a block (its progress bars follow --quiet elsewhere)."""

    def __enter__(self):
        from datasets.utils import logging as dlog

        self.level = dlog.get_verbosity()
        dlog.set_verbosity(dlog.CRITICAL + 1)

    def __exit__(self, *exc):
        from datasets.utils import logging as dlog

        dlog.set_verbosity(self.level)


def _expand(spec: str) -> list[str]:
    if any(c in spec for c in "*?["):
        files = sorted(f for f in glob.glob(spec, recursive=True) if os.path.isfile(f))
        if not files:
            raise DataError("no files match this pattern", file=spec)
        return files
    if os.path.islink(spec) and not os.path.exists(spec):
        raise DataError("a broken or looping symbolic link", file=spec)
    if not os.path.exists(spec):
        raise DataError(f"file not found{hub_hint(spec)}", file=spec)
    return [spec]


def hub_hint(spec: str) -> str:
    """A hint for a missing "owner/name" file: perhaps a hub dataset was meant."""
    parts = spec.split("/")
    if len(parts) == 2 and all(parts) and not _suffix(spec):
        return f" (for a dataset on the Hugging Face Hub write hub:{spec})"
    return ""


def _from_object(obj, name: str, streaming: bool, where: str | None = None) -> Split:
    import datasets

    if isinstance(obj, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if name not in obj:
            raise DataError(f"the DatasetDict has no {name!r} split (it has: {', '.join(map(repr, obj))})",
                            file=where)
        obj = obj[name]
    elif type(obj).__module__.split(".")[0] == "pandas":
        obj = datasets.Dataset.from_pandas(obj, preserve_index=False)
    if not isinstance(obj, (datasets.Dataset, datasets.IterableDataset)):
        raise DataError(f"data.{name}: expected a path, a hub: reference, a datasets Dataset / DatasetDict / "
                        f"IterableDataset or a pandas DataFrame, got {type(obj).__name__}")
    if streaming and isinstance(obj, datasets.Dataset):
        obj = obj.to_iterable_dataset()
    where = where or f"<{name} {type(obj).__name__}>"
    if isinstance(obj, datasets.Dataset) and len(obj) == 0:
        raise DataError("no rows (the dataset is empty)", file=where)
    return Split(name, obj, where, record={"fingerprint": getattr(obj, "_fingerprint", None),
                                           "type": type(obj).__name__})


def _from_hub(ref: dict, name: str, streaming: bool) -> Split:
    import datasets

    path = ref.get("path")
    where = f"hub:{path}"
    if not isinstance(path, str) or not path:
        raise DataError(f"data.{name}: a hub dataset needs 'path' (e.g. {{path: stanfordnlp/sst2, split: {name}}})")
    unknown = set(ref) - {"path", "name", "split", "revision", "data_files", "data_dir"}
    if unknown:
        raise DataError(f"data.{name}: unknown key(s) {', '.join(sorted(unknown))} for a hub dataset "
                        "(path, name, split, revision, data_files, data_dir)")
    if datasets.config.HF_HUB_OFFLINE or os.environ.get("HF_DATASETS_OFFLINE", "") in ("1", "true", "TRUE"):
        raise DataError(f"hub dataset {path!r} needs the Hugging Face Hub, but this machine is offline "
                        "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); save it with save_to_disk where you are "
                        "online and give that folder, or its data files", file=where)
    kwargs = {k: ref[k] for k in ("name", "revision", "data_files", "data_dir") if ref.get(k) is not None}
    try:
        ds = datasets.load_dataset(path, split=ref.get("split", name), streaming=streaming, **kwargs)
    except Exception as exc:
        raise DataError(f"cannot load the hub dataset: {first_line(exc)}", file=where) from None
    return Split(name, ds, where, record={"hub": path, **kwargs, "split": ref.get("split", name),
                                          "fingerprint": getattr(ds, "_fingerprint", None)})


# --------------------------------------------------------------------------- diagnosis

def diagnose(path: str, builder: str, sep: str = ",") -> None:
    """Raise the DataError for the first unreadable line of a JSON/CSV file, if there is one.
    Streams the file: constant memory at any size; only runs once ``datasets`` has failed."""
    count = 0
    for _ in iter_raw_rows(path, builder, sep):
        count += 1
    if count == 0:
        raise DataError("no rows (the file is empty)", file=path)


def iter_raw_rows(path: str, builder: str = "json", sep: str = ",") -> Iterator[tuple[int, dict]]:
    """``(line, row)`` from a JSON Lines / JSON array / CSV file with precise errors."""
    try:
        if builder == "csv":
            yield from _csv_rows(path, sep)
        elif _suffix(path) == ".json" and _starts_with_bracket(path):
            yield from _json_array_rows(path)
        else:
            yield from _jsonl_rows(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x})", file=path,
                        line=_line_of_bad_byte(path)) from None
    except RecursionError:
        raise DataError("a value nested too deeply to read", file=path) from None


def _line_of_bad_byte(path: str) -> int | None:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def _jsonl_rows(path: str) -> Iterator[tuple[int, dict]]:
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"malformed JSON: {exc.msg} (column {exc.colno})", file=path, line=n) from None
            if not isinstance(row, dict):
                raise DataError(f"expected a JSON object, got {type(row).__name__}", file=path, line=n)
            yield n, row


def _json_array_rows(path: str) -> Iterator[tuple[int, dict]]:
    with _open_text(path) as f:
        try:
            rows = json.load(f)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON: {exc.msg}", file=path, line=exc.lineno) from None
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DataError(f"item {i} is not a JSON object", file=path)
        yield i, row


def _csv_rows(path: str, sep: str) -> Iterator[tuple[int, dict]]:
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=sep)
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


# --------------------------------------------------------------------------- checks

def check(split: Split, task, options, state: dict | None) -> None:
    """Run the task's batched check (and the core's text-length bound) over every row."""
    if split.streaming:
        return   # checked as the rows stream: see checked_stream
    try:
        _check_batches(split, task, options, state)
    except UnicodeDecodeError as exc:   # pyarrow's JSON reader lets invalid UTF-8 into strings
        bad = next(((f, _line_of_bad_byte(f)) for f in split.files if _line_of_bad_byte(f)), (split.where, None))
        raise DataError(f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x})", file=bad[0], line=bad[1]) from None


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
    sep = Split._csv_sep
    for path in split.files:
        rows: list = []

        def flush():
            columns = {k for _, r in rows for k in r}
            batch = {k: [r.get(k) for _, r in rows] for k in columns}
            try:
                task.check_batch(batch, options, state)
            except RowError as exc:
                raise DataError(str(exc), file=path, line=rows[exc.row or 0][0], field=exc.field) from None
            rows.clear()

        for line, row in iter_raw_rows(path, split.builder, sep(path) or ","):
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
