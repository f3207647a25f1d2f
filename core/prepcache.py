"""Preprocessing cache: a task's encoded dataset is saved once and reused across runs.

The key is a sha256 over everything the encoding depends on: the task (name, plugin
version and the source of its module, so an edited plugin whose version string did not
change never gets stale features), the rows themselves, the tokenizer (``datasets``' own
fingerprint hasher, the one ``Dataset.map`` uses for its cache), the task options and state, and train/eval. A
hit loads the Arrow files memory-mapped with ``datasets.load_from_disk``; a miss encodes
and saves atomically (temporary folder + rename), so parallel runs (several ranks of a
``torchrun`` job, several ``compare`` runs) never see a half-written entry.

Location: ``$TUNESMITH_CACHE`` (default ``~/.cache/tunesmith/preprocessed``);
``TUNESMITH_CACHE=off`` disables it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("tunesmith")
FORMAT = 1   # bump when the cached layout changes


def cache_dir() -> Path | None:
    value = os.environ.get("TUNESMITH_CACHE", "")
    if value.lower() in ("off", "0", "false", "none"):
        return None
    return Path(value) if value else Path.home() / ".cache" / "tunesmith" / "preprocessed"


def _options(options) -> object:
    if dataclasses.is_dataclass(options):
        return dataclasses.asdict(options)
    return options


def _source_digest(module: str) -> str:
    """sha256 of the task module's source file ("" when it has none, e.g. built in C)."""
    import inspect
    import sys

    try:
        path = inspect.getsourcefile(sys.modules[module])
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else ""
    except (KeyError, TypeError, OSError):
        return ""


def key(task, rows, tokenizer, state, options, train: bool) -> str:
    from datasets.fingerprint import Hasher
    from importlib import metadata

    h = hashlib.sha256()
    module = type(task).__module__
    try:
        version = metadata.version(module.split(".")[0])
    except metadata.PackageNotFoundError:
        version = "?"
    head = {"format": FORMAT, "task": getattr(task, "name", type(task).__name__), "module": module,
            "version": version, "source": _source_digest(module), "state": state,
            "options": _options(options), "train": train}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    h.update(Hasher.hash(tokenizer).encode())
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def encode(task, rows, tokenizer, state, options, train: bool):
    """``task.encode(...)``, served from the cache when the same inputs were seen before."""
    root = cache_dir()
    if root is None or not rows:
        return task.encode(rows, tokenizer, state, options, train=train)
    import datasets

    try:
        digest = key(task, rows, tokenizer, state, options, train)
    except Exception as exc:   # an unhashable tokenizer or state: just don't cache
        log.info("tunesmith: preprocessing not cached (%s)", exc)
        return task.encode(rows, tokenizer, state, options, train=train)
    entry = root / digest[:2] / digest
    if entry.is_dir():
        try:
            return datasets.load_from_disk(str(entry))
        except Exception:   # a damaged entry: rebuild it
            shutil.rmtree(entry, ignore_errors=True)
    dataset = task.encode(rows, tokenizer, state, options, train=train)
    if not isinstance(dataset, datasets.Dataset):
        return dataset
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=entry.parent, prefix=f".{digest[:8]}-")
        dataset.save_to_disk(tmp)
        try:
            os.replace(tmp, entry)
        except OSError:   # another process stored the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        log.warning("tunesmith: cannot write the preprocessing cache %s: %s", root, exc)
    return dataset
