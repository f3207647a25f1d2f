"""Task ``text-classification``: single-label (binary or multi-class) and multi-label.

Labels may be ints or strings; their names end up in the model config's ``id2label``,
so an exported model reports real label names. Multi-label rows hold a list of labels
and are trained with a sigmoid per label (BCE), predicted with ``threshold``.
"""

from __future__ import annotations

import itertools
import typing
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith import RowError, hookimpl
from tunesmith.data import column_values, each_row, require_text

METRICS_DIR = Path(__file__).parent / "metrics"


@dataclass
class ClassificationOptions:
    text_column: str = field(default="text", metadata={"help": "Column with the text."})
    text_pair_column: typing.Optional[str] = field(
        default=None, metadata={"help": "Optional second text (sentence-pair tasks such as NLI)."})
    label_column: str = field(default="label", metadata={"help": "Column with the label (or list of labels)."})
    label_names: typing.Optional[list[str]] = field(
        default=None, metadata={"help": "Names for integer labels 0..N-1, e.g. [negative, positive]."})
    multi_label: typing.Optional[bool] = field(
        default=None, metadata={"help": "Multi-label; default: detected from list-valued labels."})
    threshold: float = field(default=0.5, metadata={"help": "Multi-label decision threshold on sigmoid scores."})
    max_length: int = field(default=256, metadata={"help": "Truncate inputs to this many tokens."})

    def check(self, problems: list[str]) -> None:
        if not 0 < self.threshold < 1:
            problems.append(f"data.threshold must be in (0, 1), got {self.threshold!r}")
        if self.max_length < 2:
            problems.append(f"data.max_length must be >= 2, got {self.max_length!r}")
        if self.label_names is not None and len(set(self.label_names)) != len(self.label_names):
            problems.append("data.label_names has duplicates")


def _listing(values) -> str:
    return ", ".join(map(repr, values))


def _is_label(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


class TextClassification:
    name = "text-classification"
    aliases = ("classification", "sentiment-analysis")
    options = ClassificationOptions
    greater_is_better = True

    @property
    def main_metric(self) -> str:   # the runner asks the state-aware variant below
        return "accuracy"

    def main_metric_for(self, state: dict) -> str:
        return "f1_micro" if state.get("multi_label") else "accuracy"

    # -- data ---------------------------------------------------------------
    def check_texts(self, row: dict, options: ClassificationOptions) -> None:
        for col in (options.text_column, options.text_pair_column):
            if col is None:
                continue
            require_text(row, col)

    def check_batch(self, batch: dict, options: ClassificationOptions, state: dict | None = None) -> None:
        # column by column first (the common, clean case: a few passes of C-level checks);
        # row by row only when something is off, for the precise message
        if not self._clean(batch, options, state):
            each_row(batch, lambda row: self.check_row(row, options, state))

    def _clean(self, batch: dict, options: ClassificationOptions, state: dict | None) -> bool:
        """True when every row of the batch is usable as a single-label row."""
        for col in (options.text_column, options.text_pair_column):
            if col is None:
                continue
            values = batch.get(col)
            if values is None or not all(type(v) is str and v and not v.isspace() for v in values):
                return False
        labels = batch.get(options.label_column)
        multi = options.multi_label if state is None else state["multi_label"]
        if labels is None or multi:
            return False
        kinds = set(map(type, labels))
        if kinds not in ({int}, {str}):
            return False
        present = set(labels)
        if state is not None:
            known = set(range(len(state["labels"]))) if state.get("int_labels") else set(state["labels"])
            if not present <= known:
                return False
        if options.label_names is not None and not present <= set(range(len(options.label_names))):
            return False
        return True

    def check_row(self, row: dict, options: ClassificationOptions, state: dict | None = None) -> None:
        self.check_texts(row, options)
        col = options.label_column
        if col not in row:
            raise RowError(col, f"missing column {col!r} (columns: {', '.join(map(repr, row))})")
        value = row[col]
        multi = options.multi_label if state is None else state["multi_label"]
        if isinstance(value, list):
            if multi is False:
                raise RowError(col, f"a list of labels {value!r}, but data.multi_label is false")
            if not all(_is_label(v) for v in value):
                raise RowError(col, f"labels must be ints or strings, got {value!r}")
        elif not _is_label(value):
            raise RowError(col, f"label must be an int or a string, got {type(value).__name__} {value!r}")
        elif multi:
            raise RowError(col, f"multi-label data needs a list of labels, got {value!r}")
        if state is not None:
            known = set(state["labels"]) if not state.get("int_labels") else set(range(len(state["labels"])))
            for v in (value if isinstance(value, list) else [value]):
                if v not in known:
                    raise RowError(col, f"label {v!r} does not occur in the training data "
                                        f"(known: {_listing(sorted(known, key=str))})")
        if options.label_names is not None:
            for v in (value if isinstance(value, list) else [value]):
                if not isinstance(v, int) or not 0 <= v < len(options.label_names):
                    raise RowError(col, f"label {v!r} is not an index into data.label_names "
                                        f"(0..{len(options.label_names) - 1})")

    def setup(self, dataset, options: ClassificationOptions) -> dict:
        """The label set, from one pass over the label column (batches, not rows as dicts)."""
        col = options.label_column
        multi = options.multi_label
        values, rows = set(), 0
        for v in column_values(dataset, col):
            rows += 1
            if multi is None:
                multi = isinstance(v, list)
            if isinstance(v, list) != multi:
                raise RowError(col, "mixes single labels and lists of labels")
            values.update(v if multi else [v])
        kinds = {type(v) for v in values}
        if len(kinds) > 1:
            raise RowError(col, "mixes integer and string labels")
        int_labels = kinds == {int}
        if int_labels and min(values) < 0:
            raise RowError(col, f"integer labels must be >= 0, got {min(values)}")
        if options.label_names is not None:
            count = len(options.label_names)
        else:
            count = max(values) + 1 if int_labels else len(values)
        if count < 2 and not multi:
            raise RowError(col, f"need at least 2 classes, the training data has {count}")
        if not multi and (int_labels or options.label_names is not None) and len(values) < count:
            # the head gets one output per class: each must occur, or one stray label (50000,
            # 10**9) silently builds a huge head that never sees most of its classes
            missing = list(itertools.islice((i for i in range(count) if i not in values), 5))
            raise RowError(col, f"{count - len(values):,} of the {count:,} classes never occur in the "
                                f"{rows:,} training rows (e.g. {_listing(missing)}); "
                                "integer labels must be 0..N-1 with every class present"
                                + ("" if options.label_names is None else
                                   ", and every entry of data.label_names must occur"))
        if options.label_names is not None:
            names = list(options.label_names)
        elif int_labels:
            names = [str(i) for i in range(count)]
        else:
            names = sorted(values)
        return {"labels": names, "int_labels": int_labels or options.label_names is not None,
                "multi_label": bool(multi)}

    def _label_ids(self, value, state) -> list[int]:
        values = value if isinstance(value, list) else [value]
        if state["int_labels"]:
            return [int(v) for v in values]
        index = {name: i for i, name in enumerate(state["labels"])}
        return [index[v] for v in values]

    # -- model --------------------------------------------------------------
    def build_model(self, model_path, tokenizer, state, options, load_kwargs):
        from transformers import AutoModelForSequenceClassification

        names = state["labels"]
        model = AutoModelForSequenceClassification.from_pretrained(
            model_path, num_labels=len(names),
            id2label={i: n for i, n in enumerate(names)}, label2id={n: i for i, n in enumerate(names)},
            problem_type="multi_label_classification" if state["multi_label"] else "single_label_classification",
            **load_kwargs)
        if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
            model.config.pad_token_id = tokenizer.pad_token_id   # decoder LMs pool on the last non-pad token
        from tunesmith.plugins.frozen.pooling import restore_pooling

        return restore_pooling(model)   # a model trained with mean pooling (strategy frozen) keeps it

    def encode_batch(self, batch, tokenizer, state, options, train):
        texts = batch[options.text_column]
        pairs = batch[options.text_pair_column] if options.text_pair_column else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=options.max_length)
        columns = dict(enc)
        columns["length"] = [len(ids) for ids in enc["input_ids"]]
        if options.label_column in batch:
            n = len(state["labels"])
            labels = []
            for value in batch[options.label_column]:
                ids = self._label_ids(value, state)
                labels.append([1.0 if i in ids else 0.0 for i in range(n)] if state["multi_label"] else ids[0])
            columns["labels"] = labels
        return columns

    def collator(self, tokenizer, options):
        from transformers import DataCollatorWithPadding

        return _DropLength(DataCollatorWithPadding(tokenizer))

    # -- metrics ------------------------------------------------------------
    def metrics(self, state, options, modules):
        return _Metrics(state, options, modules)

    # -- inference ----------------------------------------------------------
    def input_text(self, item, options) -> tuple[str, str | None]:
        if isinstance(item, str):
            return item, None
        if not isinstance(item, dict):
            raise RowError(None, f"expected a text or an object, got {type(item).__name__}")
        self.check_texts(item, options)
        return item[options.text_column], (item[options.text_pair_column] if options.text_pair_column else None)

    def check_input(self, item, options) -> None:
        """Raise RowError for an input ``predict`` cannot use (checked per line / request)."""
        self.input_text(item, options)

    def truncated(self, inputs, tokenizer, options) -> list[bool]:
        """Which inputs are longer than ``max_length`` tokens (cut, as in training)."""
        pairs = [self.input_text(item, options) for item in inputs]
        second = [p[1] for p in pairs] if options.text_pair_column else None
        enc = tokenizer([p[0] for p in pairs], second, truncation=False)
        return [len(ids) > options.max_length for ids in enc["input_ids"]]

    # what ``tunesmith export`` needs: the transformers pipeline task of an exported
    # model, and that its forward maps input ids to logits (exportable to ONNX)
    pipeline_task = "text-classification"
    onnx_output = "logits"
    parity_check = "labels"   # export: the pipeline's label scores compared row by row

    def metric_definitions(self, state: dict) -> dict:
        """What each metric measures (model cards); F1's averaging depends on the data."""
        if state.get("multi_label"):
            return {"accuracy": "exact-match ratio: rows whose whole label set is predicted exactly",
                    "f1_micro": "F1 over all (row, label) decisions pooled (micro average), threshold "
                                "on the sigmoid scores",
                    "f1_macro": "F1 of each label, averaged with equal weight per label (macro average)"}
        return {"accuracy": "share of rows whose predicted label is the reference label",
                "f1": "F1 of each class (one-vs-rest), averaged with equal weight per class "
                      "(macro average; sklearn average='macro')"}

    def predict(self, model, tokenizer, inputs, state, options, batch_size):
        import torch

        from tunesmith.plugins import in_batches

        names = state["labels"]
        device = next(model.parameters()).device

        def run(pairs):
            second = [p[1] for p in pairs] if options.text_pair_column else None
            enc = tokenizer([p[0] for p in pairs], second, truncation=True, max_length=options.max_length,
                            padding=True, return_tensors="pt").to(device)
            logits = model(**enc).logits.float()
            if state["multi_label"]:
                return [{"labels": [n for n, p in zip(names, row) if p >= options.threshold],
                         "scores": dict(zip(names, row))} for row in torch.sigmoid(logits).tolist()]
            probs = torch.softmax(logits, dim=-1)
            return [{"label": names[int(k)], "score": float(probs[j, k])}
                    for j, k in enumerate(probs.argmax(dim=-1))]

        pairs = [self.input_text(item, options) for item in inputs]
        return in_batches(model, pairs, batch_size, run, length=lambda p: len(p[0]) + len(p[1] or ""))


def label_metric_info(config_name: str, description: str):
    """The ``evaluate.MetricInfo`` of the label metrics (metrics/accuracy, metrics/f1): an int
    label per row, or with config "multilabel" a 0/1 indicator list per row."""
    import datasets
    import evaluate

    label = datasets.Value("int32")
    kind = datasets.Sequence(label) if config_name == "multilabel" else label
    return evaluate.MetricInfo(description=description, citation="", inputs_description="predictions, references",
                               features=datasets.Features({"predictions": kind, "references": kind}))


class _DropLength:
    """Dynamic padding; the ``length`` column only serves length-grouped sampling."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, features):
        return self.inner([{k: v for k, v in f.items() if k != "length"} for f in features])


class _Metrics:
    """Streams batches into local ``evaluate`` modules (no logits kept in memory)."""

    def __init__(self, state, options, modules):
        import evaluate   # ~5 s to import, so only when metrics actually run

        config = "multilabel" if state["multi_label"] else None
        # every metric registered for this task: our accuracy and F1, plus other plugins'
        self.combined = evaluate.combine([evaluate.load(str(path), config) for path in modules.values()])
        self.multi, self.threshold = state["multi_label"], options.threshold

    def add_batch(self, logits, labels):
        import torch

        logits = torch.as_tensor(logits).float()
        labels = torch.as_tensor(labels)
        if self.multi:
            preds = (torch.sigmoid(logits) >= self.threshold).int().tolist()
            refs = labels.int().tolist()
        else:
            preds = logits.argmax(dim=-1).tolist()
            refs = labels.tolist()
        self.combined.add_batch(predictions=preds, references=refs)

    def compute(self) -> dict:
        return self.combined.compute()


@hookimpl(trylast=True)
def register_tasks(register):
    register(TextClassification())


@hookimpl(trylast=True)
def register_metrics(register):
    register("text-classification", "accuracy", METRICS_DIR / "accuracy")
    register("text-classification", "f1", METRICS_DIR / "f1")
