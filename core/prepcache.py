"""Preprocessing cache: a task's encoded split is written once as an Arrow file and reused.

The key (sha256) covers the data's ``datasets`` fingerprint, the task (name, plugin version,
module source), the tokenizer, the task options and state, and train/eval; the files live in
``preprocessed/`` under :func:`tunesmith.util.cache_root` (``TUNESMITH_CACHE=off``: no cache).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from .util import cache_root

FORMAT = 2   # bump when the cached layout changes


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


def key(task, dataset, tokenizer, state, options, train: bool) -> str | None:
    """The cache key of encoding ``dataset``, or None when it cannot be computed."""
    from datasets.fingerprint import Hasher
    from importlib import metadata

    fingerprint = getattr(dataset, "_fingerprint", None)
    if not fingerprint:
        return None
    module = type(task).__module__
    try:
        version = metadata.version(module.split(".")[0])
    except metadata.PackageNotFoundError:
        version = "?"
    head = {"format": FORMAT, "task": task.name, "module": module,
            "version": version, "source": _source_digest(module), "state": state,
            "options": _options(options), "train": train, "data": fingerprint}
    h = hashlib.sha256(json.dumps(head, sort_keys=True, default=str).encode())
    try:
        h.update(Hasher.hash(tokenizer).encode())
    except Exception:   # an unhashable tokenizer: never cache rather than risk a stale hit
        return None
    return h.hexdigest()


def cache_file(digest: str) -> Path | None:
    """Where the encoded split of ``digest`` lives, or None when caching is off."""
    root = cache_root(optional=True)
    if root is None:
        return None
    folder = root / "preprocessed" / digest[:2]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder / f"{digest}.arrow"
