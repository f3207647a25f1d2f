"""The run directory: manifest, metrics, model, model card, curves.

The final model is written into a temporary folder inside the run directory and
renamed into place, so a crash never leaves a half-written ``model/``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from .checkpoints import weights_sha256
from .data import describe
from .errors import RunDirError
from .protocols import member

MANIFEST, METRICS, MODEL, CARD, CURVES = "tunesmith.json", "metrics.json", "model", "README.md", "curves.png"
LIBRARIES = ("tunesmith", "torch", "transformers", "peft", "accelerate", "datasets", "evaluate", "pluggy")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def write_json(path: Path, data) -> None:
    """Write JSON atomically (temp file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; keep the user's usual permissions
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, default=str, allow_nan=False)   # NaN is not JSON
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def save(run, model, tokenizer, result) -> None:
    """Write model/, metrics.json, README.md, curves.png and the final manifest."""
    run_dir = run.run_dir
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".model-"))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        save = member(run.strategy, "save_model")
        if save is not None:
            save(model, tmp, run.model_path)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        final = run_dir / MODEL
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RunDirError(f"cannot save the model into {str(run_dir)!r}: {exc}") from None
    metrics = {"eval": result.metrics, "history": result.history,
               "trainable_parameters": result.trainable_parameters,
               "total_parameters": result.total_parameters,
               "train_runtime_s": result.train_runtime_s}
    if result.test_metrics is not None:
        metrics["test"] = result.test_metrics
    write_json(run_dir / METRICS, metrics)
    (run_dir / CARD).write_text(model_card(run, result, model), encoding="utf-8")
    plot_curves(result.history, run_dir / CURVES)
    write_manifest(run, status="complete", finished=time.time())


def model_card(run, result, model=None) -> str:
    cfg = run.config
    adapter = run.strategy.name == "lora"
    metrics = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                        for k, v in result.metrics.items())
    pct = 100 * result.trainable_parameters / max(result.total_parameters, 1)
    auto = (hf_auto_class(model) if model is not None else None) or "AutoModel"
    peft_config = getattr(model, "peft_config", {}).get("default") if adapter else None
    if peft_config is not None and not peft_config.base_model_name_or_path:
        # e.g. bert2bert: the base was assembled in memory, so no name leads peft back to it
        load_hf = ("# the adapter's base model exists only in memory (assembled by tunesmith), so peft\n"
                   "# cannot rebuild it; export a merged, standalone copy first (in this folder):\n"
                   "#   tunesmith export . --format hf --out merged\n"
                   f"from transformers import {auto}\nmodel = {auto}.from_pretrained(\"merged\")")
    elif adapter:
        peft_auto = "AutoPeftModel" + auto[len("AutoModel"):]   # AutoModelForX -> AutoPeftModelForX
        load_hf = f"from peft import {peft_auto}\nmodel = {peft_auto}.from_pretrained(\"model\")"
    elif run.task.name == "text-classification":
        load_hf = "from transformers import pipeline\nclf = pipeline(\"text-classification\", model=\"model\")"
    else:
        load_hf = f"from transformers import {auto}\nmodel = {auto}.from_pretrained(\"model\")"
    example = getattr(run.task, "example_input", "an example input")
    return f"""---
library_name: {"peft" if adapter else "transformers"}
tags: [tunesmith, {run.task.name}, {run.strategy.name}]
---
# {run.task.name} fine-tuned with tunesmith

- **Base model:** `{cfg.model}`
- **Task:** `{run.task.name}`
- **Strategy:** `{run.strategy.name}` ({result.trainable_parameters:,} of {result.total_parameters:,} parameters trained, {pct:.2f}%)
- **Training data:** `{describe(cfg.data.train)}` ({cfg.training.max_train_samples or 'all'} rows used)
- **Validation data:** `{describe(cfg.data.validation)}`
- **Epochs / batch size / learning rate / seed:** {cfg.training.epochs} / {cfg.training.batch_size} / {cfg.training.learning_rate or run.strategy.default_learning_rate} / {cfg.training.seed}
- **Training time:** {result.train_runtime_s:.1f} s
- **Precision:** {precision_line(run)}

## Validation metrics

| metric | value |
|---|---|
{metrics}

## How to load

With tunesmith:

```python
import tunesmith
predictor = tunesmith.load("{run.run_dir}")
predictor.predict([{example!r}])
```

With Hugging Face libraries only (from inside this folder):

```python
{load_hf}
```

`tunesmith.json` records the full configuration, data checksums and library versions.
"""


def precision_line(run) -> str:
    """The model card's account of the numeric precision that trained the model."""
    p = getattr(run, "precision", None) or {}
    used = p.get("used", "fp32")
    if used == "fp32":
        text = "float32"
    else:
        name = {"bf16": "bfloat16", "fp16": "float16"}.get(used, used)
        text = f"{name} mixed precision (autocast; the saved weights are float32)"
    if p.get("requested") == "auto":
        text += f"; chosen by `precision: auto` ({p.get('why')})"
    return text


# (transformers Auto class, its model_type -> class name table), most specific first
_AUTO_CLASSES = (("AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
                 ("AutoModelForTokenClassification", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"),
                 ("AutoModelForQuestionAnswering", "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"),
                 ("AutoModelForSeq2SeqLM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
                 ("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"))


def hf_auto_class(model) -> str | None:
    """The transformers ``AutoModelFor...`` class that loads this model's saved folder, so
    the model card shows a snippet that works for any task, built-in or third-party."""
    from transformers.models.auto import modeling_auto

    base = model.get_base_model() if hasattr(model, "get_base_model") else model   # peft wrapper
    name = type(base).__name__
    for auto, table in _AUTO_CLASSES:
        if name in getattr(modeling_auto, table, {}).values():
            return auto
    return None


def plot_curves(hist: list, path: Path) -> None:
    """Learning curves (training loss and validation metrics per evaluation)."""
    if not hist:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:   # plots are an optional extra
        return
    epochs = [h["epoch"] for h in hist]
    names = [k for k in hist[-1]["eval"] if k != "loss" and isinstance(hist[-1]["eval"][k], (int, float))]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in hist], "o-", label="train loss")
    ax1.plot(epochs, [h["eval"].get("loss") for h in hist], "o-", label="validation loss")
    ax1.set_xlabel("epoch"), ax1.legend(), ax1.set_title("loss")
    for name in names:
        ax2.plot(epochs, [h["eval"].get(name) for h in hist], "o-", label=name)
    ax2.set_xlabel("epoch"), ax2.legend(), ax2.set_title("validation metrics")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
