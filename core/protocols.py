"""What a task, a strategy and a model source look like (structural, not base classes).

A plugin object only needs these attributes and methods; it does not import or
inherit from anything in tunesmith. Heavy libraries (torch, transformers) are
imported inside the methods, so listing plugins stays fast.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Task(Protocol):
    name: str                 # e.g. "text-classification"
    aliases: tuple            # e.g. ("classification",)
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
