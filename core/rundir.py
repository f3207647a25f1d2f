"""The run directory: manifest, metrics and model (atomic: temporary folder, then renamed into place)."""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
from importlib import metadata
from pathlib import Path

from .checkpoints import weights_sha256
from .errors import RunDirError
from .protocols import member
from .util import atomic_dir, atomic_file

MANIFEST, METRICS, MODEL, CARD, CURVES = "tunesmith.json", "metrics.json", "model", "README.md", "curves.png"
SAVED = (f"{MODEL}/", METRICS, CARD, CURVES, MANIFEST)   # what a complete run leaves
LIBRARIES = ("tunesmith", "torch", "transformers", "peft", "accelerate", "datasets", "evaluate", "pluggy")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def write_json(path: Path, data) -> None:
    """Write JSON atomically (temp file + rename)."""
    with atomic_file(path) as f:
        json.dump(data, f, indent=2, default=str, allow_nan=False)   # NaN is not JSON
        f.write("\n")


def read_manifest(run_dir) -> dict:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise RunDirError(f"{str(run_dir)!r} is not a tunesmith run directory (no {MANIFEST})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}: corrupt manifest: {exc}") from None


def is_run_dir(path) -> bool:
    """A folder tunesmith made: its manifest parses and says which tunesmith wrote it."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "tunesmith_version" in manifest


def check_replaceable(run_dir: Path, keep) -> None:
    """What ``--overwrite`` may delete: only a run directory this tool made, and never one
    that holds (or is) the config, a data file or the model it is about to read."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"output_dir {str(run_dir)!r} is not a directory; --overwrite replaces only a "
                          "tunesmith run directory; choose another output_dir")
    if not is_run_dir(run_dir):
        raise RunDirError(f"output_dir {str(run_dir)!r} is not a tunesmith run directory (no readable "
                          f"{MANIFEST}); --overwrite replaces only a run directory tunesmith made, so "
                          "nothing was deleted; choose another output_dir")
    root = run_dir.resolve()
    for path in keep:
        if not path or not os.path.exists(path):
            continue   # a hub id or an unset split
        inside = Path(path).resolve()
        if inside == root or root in inside.parents:
            raise RunDirError(f"output_dir {str(run_dir)!r} contains {str(path)!r}, which this run reads; "
                              "--overwrite would delete it, so nothing was deleted; choose another output_dir")


def write_manifest(run, status: str, finished: float | None = None) -> None:
    cfg = run.config
    data_files = {name: split.record for name, split in run.splits.items()}   # checksums taken at load
    plugins = {name: {"distribution": i.distribution, "version": i.version, "status": i.status}
               for name, i in run.plugins.infos.items()}
    manifest = {
        "tunesmith_version": _version("tunesmith"),
        "status": status,
        "task": run.task.name,
        "task_state": run.state,
        "strategy": run.strategy.name,
        "model": {"reference": cfg.model, "resolved": run.model_path,
                  "weights_sha256": weights_sha256(run.model_path)},
        "resumed_from": getattr(run, "resumed_from", None),
        # who writes it: a "running" run whose process is gone died (lifecycle.rerunnable)
        "pid": os.getpid(),
        "host": socket.gethostname(),
        # what trained the model: {"requested", "used": fp32/bf16/fp16, "why"}; the weights are float32
        "precision": getattr(run, "precision", None) or None,
        "config": cfg.to_dict(),
        "config_source": cfg.source,
        "seed": cfg.training.seed,
        "trust_remote_code": cfg.trust_remote_code,
        "data": data_files,
        "plugins": plugins,
        "libraries": {name: _version(name) for name in LIBRARIES},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(run.started_at)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(finished)) if finished else None,
    }
    write_json(run.run_dir / MANIFEST, manifest)


def strip_prefix(metrics: dict, prefix: str) -> dict:
    out = {}
    for key, value in metrics.items():
        name = key[len(prefix):] if key.startswith(prefix) else key
        if name in ("runtime", "samples_per_second", "steps_per_second", "epoch", "step"):
            continue   # timing lives in train_runtime_s and the history, not beside the metrics
        out[name] = value
    return out


def history(log_history: list) -> list:
    """Per-evaluation entries: epoch, step, last training loss, validation metrics."""
    out, last_loss = [], None
    final_loss = next((e["train_loss"] for e in log_history if "train_loss" in e), None)
    for entry in log_history:
        if "loss" in entry:
            last_loss = entry["loss"]
        if any(k.startswith("eval_") for k in entry) and "eval_runtime" in entry:
            out.append({"epoch": entry.get("epoch"), "step": entry.get("step"),
                        "train_loss": last_loss if last_loss is not None else final_loss,
                        "eval": strip_prefix(entry, "eval_")})
    return out


def steps(log_history: list) -> list:
    """The training loss at every logged step: ``[{"step", "epoch", "loss"}, ...]``."""
    return [{"step": e.get("step"), "epoch": e.get("epoch"), "loss": e["loss"]}
            for e in log_history if "loss" in e and isinstance(e["loss"], (int, float))]


def save(run, model, tokenizer, result) -> None:
    """Write model/, metrics.json and the final manifest (the card plugin adds README.md, curves.png)."""
    run_dir = run.run_dir
    try:
        with atomic_dir(run_dir / MODEL) as tmp:
            save = member(run.strategy, "save_model")
            if save is not None:
                save(model, tmp, run.model_path)
            else:
                model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
    except OSError as exc:
        raise RunDirError(f"cannot save the model into {str(run_dir)!r}: {exc}") from None
    metrics = {"eval": result.metrics, "history": result.history,
               "trainable_parameters": result.trainable_parameters,
               "total_parameters": result.total_parameters,
               "train_runtime_s": result.train_runtime_s}
    if result.test_metrics is not None:
        metrics["test"] = result.test_metrics
    metrics["steps"] = getattr(result, "steps", [])   # training loss per logged step (curves.png)
    # rows each split had (validation after training.max_eval_samples): the cards say what was scored
    metrics["rows"] = {name: len(split.dataset) for name, split in run.splits.items() if not split.streaming}
    write_json(run_dir / METRICS, metrics)
    write_manifest(run, status="complete", finished=time.time())
