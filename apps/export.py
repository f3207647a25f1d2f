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
import re
from pathlib import Path

from ..errors import RunDirError, TunesmithError
from ..protocols import member
from ..util import atomic_dir
from .predict import EXPORT_MANIFEST   # what `--backend onnx` needs to predict with the folder

ATOL = 1e-4
FORMATS = ("hf", "onnx")
QUANTIZE = ("int8",)
PARITY = "parity.json"


class ExportError(TunesmithError):
    """A run that cannot be exported in the requested format."""


def export(run_dir, out, format: str = "hf", plugins=None, overwrite: bool = False,
           predictor=None, quantize: str | None = None, parity_data=None,
           min_agreement: float | None = None) -> dict:
    """Write ``run_dir``'s model to ``out``; return a summary (path, format, files, checks).

    Before anything is renamed into place, the export is loaded the way a user would (in a
    Python without tunesmith) and its predictions on the run's validation rows are compared
    with the run's (:mod:`tunesmith.apps.parity`); the report is ``parity.json``."""
    from . import parity
    from .predict import Predictor

    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; use one of {', '.join(FORMATS)}")
    if quantize is not None and (quantize not in QUANTIZE or format != "onnx"):
        raise ExportError(f"--quantize {quantize} needs --format onnx and one of: {', '.join(QUANTIZE)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise RunDirError(f"{str(out)!r} exists and is not empty; pass --overwrite to replace it")
    if predictor is None and format == "hf":
        _refuse_mean_pooling(Path(run_dir) / "model" / "config.json")   # before the model loads
    # float32: the exported graph / weights must not carry an autocast wrapper
    if predictor is None or getattr(predictor, "precision", "fp32") != "fp32":   # an onnx Predictor has none
        predictor = Predictor(run_dir, plugins=plugins, precision="fp32")
    task = predictor.task
    if format == "onnx" and not member(task, "onnx_output"):
        raise ExportError(f"task {task.name!r} does not support ONNX export: its model does not map token ids "
                          "to one output tensor (use --format hf)")
    if parity.kind_of(task) is None:
        raise ExportError(f"task {task.name!r} has no export parity check, so tunesmith cannot show that the "
                          "export reproduces its predictions; use the run with tunesmith (predict / serve)")
    model = merged_model(predictor.model, _strategy(predictor))
    if format == "hf" and getattr(model.config, "tunesmith_pooling", None) == "mean":
        raise ExportError(MEAN_POOLING_REFUSAL)
    rows, _ = parity.validation_rows(predictor, parity_data)   # fail early if they are missing
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        tokenizer = predictor.tokenizer
        max_length = member(predictor.options, "max_length")
        if max_length:
            # pipelines truncate (truncation=True) at model_max_length: make it training's limit
            tokenizer.model_max_length = max_length
        summary: dict = {"format": format, "task": task.name}
        if format == "hf":
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        else:
            summary["max_abs_diff"] = export_onnx(model, tokenizer, tmp / "model.onnx", predictor)
            if quantize:
                summary.update(quantize_int8(tmp / "model.onnx", predictor))
            model.config.save_pretrained(tmp)   # labels (id2label) for ONNX users
            tokenizer.save_pretrained(tmp)
            _write_export_manifest(tmp / EXPORT_MANIFEST, predictor, quantize)
        report = parity.check(predictor, tmp, format, quantize=quantize, data=parity_data,
                              min_agreement=min_agreement)
        (tmp / PARITY).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        summary["parity"] = {k: report[k] for k in ("rows", "label_agreement", "max_score_diff", "passed")}
        (tmp / "README.md").write_text(model_card(predictor, format, quantize), encoding="utf-8")
    summary["out"] = str(out)
    summary["files"] = sorted(p.name for p in out.iterdir())
    return summary


# plain transformers' *ForSequenceClassification reads the [CLS] pooler; no config key of
# the standard architecture selects mean pooling, so an hf folder would silently predict
# something else (issue 15: 78.6 % label agreement)
MEAN_POOLING_REFUSAL = (
    "this run's classifier reads the MEAN of the token vectors (strategy frozen, pooling 'mean'), which the "
    "standard transformers architecture cannot express (it reads the [CLS] pooler); export it with "
    "--format onnx (the pooling is part of the graph), or train with --set strategy.pooling=cls for a "
    "plain --format hf folder")


def _refuse_mean_pooling(config_path: Path) -> None:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return   # the Predictor reports an unreadable run
    if isinstance(config, dict) and config.get("tunesmith_pooling") == "mean":
        raise ExportError(MEAN_POOLING_REFUSAL)


def _write_export_manifest(path: Path, predictor, quantize) -> None:
    """The run's manifest fields a Predictor needs (task, its state, options), so
    ``tunesmith predict/serve FOLDER --backend onnx`` works on the export alone."""
    m = predictor.manifest
    keep = {k: m.get(k) for k in ("task", "task_state", "strategy", "model", "tunesmith_version",
                                  "finished_at", "trust_remote_code")}
    config = {"data": {k: v for k, v in m["config"]["data"].items() if k not in ("train", "validation", "test")},
              "generation": m["config"].get("generation")}
    doc = {**keep, "status": "complete", "config": config, "exported_from": str(predictor.run_dir),
           "format": "onnx", "quantize": quantize}
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def quantize_int8(path: Path, predictor) -> dict:
    """Replace the float ONNX file at ``path`` by an int8 one: onnxruntime's transformer
    optimizer fuses attention / embeddings + layer norm / GELU (when it knows the
    architecture), then ``quantize_dynamic`` stores MatMul, Attention and embedding weights
    as int8 (activations are quantized per batch at run time), one scale per output
    channel, the first Transformer block's FFN output projection kept in float. Returns
    the sizes.

    Why (MiniLM/SST-2, 872 sentences, label agreement with the float model, fused graph):
    per-tensor scales 95.8 %; per-channel 98.1 %; per-channel with the whole first block in
    float 99.3 % but 0.7 points of accuracy lost (file 3.2x smaller); with only block 0's
    attention in float 98.2 %; with only block 0's FFN output projection in float 99.2 %
    and 0.3 points (3.7x smaller). That MatMul reads the GELU output, whose outliers make
    a per-batch activation scale coarse; reduce_range did not help (97.9 %)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_bytes = path.stat().st_size
    source = path
    fused = path.with_name("model-fused.onnx")
    model_type = getattr(predictor.model.config, "model_type", None)
    if model_type in ("bert", "roberta", "distilbert", "xlm-roberta", "electra", "mpnet"):
        from onnxruntime.transformers.optimizer import optimize_model

        cfg = predictor.model.config
        optimized = optimize_model(str(path), model_type="bert", num_heads=cfg.num_attention_heads,
                                   hidden_size=cfg.hidden_size, opt_level=1)
        optimized.save_model_to_file(str(fused))
        source = fused
    quantized = path.with_name("model-int8.onnx")
    import logging

    import onnx

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)   # its "consider pre-processing" advice is for static quantization
    model = onnx.load(str(source), load_external_data=False)
    keep_float = sensitive_nodes(model)
    del model
    try:
        # the fused ops (com.microsoft Attention, SkipLayerNormalization) have no ONNX shape
        # inference: their outputs are float tensors, which is what DefaultTensorType says
        quantize_dynamic(str(source), str(quantized), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=keep_float,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
    fused.unlink(missing_ok=True)
    os.replace(quantized, path)
    int8_bytes = path.stat().st_size
    return {"quantize": "int8", "float_bytes": float_bytes, "int8_bytes": int8_bytes,
            "size_ratio": round(float_bytes / int8_bytes, 2)}


# the FFN output projection of a block, per architecture: BERT-likes (not the attention's
# own output/dense), DistilBERT, GPT-2, Llama-likes, T5, ViT/CLIP-likes
_FFN_OUT = re.compile(r"(?<!attention)/output/dense/|/ffn/lin2/|/mlp/c_proj/|/mlp/down_proj/|"
                      r"/DenseReluDense/wo/|/mlp/fc2/")


def sensitive_nodes(model) -> list[str]:
    """Names of the MatMul/Gemm nodes to keep in float: the first Transformer block's FFN
    output projection (the lowest ``layer.N`` / ``layers.N`` / ``h.N`` / ``block.N`` in the
    exported node names); the whole first block where that projection is not recognised;
    none if the graph has no such names."""
    blocks: dict[int, list[str]] = {}
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            found = re.search(r"(?:^|[/.])(?:layer|layers|h|block|blocks)[./](\d+)[./]", node.name)
            if found:
                blocks.setdefault(int(found.group(1)), []).append(node.name)
    if not blocks:
        return []
    first = blocks[min(blocks)]
    return [n for n in first if _FFN_OUT.search(n)] or first


def merged_model(model, strategy=None):
    """The plain transformers model: the strategy's ``merge_model`` (adapters merged in),
    anything else unchanged."""
    merge = member(strategy, "merge_model")
    return (merge(model) if merge else model).eval()


def _strategy(predictor):
    """The strategy that trained the run (its registry object), or None if unknown."""
    name = predictor.manifest.get("strategy")
    return predictor.plugins.registry.strategies[name].obj if name in predictor.plugins.registry.strategies else None


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
    max_length = member(options, "max_length") or 512
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
    # transformers' default SDPA attention traces into a masked graph (Where/IsNaN) that
    # onnxruntime's transformer optimizer does not recognise; the eager implementation (same
    # arithmetic) traces into the pattern it fuses into one Attention op, which int8 needs for speed
    attention = getattr(model.config, "_attn_implementation", None)
    if attention not in (None, "eager") and hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
        except (ValueError, ImportError):
            attention = None   # a model without an eager path: export what it has
    else:
        attention = None
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch"}
    import warnings

    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # the tracer's warnings are about Python-side branches on shapes; the graph is
        # checked against PyTorch on batches of other shapes below
        warnings.simplefilter("ignore")
        # the TorchScript exporter: exact, fast, and needs no onnxscript at run time
        try:
            torch.onnx.export(wrapped, tuple(enc[n] for n in names), str(path), input_names=names,
                              output_names=[output], dynamic_axes=axes, opset_version=17, dynamo=False)
        finally:
            if attention is not None:   # the caller's model predicts as before
                model.set_attn_implementation(attention)
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


def export_base_line(predictor) -> str:
    from ..plugins.card import base_line, base_model_info

    model = predictor.manifest.get("model") or {}
    return base_line(model.get("reference", ""), base_model_info(predictor.plugins, model.get("reference", ""),
                                                                  model.get("resolved")))


def model_card(predictor, format: str, quantize: str | None = None) -> str:
    from .parity import kind_of
    from ..plugins.card import hf_auto_class

    meta = predictor.metadata()
    task = predictor.task
    pipeline_task = member(task, "pipeline_task") or task.name
    from ..plugins.card import metrics_table

    metrics = metrics_table(meta["metrics"], task, predictor.state)
    kind = kind_of(task)
    if format == "hf" and kind == "labels":
        how = f"""```python
from transformers import pipeline

pipe = pipeline("{pipeline_task}", model="PATH/TO/THIS/FOLDER")
pipe(["an example input"], truncation=True)   # truncation=True cuts at {meta['options'].get('max_length')} tokens, as in training
```"""
    elif format == "hf":
        auto = hf_auto_class(merged_model(predictor.model, _strategy(predictor))) or "AutoModel"
        use = ("model.generate(**tok(texts, return_tensors='pt', padding=True))   "
               "# decoding settings: generation_config.json" if kind == "generation"
               else "model(**tok(question, context, return_tensors='pt'))   # start_logits / end_logits")
        how = f"""```python
from transformers import AutoTokenizer, {auto}

tok = AutoTokenizer.from_pretrained("PATH/TO/THIS/FOLDER")
model = {auto}.from_pretrained("PATH/TO/THIS/FOLDER")
{use}
```
Training options (prefix, prompt template, window sizes) are listed below."""
    else:
        how = """```python
import numpy as np, onnxruntime as ort
from transformers import AutoTokenizer

tok = AutoTokenizer.from_pretrained("PATH/TO/THIS/FOLDER")
session = ort.InferenceSession("PATH/TO/THIS/FOLDER/model.onnx")
enc = tok(["an example input"], padding=True, truncation=True, return_tensors="np")
logits = session.run(None, {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()})[0]
```
Label names are `id2label` in `config.json`. With tunesmith:
`tunesmith predict PATH/TO/THIS/FOLDER --backend onnx --input in.jsonl`."""
    if quantize:
        how += f"\n\nThe weights are {quantize} (onnxruntime dynamic quantization)."
    how += ("\n\n`parity.json` reports how this folder, loaded as above in a Python without tunesmith, "
            "agrees with tunesmith's predictions on the run's validation rows.")
    labels = meta.get("labels")
    from ..plugins.card import export_front_matter

    matter = export_front_matter(predictor, "transformers" if format == "hf" else "onnx",
                                 f"{predictor.run_dir.name}-{format}")
    return f"""{matter}# {task.name} model exported by tunesmith ({format})

- **Base model:** {export_base_line(predictor)}
- **Fine-tuning strategy:** `{meta['strategy']}`{" (adapter merged into the weights)" if member(_strategy(predictor), "merge_model") else ""}
- **Labels:** {", ".join(f"`{x}`" for x in labels) if labels else "n/a"}
- **Exported from:** `{predictor.run_dir}` (trained {meta.get('trained_at')})

## Validation metrics (from training)

{metrics}

## How to load (no tunesmith needed)

{how}

Training options: `{json.dumps(meta['options'])}`
"""


# ---------------------------------------------------------------- the `export` command

from ..manager import hookimpl  # noqa: E402  (pluggy only: cheap)
from ..progress import add_result_options, emit  # noqa: E402


def _arguments(x) -> None:
    x.add_argument("run_dir")
    x.add_argument("--out", required=True, help="folder to write (must not exist unless --overwrite)")
    x.add_argument("--format", choices=("hf", "onnx"), default="hf")
    x.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    x.add_argument("--quantize", choices=("int8",), default=None,
                   help="with --format onnx: int8 weights (onnxruntime dynamic quantization)")
    x.add_argument("--parity-data", default=None, metavar="FILE",
                   help="labelled rows for the parity check (default: the run's validation file)")
    add_result_options(x)


def _run(args, plugins) -> int:
    from ..progress import silence_libraries

    silence_libraries(load=True)   # stdout carries the summary, stderr only tunesmith's own lines
    out = export(args.run_dir, args.out, format=args.format, plugins=plugins, overwrite=args.overwrite,
                 quantize=args.quantize, parity_data=args.parity_data)
    emit(json.dumps(out, indent=2), args.output)
    return 0


@hookimpl
def register_commands(register):
    register("export", help="export a run as a plain Hugging Face folder or ONNX", arguments=_arguments, run=_run)
