"""Pieces the core, the apps and the plugins share: atomic writes, hashes, lists, rank 0, cache root.

Cheap to import: nothing heavy (torch, transformers) is imported here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def split_list(text: str | None) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]`` (command-line and config lists)."""
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, read in chunks (weights and data can be GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def is_main_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch (both set ``RANK``), or a plain process:
    the one process that writes the run directory."""
    return int(os.environ.get("RANK", "0")) == 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path, mode: str = "w"):
    """Write ``path`` through a temporary file beside it, renamed into place on success:
    a crash or an error leaves the old file (or none), never half of a new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; keep the user's usual permissions
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path, replace: bool = True):
    """Fill a temporary folder beside ``path`` (yielded), then rename it into place
    (replacing an existing ``path`` when ``replace``); on error it is removed."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if replace and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cache_root(optional: bool = True) -> Path | None:
    """``TUNESMITH_CACHE``: the root folder of tunesmith's caches (``preprocessed/``,
    ``gguf/``); default ``$XDG_CACHE_HOME/tunesmith``, else ``~/.cache/tunesmith``.
    ``TUNESMITH_CACHE=off`` turns off what is only a speed-up (``optional``: None is
    returned); what must be stored somewhere (a converted GGUF model) uses the default."""
    value = os.environ.get("TUNESMITH_CACHE", "")
    off = value.lower() in ("off", "0", "false", "none")
    if off and optional:
        return None
    if value and not off:
        return Path(value)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tunesmith"
