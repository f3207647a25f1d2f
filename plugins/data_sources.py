"""Built-in data sources: data files (by extension, globs, save_to_disk folders), hub references, Python objects.

How a ``data.train`` / ``validation`` / ``test`` value becomes a ``datasets`` object, and,
for the line formats (JSON Lines, CSV), which file and line a row is on and the first
unreadable line, found again only when an error occurs (docs/architecture.md, Data flow).
"""

from __future__ import annotations

import csv
import glob
import json
import os
from pathlib import Path
from typing import Iterator

from tunesmith import DataError, hookimpl
from tunesmith.data import Split, file_type, hub_hint
from tunesmith.errors import first_line
from tunesmith.util import sha256_file

BUILDERS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv", ".tsv": "csv",
            ".parquet": "parquet", ".arrow": "arrow"}
MAX_DEPTH = 1_000           # JSON nesting beyond this is read by Python, not pyarrow (see _from_files)
OPENERS, CLOSERS = (ord("["), ord("{")), (ord("]"), ord("}"))


class FileSource:
    name = "files"
    description = ("a data file (.jsonl .json .csv .tsv .parquet .arrow, optionally compressed), "
                   "a glob of them, or a save_to_disk folder")

    def matches(self, spec) -> bool:
        return isinstance(spec, (str, os.PathLike))

    def load(self, spec, name: str, streaming: bool) -> Split:
        return _from_files(os.fspath(spec), name, streaming)

    def locate(self, split: Split, index: int) -> tuple[str, int | None, int | None]:
        """(file, line, row): the line for line formats, else the 1-based row number."""
        remaining = index
        for path in split.files:
            if split.builder in ("json", "csv") and _is_line_format(path):
                line, count = _line_of(path, remaining, csv_sep=_csv_sep(path))
            else:
                line, count = None, _row_count(path, split.builder)
            if line is not None:
                return path, line, None
            if remaining < count:
                return path, None, remaining + 1
            remaining -= count
        return split.where, None, index + 1

    def raw_rows(self, split: Split, path: str) -> Iterator[tuple[int, dict]]:
        return iter_raw_rows(path, split.builder, _csv_sep(path) or ",")

    def decode_error(self, split: Split, exc: UnicodeDecodeError) -> DataError:
        """pyarrow's JSON reader lets invalid UTF-8 into strings: name the first bad line."""
        bad = next(((f, _line_of_bad_byte(f)) for f in split.files if _line_of_bad_byte(f)), (split.where, None))
        return DataError(f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x})", file=bad[0], line=bad[1])


class HubSource:
    name = "hub"
    description = "hub:owner/name[:split] or {path, name, split, revision} on the Hugging Face Hub (online only)"

    def matches(self, spec) -> bool:
        return hub_reference(spec) is not None

    def load(self, spec, name: str, streaming: bool) -> Split:
        return _from_hub(hub_reference(spec), name, streaming)


class ObjectSource:
    name = "objects"
    description = "a datasets Dataset / DatasetDict / IterableDataset or a pandas DataFrame (Python API)"

    def matches(self, spec) -> bool:
        return is_object(spec)

    def load(self, spec, name: str, streaming: bool) -> Split:
        return _from_object(spec, name, streaming)


@hookimpl(trylast=True)
def register_data_sources(register):
    for source in (ObjectSource(), HubSource(), FileSource()):
        register(source)


# --------------------------------------------------------------------------- loading

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


def _from_files(spec: str, name: str, streaming: bool) -> Split:
    """A file, a glob of files of one type, or a save_to_disk folder as split ``name``."""
    import datasets

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
    suffixes = {file_type(f) for f in files}
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


# --------------------------------------------------------------------------- where a row is

def _csv_sep(path: str) -> str | None:
    kind = file_type(path)
    return "\t" if kind == ".tsv" else "," if kind == ".csv" else None


def _is_line_format(path: str) -> bool:
    return file_type(path) in (".jsonl", ".ndjson", ".csv", ".tsv") or (
        file_type(path) == ".json" and not _starts_with_bracket(path))


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
        elif file_type(path) == ".json" and _starts_with_bracket(path):
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


