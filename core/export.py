"""``tunesmith export``: a run as a plain Hugging Face folder or as ONNX.

``hf``: adapters (LoRA) are merged into the weights with peft's ``merge_and_unload``,
label names stay in ``config.json``, the tokenizer's ``model_max_length`` is set to the
``max_length`` used in training, and a model card explains how to load it, so
``transformers.pipeline(task, model=DIR)`` works without tunesmith installed.

``onnx`` (extra ``onnx``): ``torch.onnx.export`` of the task's forward pass (input ids →
logits) with dynamic batch and sequence axes; the file is run with onnxruntime on real
inputs and must match PyTorch within ``ATOL`` before anything is written.

Both write into a temporary folder beside ``--out`` and rename it into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import RunDirError, TunesmithError

ATOL = 1e-4
FORMATS = ("hf", "onnx")


class ExportError(TunesmithError):
    """A run that cannot be exported in the requested format."""


def export(run_dir, out, format: str = "hf", plugins=None, overwrite: bool = False,
           predictor=None) -> dict:
    """Write ``run_dir``'s model to ``out``; return a summary (path, format, files, checks)."""
    from .predictor import Predictor

    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; use one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise RunDirError(f"{str(out)!r} exists and is not empty; pass --overwrite to replace it")
    # float32: the exported graph / weights must not carry an autocast wrapper
    predictor = predictor or Predictor(run_dir, plugins=plugins, precision="fp32")
    task = predictor.task
    if format == "onnx" and not getattr(task, "onnx_output", None):
        raise ExportError(f"task {task.name!r} does not support ONNX export (use --format hf)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        model = merged_model(predictor.model)
        tokenizer = predictor.tokenizer
        max_length = getattr(predictor.options, "max_length", None)
        if max_length:
            # pipelines truncate (truncation=True) at model_max_length: make it training's limit
            tokenizer.model_max_length = max_length
        summary: dict = {"format": format, "task": task.name}
        if format == "hf":
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        else:
            summary["max_abs_diff"] = export_onnx(model, tokenizer, tmp / "model.onnx", predictor)
            model.config.save_pretrained(tmp)   # labels (id2label) for ONNX users
            tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(predictor, format), encoding="utf-8")
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary["out"] = str(out)
    summary["files"] = sorted(p.name for p in out.iterdir())
    return summary


def merged_model(model):
    """The plain transformers model: peft adapters merged in (modules_to_save, e.g. the
    classifier head, become ordinary modules), anything else unchanged."""
    try:
        from peft import PeftModel
    except ImportError:   # pragma: no cover - peft is a core dependency
        return model
    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    return model.eval()


def _sample_texts(predictor) -> list:
    """Inputs to check an export with: varied lengths, incl. one cut at max_length."""
    texts = ["good", "a gripping , beautifully acted film that never lets up",
             "it 's a dull , lifeless and overlong mess , and nobody in it seems to care",
             " ".join(["a long review"] * 200), "ok ."]
    return texts


def export_onnx(model, tokenizer, path: Path, predictor) -> float:
    """Export ``model`` (ids → logits) to ``path``; check with onnxruntime. Returns the
    largest absolute logit difference seen (must be <= ATOL)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("ONNX export needs onnx and onnxruntime: pip install 'tunesmith[onnx]'") from None
    import numpy as np
    import torch

    options = predictor.options
    max_length = getattr(options, "max_length", 512)
    enc = tokenizer(_sample_texts(predictor)[:3], padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    output = predictor.task.onnx_output

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return getattr(self.inner(**dict(zip(names, args))), output)

    wrapped = Wrapped(model).eval()
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch"}
    with torch.inference_mode(False), torch.no_grad():
        # the TorchScript exporter: exact, fast, and needs no onnxscript at run time
        torch.onnx.export(wrapped, tuple(enc[n] for n in names), str(path), input_names=names,
                          output_names=[output], dynamic_axes=axes, opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    texts = _sample_texts(predictor)
    for batch in ([texts[0]], texts[1:3], texts):   # batch 1, padded batches, a truncated input
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            expected = wrapped(*(enc[n] for n in names)).float().numpy()
        got = session.run([output], {n: enc[n].numpy().astype(np.int64) for n in names})[0]
        worst = max(worst, float(np.abs(expected - got).max()))
    if worst > ATOL:
        raise ExportError(f"the ONNX model differs from PyTorch by {worst:.2e} (> {ATOL}) on the "
                          "check inputs; nothing written")
    return worst


def model_card(predictor, format: str) -> str:
    meta = predictor.metadata()
    task = predictor.task
    pipeline_task = getattr(task, "pipeline_task", None) or task.name
    metrics = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                        for k, v in meta["metrics"].items()) or "| (none) | |"
    if format == "hf":
        how = f"""```python
from transformers import pipeline

pipe = pipeline("{pipeline_task}", model="PATH/TO/THIS/FOLDER")
pipe(["an example input"], truncation=True)   # truncation=True cuts at {meta['options'].get('max_length')} tokens, as in training
```"""
    else:
        how = """```python
import numpy as np, onnxruntime as ort
from transformers import AutoTokenizer

tok = AutoTokenizer.from_pretrained("PATH/TO/THIS/FOLDER")
session = ort.InferenceSession("PATH/TO/THIS/FOLDER/model.onnx")
enc = tok(["an example input"], padding=True, truncation=True, return_tensors="np")
logits = session.run(None, {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()})[0]
```
Label names are `id2label` in `config.json`."""
    labels = meta.get("labels")
    return f"""---
library_name: {"transformers" if format == "hf" else "onnx"}
pipeline_tag: {pipeline_task}
tags: [tunesmith, {task.name}, {meta['strategy']}]
---
# {task.name} model exported by tunesmith ({format})

- **Base model:** `{meta['model']}`
- **Fine-tuning strategy:** `{meta['strategy']}`{" (LoRA merged into the weights)" if meta['strategy'] == 'lora' else ""}
- **Labels:** {", ".join(f"`{x}`" for x in labels) if labels else "n/a"}
- **Exported from:** `{predictor.run_dir}` (trained {meta.get('trained_at')})

## Validation metrics (from training)

| metric | value |
|---|---|
{metrics}

## How to load (no tunesmith needed)

{how}

Training options: `{json.dumps(meta['options'])}`
"""
