"""A task skeleton: fill in each method, then register it in ``__init__.py``.
``tunesmith_ner`` (examples/plugins/tunesmith-ner) and tunesmith's built-in
``text-classification`` are complete examples. Import torch/transformers inside methods."""

from __future__ import annotations

from dataclasses import dataclass, field

from tunesmith import RowError  # noqa: F401  (raise RowError(field, message) for bad rows)


@dataclass
class MyTaskOptions:
    """The task's ``data.*`` options; every field needs a default."""
    text_column: str = field(default="text", metadata={"help": "Column with the input text."})


class MyTask:
    name = "my-task"
    aliases = ()
    options = MyTaskOptions
    main_metric = "accuracy"          # a key of metrics(); picks the best checkpoint
    greater_is_better = True

    def check_batch(self, batch, options, state=None):
        """Raise RowError(field, message, row=i) for a row you cannot use. ``batch`` maps
        column names to lists (a datasets batch); ``state`` is None for training rows, the
        setup() state for validation rows. ``tunesmith.data.each_row(batch, check_row)``
        runs a per-row check and fills in ``row``."""
        raise NotImplementedError

    def setup(self, dataset, options) -> dict:
        """JSON-serialisable state from the training ``datasets.Dataset`` (e.g. the label
        names; ``tunesmith.data.column_values(dataset, column)`` reads one column in batches)."""
        raise NotImplementedError

    def build_model(self, model_path, tokenizer, state, options, load_kwargs):
        """``AutoModelFor....from_pretrained(model_path, ..., **load_kwargs)``."""
        raise NotImplementedError

    def encode_batch(self, batch, tokenizer, state, options, train):
        """A batch of rows (column name → list) → a dict of encoded columns: model inputs,
        ``labels`` and a ``length`` column; tunesmith runs it with ``Dataset.map(batched=True)``."""
        raise NotImplementedError

    def collator(self, tokenizer, options):
        """A data collator (dynamic padding); drop the ``length`` column."""
        raise NotImplementedError

    def metrics(self, state, options, modules):
        """An object with ``add_batch(logits, labels)`` and ``compute() -> dict``."""
        raise NotImplementedError

    def predict(self, model, tokenizer, inputs, state, options, batch_size):
        """One JSON-serialisable answer per input (a row or a plain string); raise
        RowError for an input you cannot use."""
        raise NotImplementedError
