"""The plugin contract: every member a task, a strategy, an options class or a model or data source may define.

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

import ast
import difflib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


# The required members; what each is for, and every optional member: MEMBERS below.

@runtime_checkable
class Task(Protocol):
    name: str
    options: type             # dataclass of the task's data.* options
    main_metric: str
    greater_is_better: bool

    def check_batch(self, batch: dict, options: Any, state: dict | None = None) -> None: ...
    def setup(self, dataset: Any, options: Any) -> dict: ...
    def build_model(self, model_path: str, tokenizer: Any, state: dict, options: Any, load_kwargs: dict) -> Any: ...
    def encode_batch(self, batch: dict, tokenizer: Any, state: dict, options: Any, train: bool) -> dict: ...
    def collator(self, tokenizer: Any, options: Any) -> Any: ...
    def metrics(self, state: dict, options: Any, modules: dict) -> Any: ...
    def predict(self, model: Any, tokenizer: Any, inputs: list, state: dict, options: Any,
                batch_size: int) -> list: ...


@runtime_checkable
class Strategy(Protocol):
    name: str
    options: type                  # dataclass of strategy.* options
    default_learning_rate: float

    def apply(self, model: Any, task: Task, options: Any) -> Any: ...


class TrainingSwap(Protocol):
    """What a strategy's ``swap_for_training`` returns: the Trainer trains ``model`` on
    ``datasets`` ("train", "validation") with ``collator``, evaluates the test split
    through ``encode(dataset)``, and saves and returns what ``restore()`` gives back
    (the model ``apply`` returned, holding the trained weights)."""

    model: Any
    datasets: dict
    collator: Any
    seconds: float   # spent preparing (e.g. computing features), counted into train_runtime_s

    def encode(self, dataset: Any) -> Any: ...
    def restore(self) -> Any: ...


@runtime_checkable
class ModelSource(Protocol):
    name: str
    description: str

    def matches(self, ref: str) -> bool: ...
    def resolve(self, ref: str) -> str: ...


@runtime_checkable
class DataSource(Protocol):
    name: str
    description: str

    def matches(self, spec: Any) -> bool: ...
    def load(self, spec: Any, name: str, streaming: bool) -> Any: ...


REQUIRED = object()   # the default of a member every plugin object of its kind must have


@dataclass(frozen=True)
class Member:
    kind: str        # "task", "strategy", "options" (a task's or a strategy's options class),
                     # "model source", "data source"
    name: str
    default: Any     # what the core uses when the object lacks it (REQUIRED: no default)
    purpose: str     # one line; the table in docs/plugins.md shows it


# kind | name | default (REQUIRED, or a Python literal) | purpose ($NAME etc. expand below)
_TABLE = """
task | name | REQUIRED | `task:` in the config; $NAME
task | options | REQUIRED | data.*: $OPTIONS
task | main_metric | REQUIRED | the metrics key that picks the best checkpoint
task | greater_is_better | REQUIRED | whether a larger main metric is better
task | check_batch | REQUIRED | `check_batch(batch, options, state=None)`: raise RowError(field, message, row=i) for an unusable row of a datasets batch
task | setup | REQUIRED | `setup(dataset, options) -> dict`: JSON state (label names, ...) from the training Dataset, saved in the manifest
task | build_model | REQUIRED | `build_model(model_path, tokenizer, state, options, load_kwargs)`: backbone + task head, from_pretrained(model_path, **load_kwargs)
task | encode_batch | REQUIRED | `encode_batch(batch, tokenizer, state, options, train[, indices]) -> dict`: encoded columns (model inputs, labels, length)
task | collator | REQUIRED | `collator(tokenizer, options)`: dynamic padding
task | metrics | REQUIRED | `metrics(state, options, modules)`: an accumulator with add_batch(logits, labels) and compute() -> dict
task | predict | REQUIRED | `predict(model, tokenizer, inputs, state, options, batch_size)`: one JSON answer per input; RowError for a bad input
task | aliases | () | more names for `task:` (unique across plugins)
task | main_metric_for | None | `main_metric_for(state) -> str`: the main metric when it depends on the data (multi-label F1)
task | check_input | None | `check_input(item, options)`: raise RowError for an input `predict` cannot use, so predict names the line and serve answers 422
task | truncated | None | `truncated(inputs, tokenizer, options) -> list[bool]`: which inputs are cut to the model's length (serve reports them)
task | evaluate | None | `evaluate(model, tokenizer, dataset, state, options, batch_size, modules) -> dict`: metrics on a labelled Dataset when streaming logits does not fit (generated text, QA windows)
task | trainer_class | None | `trainer_class(options, modules) -> type`: the transformers.Trainer subclass to train with; its evaluate() returns eval_<main_metric>
task | strategy_defaults | None | `strategy_defaults(strategy) -> dict`: the task's own defaults for a strategy, as dotted config keys
task | head_module_names | None | `head_module_names(model, adapter) -> list[str]`: the modules trained by frozen/partial and saved with an adapter; default: every module outside model.base_model
task | layer_stack | None | `layer_stack(model) -> (name, ModuleList)`: the blocks whose last N `partial` trains
task | lora_target_modules | None | `lora_target_modules(model) -> list | str | None`: LoRA targets when strategy.target_modules is unset
task | mixed_precision_unsafe | None | why the task loses accuracy in bf16/fp16: `training.precision: auto` then trains in float32
task | example_input | 'an example input' | one input as `predict` takes it, for model cards
task | pipeline_task | None | the transformers.pipeline task of an exported model
task | pipeline_tag | None | the hub's task tag in model cards (front matter, model-index) when it differs from pipeline_task; default: pipeline_task, else the task's name
task | metric_definitions | None | `{metric: what it measures}`, or a method taking the task state: written into model cards (e.g. how F1 is averaged)
task | onnx_output | None | the model output ONNX export returns (e.g. logits); None: no ONNX
task | parity_check | None | how export proves an exported folder predicts what the run does: labels (a pipeline of pipeline_task), spans (start/end logits) or generation (generate() text under output_key); None: no export
task | output_key | None | generation tasks: the key of the generated text in each answer
strategy | name | REQUIRED | `strategy.name` in the config; $NAME
strategy | options | REQUIRED | strategy.*: $OPTIONS
strategy | default_learning_rate | REQUIRED | training.learning_rate when the config leaves it unset
strategy | apply | REQUIRED | `apply(model, task, options) -> model`: freeze parameters or wrap the model (e.g. with peft)
strategy | description | '' | $DESCRIPTION
strategy | default | False | the strategy a config without strategy.name trains with (one registered strategy sets it)
strategy | mixed_precision_unsafe | None | why the strategy loses accuracy in bf16/fp16
strategy | save_model | None | `save_model(model, folder, base)`: write the trained model into folder (base: the resolved base model); default: model.save_pretrained(folder)
strategy | load_model | None | `load_model(model_dir, build) -> model`: reload a saved model; build(path=None) builds the task's model from path (default: the run's base model); default: build(model_dir)
strategy | swap_for_training | None | `swap_for_training(model, datasets, collator, run) -> TrainingSwap | None`: what the Trainer trains instead (frozen: a head on cached features); restore() gives the model to save
strategy | merge_model | None | `merge_model(model) -> model`: the plain transformers model for export (adapters merged); default: the model itself
options | check | None | `check(problems)`: append a message per invalid option value
options | uses_generation | False | class attribute: the options receive generation.* as options.generation
options | max_length | None | longest input in tokens (serve and export cut inputs there)
options | max_source_length | None | generation tasks: longest source in tokens
model source | name | REQUIRED | $NAME
model source | description | REQUIRED | $DESCRIPTION
model source | matches | REQUIRED | `matches(ref) -> bool`: whether it understands the model reference
model source | resolve | REQUIRED | `resolve(ref) -> str`: a folder or hub id from_pretrained loads; raise ModelError if not
model source | card_metadata | None | `card_metadata(ref, resolved) -> dict`: base_model (a hub id) and license for model cards
data source | name | REQUIRED | $NAME
data source | description | REQUIRED | $DESCRIPTION
data source | matches | REQUIRED | `matches(spec) -> bool`: whether it loads this data.train / validation / test value (a path, a mapping, a Python object)
data source | load | REQUIRED | `load(spec, name, streaming) -> tunesmith.data.Split`: the split as a datasets Dataset (IterableDataset when streaming); raise DataError if not
data source | locate | None | `locate(split, index) -> (file, line, row)`: where the 0-based row index of the split is, for error messages; default: the 1-based row of split.where
data source | raw_rows | None | `raw_rows(split, path) -> iterator of (line, row)`: a file's rows as Python parses them, to name the exact line when Arrow unified a column's types
data source | decode_error | None | `decode_error(split, exc) -> DataError`: the file and line of the invalid UTF-8 (UnicodeDecodeError exc) met while checking the rows
"""
_TEXT = {"$NAME": "the name configs use (a lower-case slug), unique across plugins",
         "$OPTIONS": "the dataclass of its options (every field with a default), validated with the config",
         "$DESCRIPTION": "one line shown by `tunesmith plugins`"}


def _member(line: str) -> Member:
    kind, name, default, purpose = line.split(" | ", 3)
    for key, text in _TEXT.items():
        purpose = purpose.replace(key, text)
    return Member(kind, name, REQUIRED if default == "REQUIRED" else ast.literal_eval(default), purpose)


MEMBERS: tuple[Member, ...] = tuple(_member(line) for line in _TABLE.strip().splitlines())

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
