"""Task ``token-classification``: one BIO tag per word (named-entity recognition).

Training rows hold a list of words (``tokens``) and one tag per word (``ner_tags``,
strings such as ``B-PER``, or integers with ``data.label_names``). Words are split
into sub-tokens by the model's tokenizer (``is_split_into_words=True``); the first
sub-token of each word carries the word's label and the others are ignored (-100),
as in the Hugging Face ``run_ner.py`` example.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field

from tunesmith import RowError
from tunesmith.data import column_values, each_row

from .entities import get_entities, split_tag

IGNORE = -100


@dataclass
class NerOptions:
    tokens_column: str = field(default="tokens", metadata={"help": "Column with the list of words."})
    tags_column: str = field(default="ner_tags", metadata={"help": "Column with one BIO tag per word."})
    label_names: typing.Optional[list[str]] = field(
        default=None, metadata={"help": "Tag names for integer tags 0..N-1, e.g. [O, B-PER, I-PER, ...]."})
    max_length: int = field(default=256, metadata={"help": "Truncate to this many sub-tokens "
                                                           "(words beyond it are predicted 'O')."})

    def check(self, problems: list[str]) -> None:
        if self.max_length < 4:
            problems.append(f"data.max_length must be >= 4, got {self.max_length!r}")
        for tag in self.label_names or ():
            if not _is_bio(tag):
                problems.append(f"data.label_names: {tag!r} is not a BIO tag (O, B-TYPE or I-TYPE)")


def _is_bio(tag) -> bool:
    if not isinstance(tag, str):
        return False
    prefix, kind = split_tag(tag)
    return tag == "O" or (prefix in ("B", "I") and bool(kind))


class TokenClassification:
    name = "token-classification"
    aliases = ("ner",)
    options = NerOptions
    main_metric = "f1"           # entity-level F1 picks the best checkpoint
    greater_is_better = True

    # -- data ---------------------------------------------------------------
    def check_words(self, row: dict, options: NerOptions) -> list[str]:
        col = options.tokens_column
        if col not in row:
            raise RowError(col, f"missing column {col!r} (columns: {', '.join(map(repr, row))})")
        words = row[col]
        if not isinstance(words, list) or not words:
            raise RowError(col, f"expected a non-empty list of words, got {type(words).__name__} {words!r:.60}")
        for i, w in enumerate(words):
            if not isinstance(w, str) or not w.strip():
                raise RowError(col, f"word {i} must be a non-empty string, got {w!r}")
        return words

    def check_row(self, row: dict, options: NerOptions, state: dict | None = None) -> None:
        words = self.check_words(row, options)
        col = options.tags_column
        if col not in row:
            raise RowError(col, f"missing column {col!r} (columns: {', '.join(map(repr, row))})")
        tags = row[col]
        if not isinstance(tags, list):
            raise RowError(col, f"expected a list of tags, got {type(tags).__name__} {tags!r:.60}")
        if len(tags) != len(words):
            raise RowError(col, f"{len(tags)} tags for {len(words)} words in {options.tokens_column!r}")
        for i, tag in enumerate(tags):
            if options.label_names is not None:
                if not isinstance(tag, int) or isinstance(tag, bool) or not 0 <= tag < len(options.label_names):
                    raise RowError(col, f"tag {i} = {tag!r} is not an index into data.label_names "
                                        f"(0..{len(options.label_names) - 1})")
            elif not _is_bio(tag):
                raise RowError(col, f"tag {i} = {tag!r} is not a BIO tag (O, B-TYPE or I-TYPE)"
                                    + ("; integer tags need data.label_names" if isinstance(tag, int) else ""))
            if state is not None and self._name(tag, options) not in state["labels"]:
                raise RowError(col, f"tag {i} = {self._name(tag, options)!r} does not occur in the "
                                    f"training data (known: {', '.join(state['labels'])})")

    def check_batch(self, batch: dict, options: NerOptions, state: dict | None = None) -> None:
        each_row(batch, lambda row: self.check_row(row, options, state))

    @staticmethod
    def _name(tag, options: NerOptions) -> str:
        return options.label_names[tag] if options.label_names is not None else tag

    def setup(self, dataset, options: NerOptions) -> dict:
        seen = {self._name(t, options) for tags in column_values(dataset, options.tags_column) for t in tags}
        kinds = {split_tag(t)[1] for t in seen if t != "O"}
        if not kinds:
            raise RowError(options.tags_column, "the training data has no entity tags (only 'O')")
        # every type gets both B- and I-, so a validation I-X after a training-only B-X is fine
        labels = ["O"] + [f"{p}-{k}" for k in sorted(kinds) for p in ("B", "I")]
        return {"labels": labels}

    # -- model --------------------------------------------------------------
    def build_model(self, model_path, tokenizer, state, options, load_kwargs):
        from transformers import AutoModelForTokenClassification

        names = state["labels"]
        return AutoModelForTokenClassification.from_pretrained(
            model_path, num_labels=len(names), id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)}, **load_kwargs)

    def _tokenize(self, tokenizer, words_batch, options, **kwargs):
        if not getattr(tokenizer, "is_fast", False):
            from tunesmith import ModelError
            raise ModelError("token-classification needs a fast tokenizer (word_ids); "
                             f"{type(tokenizer).__name__} is not one")
        return tokenizer(words_batch, is_split_into_words=True, truncation=True,
                         max_length=options.max_length, **kwargs)

    def encode_batch(self, batch, tokenizer, state, options, train):
        enc = self._tokenize(tokenizer, batch[options.tokens_column], options)
        columns = {k: v for k, v in enc.items()}
        columns["length"] = [len(ids) for ids in enc["input_ids"]]
        if options.tags_column in batch:
            index = {n: i for i, n in enumerate(state["labels"])}
            labels = []
            for b, row_tags in enumerate(batch[options.tags_column]):
                tags = [index[self._name(t, options)] for t in row_tags]
                labels.append(_first_subtoken_labels(enc.word_ids(b), tags))
            columns["labels"] = labels
        return columns

    def collator(self, tokenizer, options):
        from transformers import DataCollatorForTokenClassification

        return _DropLength(DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE))

    # -- metrics ------------------------------------------------------------
    def metrics(self, state, options, modules):
        return _Metrics(state, modules)

    # -- inference ----------------------------------------------------------
    def input_words(self, item, options) -> tuple[list[str], str, list[tuple[int, int]]]:
        """An input → (words, text, character span of each word in text).

        A string is split on whitespace and spans point into that string; a row's
        words are joined with single spaces and spans point into the joined text."""
        if isinstance(item, str):
            spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", item)]
            if not spans:
                raise RowError(None, "empty text")
            return [item[a:b] for a, b in spans], item, spans
        if not isinstance(item, dict):
            raise RowError(None, f"expected a text or an object with {options.tokens_column!r}, "
                                 f"got {type(item).__name__}")
        words = self.check_words(item, options)
        spans, pos = [], 0
        for w in words:
            spans.append((pos, pos + len(w)))
            pos += len(w) + 1
        return words, " ".join(words), spans

    def predict(self, model, tokenizer, inputs, state, options, batch_size):
        import torch

        parsed = [self.input_words(item, options) for item in inputs]
        names = state["labels"]
        device = next(model.parameters()).device
        model.eval()
        results: list = [None] * len(parsed)
        order = sorted(range(len(parsed)), key=lambda i: len(parsed[i][0]))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                enc = self._tokenize(tokenizer, [parsed[i][0] for i in idx], options,
                                     padding=True, return_tensors="pt")
                word_ids = [enc.word_ids(b) for b in range(len(idx))]
                probs = torch.softmax(model(**enc.to(device)).logits.float(), dim=-1).cpu()
                for b, i in enumerate(idx):
                    words, text, spans = parsed[i]
                    tags, scores = ["O"] * len(words), [1.0] * len(words)
                    for pos, w in _first_subtokens(word_ids[b]):
                        k = int(probs[b, pos].argmax())
                        tags[w], scores[w] = names[k], float(probs[b, pos, k])
                    entities = []
                    for kind, first, last in get_entities(tags):
                        a, e = spans[first][0], spans[last][1]
                        entities.append({"type": kind, "text": text[a:e], "start": a, "end": e,
                                         "words": [first, last + 1],
                                         "score": sum(scores[first:last + 1]) / (last + 1 - first)})
                    results[i] = {"entities": entities, "tags": tags}
        return results


def _first_subtokens(word_ids) -> list[tuple[int, int]]:
    """(position, word) of the first sub-token of every word."""
    out, previous = [], None
    for pos, w in enumerate(word_ids):
        if w is not None and w != previous:
            out.append((pos, w))
        previous = w
    return out


def _first_subtoken_labels(word_ids, tags: list[int]) -> list[int]:
    labels = [IGNORE] * len(word_ids)
    for pos, w in _first_subtokens(word_ids):
        labels[pos] = tags[w]
    return labels


class _DropLength:
    """Dynamic padding; the ``length`` column only serves length-grouped sampling."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, features):
        return self.inner([{k: v for k, v in f.items() if k != "length"} for f in features])


class _Metrics:
    """Per batch: argmax per first sub-token → tag sequences → every registered metric
    module for the task (entity F1 here). Only tag strings are kept, never logits."""

    def __init__(self, state, modules):
        import evaluate   # slow import: only when metrics are computed

        self.names = state["labels"]
        self.combined = evaluate.combine([evaluate.load(str(path)) for path in modules.values()])

    def add_batch(self, logits, labels):
        import torch

        preds = torch.as_tensor(logits).argmax(dim=-1).tolist()
        labels = torch.as_tensor(labels).tolist()
        p_seqs, r_seqs = [], []
        for p_row, l_row in zip(preds, labels):
            keep = [(p, l) for p, l in zip(p_row, l_row) if l != IGNORE]
            p_seqs.append([self.names[p] for p, _ in keep])
            r_seqs.append([self.names[l] for _, l in keep])
        self.combined.add_batch(predictions=p_seqs, references=r_seqs)

    def compute(self) -> dict:
        return self.combined.compute()
