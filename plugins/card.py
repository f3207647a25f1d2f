"""The model card plugin: README.md in the Hugging Face format and curves.png of a run (on_run_end), and export's card.

A card starts with the hub's YAML front matter (``base_model``, ``license``,
``pipeline_tag``, ``library_name``, ``datasets``, ``metrics``, ``model-index`` with the
validation results), so the hub and its tools read a tunesmith run like any other model.
Nothing here knows a task or strategy by name: what a card says about one comes from
the plugin's optional attributes (read with ``getattr`` and a default):

- task ``pipeline_task``: the ``transformers.pipeline`` task that loads the saved model
  (the card then shows a pipeline snippet); ``pipeline_tag``: the hub's task tag when it
  differs or when no pipeline snippet applies (default: ``pipeline_task``);
- task ``metric_definitions``: ``{metric: "what it measures"}``, or a callable taking the
  task state (e.g. how F1 is averaged for single- vs multi-label data);
- task ``example_input``: the input of the card's ``tunesmith.load`` snippet;
- model source ``card_metadata(ref, resolved)``: ``{"base_model": hub id, "license": id}``
  for the base model, when the source knows them (e.g. a packaged model that declares the
  hub model it ships).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import yaml

from tunesmith import hookimpl
from tunesmith.data import describe
from tunesmith.protocols import member
from tunesmith.rundir import CARD, CURVES

LOSS = "loss"


# ------------------------------------------------------------------ what the card is built from

def base_model_info(plugins, reference: str, resolved: str | None) -> dict:
    """``{"base_model": hub id or None, "license": id or None}`` from the model source."""
    info: dict = {}
    try:
        source = plugins.registry.model_source_for(reference)
        meta = member(source, "card_metadata")
        info = dict(meta(reference, resolved) or {}) if meta else {}
    except Exception:   # noqa: BLE001 - the card is informative; a source's bug must not fail a save
        info = {}
    return {"base_model": info.get("base_model"), "license": info.get("license")}


def metric_definitions(task, state) -> dict:
    defs = member(task, "metric_definitions")
    if callable(defs):
        defs = defs(state or {})
    out = dict(defs or {})
    out.setdefault(LOSS, "the model's training objective on the validation rows (lower is better)")
    return out


def pipeline_tag(task) -> str:
    return member(task, "pipeline_tag") or member(task, "pipeline_task") or task.name


def _dataset_entry(spec) -> dict:
    """A split spec as the hub's ``model-index`` dataset: a hub id where there is one."""
    text = str(describe(spec))
    if text.startswith("hub:"):
        hub_id = text[len("hub:"):].split(":", 1)[0]
        return {"name": hub_id, "type": hub_id}
    name = os.path.basename(text.rstrip("/")) or text
    return {"name": name, "type": "json" if name.endswith((".jsonl", ".json")) else "local"}


def hub_datasets(config_data: dict) -> list[str]:
    out = []
    for key in ("train", "validation", "test"):
        text = str(describe(config_data.get(key)))
        if text.startswith("hub:"):
            hub_id = text[len("hub:"):].split(":", 1)[0]
            if hub_id not in out:
                out.append(hub_id)
    return out


def front_matter(*, task, state, strategy: str, base: dict, metrics: dict, library: str,
                 name: str, validation, datasets: list[str]) -> str:
    """The YAML block between ``---`` lines that opens a hub model card."""
    tag = pipeline_tag(task)
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and math.isfinite(v)}
    defs = metric_definitions(task, state)
    dataset = _dataset_entry(validation)
    dataset["split"] = "validation"
    meta: dict = {}
    if base.get("base_model"):
        meta["base_model"] = base["base_model"]
    if base.get("license"):
        meta["license"] = base["license"]
    meta.update({
        "library_name": library,
        "pipeline_tag": tag,
        "tags": ["tunesmith", task.name, strategy],
    })
    if datasets:
        meta["datasets"] = list(datasets)
    meta["metrics"] = [k for k in numbers if k != LOSS]
    meta["model-index"] = [{
        "name": name,
        "results": [{
            "task": {"type": tag, "name": task.name},
            "dataset": dataset,
            "metrics": [{"type": k, "value": float(v), "name": k,
                         **({"description": defs[k]} if k in defs else {})} for k, v in numbers.items()],
        }],
    }]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def read_front_matter(text: str) -> dict:
    """The YAML front matter of a card (``{}`` if it has none)."""
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---\n", 4)
    return yaml.safe_load(text[4:end]) if end > 0 else {}


def metrics_table(metrics: dict, task, state) -> str:
    defs = metric_definitions(task, state)
    rows = ["| metric | value | definition |", "|---|---|---|"]
    for k, v in metrics.items():
        value = f"{v:.4f}" if isinstance(v, float) else str(v)
        rows.append(f"| {k} | {value} | {defs.get(k, '')} |")
    return "\n".join(rows)


def base_line(reference: str, base: dict) -> str:
    if base.get("base_model") and base["base_model"] != reference:
        return f"[`{base['base_model']}`](https://huggingface.co/{base['base_model']}) (as `{reference}`)"
    return f"`{reference}`"


# ------------------------------------------------------------------ the run directory's card

@hookimpl(tryfirst=True)   # before other on_run_end hooks, which may publish the run directory
def on_run_end(run, result):
    """Write README.md and curves.png into the saved run directory."""
    (run.run_dir / CARD).write_text(model_card(run, result, result.model), encoding="utf-8")
    plot_curves(result.history, run.run_dir / CURVES, result.steps)


def model_card(run, result, model=None) -> str:
    """README.md of a run directory."""
    cfg, task = run.config, run.task
    adapter = model is not None and hasattr(model, "peft_config")   # a peft adapter is what model/ holds
    pct = 100 * result.trainable_parameters / max(result.total_parameters, 1)
    auto = (hf_auto_class(model) if model is not None else None) or "AutoModel"
    peft_config = getattr(model, "peft_config", {}).get("default") if adapter else None
    pipeline_task = member(task, "pipeline_task")
    if peft_config is not None and not peft_config.base_model_name_or_path:
        # e.g. bert2bert: the base was assembled in memory, so no name leads peft back to it
        load_hf = ("# the adapter's base model exists only in memory (assembled by tunesmith), so peft\n"
                   "# cannot rebuild it; export a merged, standalone copy first (in this folder):\n"
                   "#   tunesmith export . --format hf --out merged\n"
                   f"from transformers import {auto}\nmodel = {auto}.from_pretrained(\"merged\")")
    elif adapter:
        peft_auto = "AutoPeftModel" + auto[len("AutoModel"):]   # AutoModelForX -> AutoPeftModelForX
        load_hf = f"from peft import {peft_auto}\nmodel = {peft_auto}.from_pretrained(\"model\")"
    elif pipeline_task:
        load_hf = f"from transformers import pipeline\nclf = pipeline(\"{pipeline_task}\", model=\"model\")"
    else:
        load_hf = f"from transformers import {auto}\nmodel = {auto}.from_pretrained(\"model\")"
    example = member(task, "example_input")
    base = base_model_info(run.plugins, cfg.model, run.model_path)
    rows = {name: len(split.dataset) for name, split in run.splits.items() if not split.streaming}
    t = cfg.training
    val_rows = rows.get("validation")
    val_note = f"{val_rows:,} rows" if val_rows is not None else "rows"
    if t.max_eval_samples is not None and val_rows is not None:
        val_note += f": the first {val_rows:,} (`training.max_eval_samples`)"
    train_note = f"{rows['train']:,} rows" if "train" in rows else "streamed"
    if t.max_train_samples is not None:
        train_note += " (`training.max_train_samples`)"
    matter = front_matter(task=task, state=run.state, strategy=run.strategy.name, base=base,
                          metrics=result.metrics, library="peft" if adapter else "transformers",
                          name=run.run_dir.name, validation=cfg.data.validation,
                          datasets=hub_datasets(vars(cfg.data)))
    test = ""
    if result.test_metrics:
        test = f"\n## Test metrics\n\n{metrics_table(result.test_metrics, task, run.state)}\n"
    return f"""{matter}# {task.name} fine-tuned with tunesmith

- **Base model:** {base_line(cfg.model, base)}{f" (licence: {base['license']})" if base.get('license') else ""}
- **Task:** `{task.name}`
- **Strategy:** `{run.strategy.name}` ({result.trainable_parameters:,} of {result.total_parameters:,} parameters trained, {pct:.2f}%)
- **Training data:** `{describe(cfg.data.train)}` ({train_note})
- **Validation data:** `{describe(cfg.data.validation)}` ({val_note})
- **{"Steps" if t.max_steps else "Epochs"} / batch size / learning rate / seed:** {t.max_steps or t.epochs} / {t.batch_size} / {t.learning_rate or run.strategy.default_learning_rate} / {t.seed}
- **Training time:** {result.train_runtime_s:.1f} s
- **Precision:** {precision_line(run)}

## Validation metrics

{metrics_table(result.metrics, task, run.state)}
{test}
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

`tunesmith.json` records the full configuration, data checksums and library versions;
`metrics.json` the metrics per evaluation; `curves.png` the learning curves.
"""


def export_front_matter(predictor, library: str, name: str) -> str:
    """The front matter of an exported folder's card (see :func:`front_matter`)."""
    import json

    manifest = predictor.manifest
    model = manifest.get("model") or {}
    base = base_model_info(predictor.plugins, model.get("reference", ""), model.get("resolved"))
    metrics_path = predictor.run_dir / "metrics.json"
    record = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    config_data = (manifest.get("config") or {}).get("data") or {}
    return front_matter(task=predictor.task, state=predictor.state, strategy=manifest.get("strategy", ""),
                        base=base, metrics=record.get("eval", {}), library=library, name=name,
                        validation=config_data.get("validation"), datasets=hub_datasets(config_data))


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


# ------------------------------------------------------------------ curves.png

def plot_curves(hist: list, path: Path, steps: list | None = None) -> None:
    """Learning curves: the training loss at every logged step and the validation loss
    (left), the validation metrics at every evaluation (right). Each evaluation is a
    marker, so a 1-epoch run (one evaluation) still shows its values, and the y-axis of
    a metric spans at least 0.1 (a metric that hardly moved stays a flat line, not noise
    blown up to the full height)."""
    steps = steps or []
    if not hist and not steps:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:   # plots are an optional extra
        return
    names = [k for k in (hist[-1]["eval"] if hist else {}) if k != LOSS
             and isinstance(hist[-1]["eval"][k], (int, float))]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    if steps:
        ax1.plot([s["step"] for s in steps], [s["loss"] for s in steps], ".-", lw=1, ms=4,
                 label="training loss (per logged step)")
    eval_x = [h.get("step") or 0 for h in hist]
    val_loss = [h["eval"].get(LOSS) for h in hist]
    if any(v is not None for v in val_loss):
        ax1.plot(eval_x, val_loss, "s--", ms=7, label="validation loss")
        for x, v in zip(eval_x, val_loss):
            if v is not None:
                ax1.annotate(f"{v:.3f}", (x, v), textcoords="offset points", xytext=(4, 6), fontsize=8)
    _pad(ax1, [s["loss"] for s in steps] + [v for v in val_loss if v is not None], 0.05)
    ax1.set_xlabel("step"), ax1.set_title("loss"), ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    values = []
    for name in names:
        ys = [h["eval"].get(name) for h in hist]
        ax2.plot(eval_x, ys, "o-", ms=7, label=name)
        for x, v in zip(eval_x, ys):
            if isinstance(v, (int, float)):
                ax2.annotate(f"{v:.3f}", (x, v), textcoords="offset points", xytext=(4, 6), fontsize=8)
        values += [v for v in ys if isinstance(v, (int, float))]
    _pad(ax2, values, 0.1)
    if eval_x:
        lo, hi = min(eval_x), max(eval_x)
        ax2.set_xlim(lo - max(1, 0.1 * (hi - lo + 1)), hi + max(1, 0.1 * (hi - lo + 1)))
    ax2.set_xlabel("step"), ax2.set_title("validation metrics (per evaluation)"), ax2.grid(alpha=0.3)
    if names:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _pad(ax, values, span: float) -> None:
    """y-limits around ``values`` spanning at least ``span``."""
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return
    lo, hi = min(values), max(values)
    if hi - lo < span:
        mid = (hi + lo) / 2
        lo, hi = mid - span / 2, mid + span / 2
    margin = 0.08 * (hi - lo)
    ax.set_ylim(lo - margin, hi + margin)
