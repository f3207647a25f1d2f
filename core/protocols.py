"""The plugin contract: every member a task, a strategy, an options class or a model source may define.

A plugin object only needs these attributes and methods; it does not import or
inherit from anything in tunesmith. Heavy libraries (torch, transformers) are
imported inside the methods, so listing plugins stays fast.

The Protocols below list the required members. :data:`MEMBERS` lists every member,
required or optional, with its default and purpose; the core reads an optional one
only through :func:`member`, so a member the core uses is always declared here, and
registration (tunesmith.registry) refuses an attribute that is a near-miss of one
(``check_inputs`` for ``check_input``). docs/plugins.md shows :data:`MEMBERS` as a
table, and tests/test_docs.py keeps the two equal.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Task(Protocol):
    name: str                 # e.g. "text-classification"
    options: type             # dataclass of the task's data.* options
    main_metric: str          # key in metrics.json "eval" that picks the best checkpoint
    greater_is_better: bool

    def check_batch(self, batch: dict, options: Any, state: dict | None = None) -> None:
        """Raise ``tunesmith.RowError(field, message, row=i)`` for a row the task cannot use.
        ``batch`` maps column names to lists (a ``datasets`` batch; a value a row lacks is
        None). ``state`` is None for training rows, the task's state (e.g. the label set)
        for validation and test rows. ``tunesmith.data.each_row`` runs a per-row check."""

    def setup(self, dataset: Any, options: Any) -> dict:
        """Derive JSON-serialisable state (e.g. label names) from the training
        ``datasets.Dataset`` (in a streaming run: its first rows)."""

    def build_model(self, model_path: str, tokenizer: Any, state: dict, options: Any,
                    load_kwargs: dict) -> Any:
        """Backbone + task head, loaded with ``from_pretrained(model_path, **load_kwargs)``."""

    def encode_batch(self, batch: dict, tokenizer: Any, state: dict, options: Any, train: bool) -> dict:
        """A batch (column → list) → encoded columns (model inputs, ``labels``, and a
        ``length`` column for grouping). The core runs it with ``Dataset.map(batched=True)``;
        it may take a keyword ``indices`` (the rows' positions in their split)."""

    def collator(self, tokenizer: Any, options: Any) -> Any:
        """The data collator (dynamic padding)."""

    def metrics(self, state: dict, options: Any, modules: dict) -> Any:
        """An accumulator with ``add_batch(logits, labels)`` and ``compute() -> dict``;
        ``modules`` maps every metric registered for the task (register_metrics)
        to its local ``evaluate`` module folder."""

    def predict(self, model: Any, tokenizer: Any, inputs: list, state: dict, options: Any,
                batch_size: int) -> list:
        """Inputs (rows or plain strings) → one JSON-serialisable answer per input."""


@runtime_checkable
class Strategy(Protocol):
    name: str                      # e.g. "lora"
    options: type                  # dataclass of strategy.* options
    default_learning_rate: float   # used when training.learning_rate is not set

    def apply(self, model: Any, task: Task, options: Any) -> Any:
        """Freeze parameters or wrap the model (e.g. with peft); return the model to train."""

    # optional, default absent (the Trainer trains the model on the task's data as built):
    #   swap_for_training(model, datasets, collator, run) -> TrainingSwap | None
    # may hand the Trainer something else to train (frozen: the head on cached features)


class TrainingSwap(Protocol):
    """What a strategy's ``swap_for_training`` returns: the Trainer trains ``model`` on
    ``datasets`` ("train", "validation") with ``collator``, evaluates the test split
    through ``encode``, and saves and returns what ``restore()`` gives back."""

    model: Any
    datasets: dict
    collator: Any
    seconds: float   # spent preparing (e.g. computing features), counted into train_runtime_s

    def encode(self, dataset: Any) -> Any:
        """Another encoded split (the test set) in the form ``model`` takes."""

    def restore(self) -> Any:
        """The model to save: the one ``apply`` returned, holding the trained weights."""


@runtime_checkable
class ModelSource(Protocol):
    name: str
    description: str

    def matches(self, ref: str) -> bool:
        """True when this source understands the reference."""

    def resolve(self, ref: str) -> str:
        """A folder (or hub id) ``from_pretrained`` can load; raise ModelError if not."""


REQUIRED = object()   # the default of a member every plugin object of its kind must have


@dataclass(frozen=True)
class Member:
    kind: str        # "task", "strategy", "options" (a task's or a strategy's options class), "model source"
    name: str
    default: Any     # what the core uses when the object lacks it (REQUIRED: no default)
    purpose: str     # one line; the table in docs/plugins.md shows it


_NAME = "the name configs use (a lower-case slug), unique across plugins"
_OPTIONS = "the dataclass of its options (every field with a default), validated with the config"
_DESCRIPTION = "one line shown by `tunesmith plugins`"

MEMBERS: tuple[Member, ...] = (
    Member("task", "name", REQUIRED, "`task:` in the config; " + _NAME),
    Member("task", "options", REQUIRED, "data.*: " + _OPTIONS),
    Member("task", "main_metric", REQUIRED, "the metrics key that picks the best checkpoint"),
    Member("task", "greater_is_better", REQUIRED, "whether a larger main metric is better"),
    Member("task", "check_batch", REQUIRED, "`check_batch(batch, options, state=None)`: raise RowError(field, "
                                            "message, row=i) for an unusable row of a datasets batch"),
    Member("task", "setup", REQUIRED, "`setup(dataset, options) -> dict`: JSON state (label names, ...) from "
                                      "the training Dataset, saved in the manifest"),
    Member("task", "build_model", REQUIRED, "`build_model(model_path, tokenizer, state, options, load_kwargs)`: "
                                            "backbone + task head, from_pretrained(model_path, **load_kwargs)"),
    Member("task", "encode_batch", REQUIRED, "`encode_batch(batch, tokenizer, state, options, train[, indices])"
                                             " -> dict`: encoded columns (model inputs, labels, length)"),
    Member("task", "collator", REQUIRED, "`collator(tokenizer, options)`: dynamic padding"),
    Member("task", "metrics", REQUIRED, "`metrics(state, options, modules)`: an accumulator with "
                                        "add_batch(logits, labels) and compute() -> dict"),
    Member("task", "predict", REQUIRED, "`predict(model, tokenizer, inputs, state, options, batch_size)`: "
                                        "one JSON answer per input; RowError for a bad input"),
    Member("task", "aliases", (), "more names for `task:` (unique across plugins)"),
    Member("task", "main_metric_for", None, "`main_metric_for(state) -> str`: the main metric when it depends "
                                            "on the data (multi-label F1)"),
    Member("task", "check_input", None, "`check_input(item, options)`: raise RowError for an input `predict` "
                                        "cannot use, so predict names the line and serve answers 422"),
    Member("task", "truncated", None, "`truncated(inputs, tokenizer, options) -> list[bool]`: which inputs "
                                      "are cut to the model's length (serve reports them)"),
    Member("task", "evaluate", None, "`evaluate(model, tokenizer, dataset, state, options, batch_size, "
                                     "modules) -> dict`: metrics on a labelled Dataset when streaming "
                                     "logits does not fit (generated text, QA windows)"),
    Member("task", "trainer_class", None, "`trainer_class(options, modules) -> type`: the transformers.Trainer "
                                          "subclass to train with; its evaluate() returns eval_<main_metric>"),
    Member("task", "strategy_defaults", None, "`strategy_defaults(strategy) -> dict`: the task's own defaults "
                                              "for a strategy, as dotted config keys"),
    Member("task", "head_module_names", None, "`head_module_names(model, adapter) -> list[str]`: the modules "
                                              "trained by frozen/partial and saved with an adapter; default: "
                                              "every module outside model.base_model"),
    Member("task", "layer_stack", None, "`layer_stack(model) -> (name, ModuleList)`: the blocks whose last N "
                                        "`partial` trains"),
    Member("task", "lora_target_modules", None, "`lora_target_modules(model) -> list | str | None`: LoRA "
                                                "targets when strategy.target_modules is unset"),
    Member("task", "mixed_precision_unsafe", None, "why the task loses accuracy in bf16/fp16: "
                                                   "`training.precision: auto` then trains in float32"),
    Member("task", "example_input", "an example input", "one input as `predict` takes it, for model cards"),
    Member("task", "pipeline_task", None, "the transformers.pipeline task of an exported model"),
    Member("task", "pipeline_tag", None, "the hub's task tag in model cards (front matter, model-index) when it "
           "differs from pipeline_task; default: pipeline_task, else the task's name"),
    Member("task", "metric_definitions", None, "`{metric: what it measures}`, or a method taking the task state: "
           "written into model cards (e.g. how F1 is averaged)"),
    Member("task", "onnx_output", None, "the model output ONNX export returns (e.g. logits); None: no ONNX"),
    Member("task", "parity_check", None, "how export proves an exported folder predicts what the run does: "
                                         "labels (a pipeline of pipeline_task), spans (start/end logits) or "
                                         "generation (generate() text under output_key); None: no export"),
    Member("task", "output_key", None, "generation tasks: the key of the generated text in each answer"),
    Member("strategy", "name", REQUIRED, "`strategy.name` in the config; " + _NAME),
    Member("strategy", "options", REQUIRED, "strategy.*: " + _OPTIONS),
    Member("strategy", "default_learning_rate", REQUIRED, "training.learning_rate when the config leaves it unset"),
    Member("strategy", "apply", REQUIRED, "`apply(model, task, options) -> model`: freeze parameters or wrap "
                                          "the model (e.g. with peft)"),
    Member("strategy", "description", "", _DESCRIPTION),
    Member("strategy", "default", False, "the strategy a config without strategy.name trains with "
                                         "(one registered strategy sets it)"),
    Member("strategy", "mixed_precision_unsafe", None, "why the strategy loses accuracy in bf16/fp16"),
    Member("strategy", "save_model", None, "`save_model(model, folder, base)`: write the trained model into "
                                           "folder (base: the resolved base model); default: "
                                           "model.save_pretrained(folder)"),
    Member("strategy", "load_model", None, "`load_model(model_dir, build) -> model`: reload a saved model; "
                                           "build(path=None) builds the task's model from path (default: the "
                                           "run's base model); default: build(model_dir)"),
    Member("strategy", "swap_for_training", None, "`swap_for_training(model, datasets, collator, run) -> "
           "TrainingSwap | None`: what the Trainer trains instead (frozen: a head on cached features); "
           "restore() gives the model to save"),
    Member("strategy", "merge_model", None, "`merge_model(model) -> model`: the plain transformers model for "
                                            "export (adapters merged); default: the model itself"),
    Member("options", "check", None, "`check(problems)`: append a message per invalid option value"),
    Member("options", "uses_generation", False, "class attribute: the options receive generation.* as "
                                                "options.generation"),
    Member("options", "max_length", None, "longest input in tokens (serve and export cut inputs there)"),
    Member("options", "max_source_length", None, "generation tasks: longest source in tokens"),
    Member("model source", "name", REQUIRED, _NAME),
    Member("model source", "description", REQUIRED, _DESCRIPTION),
    Member("model source", "matches", REQUIRED, "`matches(ref) -> bool`: whether it understands the model "
                                                "reference"),
    Member("model source", "resolve", REQUIRED, "`resolve(ref) -> str`: a folder or hub id from_pretrained "
                                                "loads; raise ModelError if not"),
    Member("model source", "card_metadata", None, "`card_metadata(ref, resolved) -> dict`: base_model (a hub id) "
           "and license for model cards"),
)

_DEFAULTS: dict[str, Any] = {}
for _m in MEMBERS:
    if _m.default is not REQUIRED:
        assert _DEFAULTS.get(_m.name, _m.default) == _m.default, f"two defaults for member {_m.name}"
        _DEFAULTS[_m.name] = _m.default


def member(obj: Any, name: str) -> Any:
    """``obj.name``, or the declared default of optional member ``name`` when ``obj``
    lacks it. Only declared members can be read this way (KeyError otherwise)."""
    if name not in _DEFAULTS:
        raise KeyError(f"{name!r} is not an optional member declared in tunesmith.protocols.MEMBERS")
    return getattr(obj, name, _DEFAULTS[name])


def declared(kind: str) -> list[str]:
    """Names of every member declared for ``kind``."""
    return [m.name for m in MEMBERS if m.kind == kind]


def near_miss(obj: Any, kind: str) -> tuple[str, str] | None:
    """``(attribute, declared member)`` for a public attribute of ``obj`` that is not a
    member of ``kind`` but looks like a misspelling of one (``check_inputs``), else None."""
    known = declared(kind)
    for attr in sorted(a for a in dir(obj) if not a.startswith("_")):
        if attr in known:
            continue
        close = difflib.get_close_matches(attr, known, n=1, cutoff=0.85)
        if close:
            return attr, close[0]
    return None
