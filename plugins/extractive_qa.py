"""Task ``question-answering``: extractive QA in the SQuAD v1.1 / v2.0 style.

Preprocessing follows the transformers ``run_qa`` recipe: question + context, only the
context is truncated, long contexts become overlapping windows (``max_length`` tokens,
``doc_stride`` tokens of overlap) and the tokenizer's offset mapping ties every context
token to its characters. Training labels are the start/end token of the first answer,
or the CLS token when the answer is not wholly inside the window.

Post-processing takes the ``n_best`` start and end logits of every window, keeps the
spans inside the context and at most ``max_answer_length`` tokens long, picks the best
over all windows of the question and cuts the answer out of the original context by
character offsets, so ``context[start:start + len(answer)] == answer`` always holds.

Evaluation needs every window of a question at once, which the Trainer's streaming
metrics cannot give; :meth:`QuestionAnswering.trainer_class` returns a Trainer whose
``evaluate()`` runs this post-processing and reports SQuAD ``exact_match`` and ``f1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith import DataError, ModelError, RowError, hookimpl
from tunesmith.data import each_row, require_text

METRICS_DIR = Path(__file__).parent / "metrics"
NAME = "question-answering"
# what the model's forward() takes; everything else in the encoded features is for post-processing
MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions")


@dataclass
class QAOptions:
    id_column: str = field(default="id", metadata={"help": "Column with the question id (optional in the data)."})
    question_column: str = field(default="question", metadata={"help": "Column with the question."})
    context_column: str = field(default="context", metadata={"help": "Column with the context passage."})
    answers_column: str = field(
        default="answers", metadata={"help": "Column with the answers: {text: [...], answer_start: [...]} "
                                             "(or flat columns answers.text / answers.answer_start)."})
    answer_text_key: str = field(default="text", metadata={"help": "Key of the answer texts in the answers column."})
    answer_start_key: str = field(
        default="answer_start", metadata={"help": "Key of the answers' character offsets into the context."})
    max_length: int = field(default=384, metadata={"help": "Tokens per window (question + context + specials)."})
    doc_stride: int = field(default=128, metadata={"help": "Tokens of context shared by consecutive windows."})
    n_best: int = field(default=20, metadata={"help": "Start and end candidates per window in post-processing."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer, in tokens."})
    version_2_with_negative: bool = field(
        default=False, metadata={"help": "SQuAD v2: some questions have no answer (empty answers lists)."})
    null_score_diff_threshold: float = field(
        default=0.0, metadata={"help": "SQuAD v2: answer nothing when the null score beats the best span "
                                       "by more than this."})

    def check(self, problems: list[str]) -> None:
        if self.max_length < 8:
            problems.append(f"data.max_length must be >= 8, got {self.max_length!r}")
        if not 0 < self.doc_stride < self.max_length:
            problems.append(f"data.doc_stride must be > 0 and < data.max_length ({self.max_length}), "
                            f"got {self.doc_stride!r}")
        if self.n_best < 1:
            problems.append(f"data.n_best must be >= 1, got {self.n_best!r}")
        if self.max_answer_length < 1:
            problems.append(f"data.max_answer_length must be >= 1, got {self.max_answer_length!r}")


# --------------------------------------------------------------------- offsets

@dataclass
class Window:
    """One tokenized window of a question: which example it belongs to, the character
    span of every token (None outside the context) and where its CLS token is."""
    example: int
    offsets: list
    cls_index: int = 0


def tokenize_windows(tokenizer, questions: list[str], contexts: list[str], options: QAOptions):
    """Tokenize question/context pairs into overlapping windows; returns the encoding
    and one :class:`Window` per window."""
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"task {NAME!r} needs a fast tokenizer (for the offset mapping); "
                         f"{type(tokenizer).__name__} is not one")
    pad_right = tokenizer.padding_side == "right"   # the context goes on the padding side
    questions = [q.lstrip() for q in questions]     # leading blanks waste window space (run_qa)
    first, second = (questions, contexts) if pad_right else (contexts, questions)
    enc = tokenizer(first, second, truncation="only_second" if pad_right else "only_first",
                    max_length=options.max_length, stride=options.doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)
    context_id = 1 if pad_right else 0
    windows = []
    cls_id = tokenizer.cls_token_id
    for i, offsets in enumerate(enc["offset_mapping"]):
        seq = enc.sequence_ids(i)
        ids = enc["input_ids"][i]
        windows.append(Window(example=enc["overflow_to_sample_mapping"][i],
                              offsets=[tuple(o) if s == context_id else None for o, s in zip(offsets, seq)],
                              cls_index=ids.index(cls_id) if cls_id in ids else 0))
    return enc, windows


def check_question_room(tokenizer, questions: list[str], ids: list, options: QAOptions) -> None:
    """A question so long that no context fits beside it cannot be windowed; say which."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    lengths = tokenizer([q.lstrip() for q in questions], add_special_tokens=False)["input_ids"]
    for qid, toks in zip(ids, lengths):
        if options.max_length - specials - len(toks) <= options.doc_stride:
            raise DataError(f"question {qid!r} has {len(toks)} tokens: no context window fits beside it with "
                            f"data.max_length={options.max_length} and data.doc_stride={options.doc_stride}; "
                            f"raise max_length or lower doc_stride", field=options.question_column)


def answer_tokens(window: Window, start_char: int | None, end_char: int | None) -> tuple[int, int]:
    """Token positions of the answer characters ``[start_char, end_char)`` in the window,
    or ``(cls, cls)`` when there is no answer or it is not wholly inside the window."""
    cls = (window.cls_index, window.cls_index)
    if start_char is None:
        return cls
    ctx = [k for k, o in enumerate(window.offsets) if o is not None]
    if not ctx or window.offsets[ctx[0]][0] > start_char or window.offsets[ctx[-1]][1] < end_char:
        return cls
    start = max(k for k in ctx if window.offsets[k][0] <= start_char)
    end = min(k for k in ctx if window.offsets[k][1] >= end_char)
    return start, max(start, end)


def best_answers(contexts: list[str], windows: list[Window], start_logits, end_logits,
                 options: QAOptions) -> list[dict]:
    """Post-process window logits into one ``{"answer", "start", "score"}`` per context.

    ``start_logits[i]`` / ``end_logits[i]`` belong to ``windows[i]``; entries past the
    window's length (batch padding) are ignored. ``score`` is the softmax probability of
    the answer among the candidates considered (with the null answer in v2 mode).
    Unanswered (v2, or no valid span at all): ``answer`` "" and ``start`` None.
    """
    import numpy as np

    cands: list[list] = [[] for _ in contexts]   # (score, start_char, end_char) per example
    null: list = [None] * len(contexts)
    for w, s_log, e_log in zip(windows, start_logits, end_logits):
        n = len(w.offsets)
        s_log = np.asarray(s_log, dtype=np.float64)[:n]
        e_log = np.asarray(e_log, dtype=np.float64)[:n]
        null_score = s_log[w.cls_index] + e_log[w.cls_index]
        if null[w.example] is None or null_score < null[w.example]:
            null[w.example] = null_score   # the windows' smallest null score, as run_qa
        ctx = np.array([o is not None for o in w.offsets])
        if not ctx.any():
            continue
        masked_s = np.where(ctx, s_log, -np.inf)
        masked_e = np.where(ctx, e_log, -np.inf)
        k = min(options.n_best, int(ctx.sum()))
        starts = np.argsort(masked_s)[::-1][:k]
        ends = np.argsort(masked_e)[::-1][:k]
        for s in starts:
            for e in ends:
                if e < s or e - s + 1 > options.max_answer_length:
                    continue
                cands[w.example].append((s_log[s] + e_log[e], w.offsets[s][0], w.offsets[e][1]))
    results = []
    for i, context in enumerate(contexts):
        found = sorted(cands[i], key=lambda c: -c[0])[:options.n_best]
        scores = [c[0] for c in found]
        if options.version_2_with_negative and null[i] is not None:
            scores.append(null[i])
        probs = _softmax(scores)
        best = found[0] if found else None
        if best is None or (options.version_2_with_negative and null[i] is not None
                            and null[i] - best[0] > options.null_score_diff_threshold):
            results.append({"answer": "", "start": None, "score": probs[-1] if probs else 0.0})
        else:
            results.append({"answer": context[best[1]:best[2]], "start": int(best[1]), "score": probs[0]})
    return results


def _softmax(scores: list) -> list[float]:
    if not scores:
        return []
    top = max(scores)
    exp = [math.exp(s - top) for s in scores]
    total = sum(exp)
    return [float(x / total) for x in exp]


# --------------------------------------------------------------------- task

def _is_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


class QuestionAnswering:
    name = NAME
    aliases = ("qa", "extractive-qa")
    options = QAOptions
    main_metric = "f1"
    greater_is_better = True
    parity_check = "spans"     # export: start/end logits compared per window
    example_input = {"question": "Who wrote it?", "context": "It was written by Ada Lovelace in 1843."}
    pipeline_tag = "question-answering"   # the hub's task tag (model cards)
    metric_definitions = {
        "exact_match": "SQuAD exact match, 0-100: share of questions whose predicted answer equals a "
                       "reference answer after SQuAD normalisation (lower case, no punctuation or articles)",
        "f1": "SQuAD F1, 0-100: token overlap of the predicted and the best-matching reference answer, "
              "averaged over questions"}

    # -- data ---------------------------------------------------------------
    def check_input(self, row, options: QAOptions) -> None:
        """Raise RowError for an input ``predict`` cannot use (checked per line / request)."""
        if not isinstance(row, dict):
            raise RowError(None, f"expected an object with {options.question_column!r} and "
                                 f"{options.context_column!r}, got {type(row).__name__}")
        for col in (options.question_column, options.context_column):
            require_text(row, col)

    def answers(self, row: dict, options: QAOptions) -> tuple[list, list]:
        """The row's answer texts and character starts, from a nested answers column
        (SQuAD / Hugging Face layout) or flat ``answers.text`` / ``answers.answer_start``."""
        col, tkey, skey = options.answers_column, options.answer_text_key, options.answer_start_key
        tname, sname = f"{col}.{tkey}", f"{col}.{skey}"
        if col in row:
            value = row[col]
            if not isinstance(value, dict):
                raise RowError(col, f"expected an object with {tkey!r} and {skey!r}, got {value!r}")
            missing = [k for k in (tkey, skey) if k not in value]
            if missing:
                raise RowError(f"{col}.{missing[0]}", f"missing key {missing[0]!r} in {col!r}")
            texts, starts = value[tkey], value[skey]
        elif tname in row and sname in row:
            texts, starts = row[tname], row[sname]
        else:
            raise RowError(col, f"missing column {col!r} (columns: {', '.join(map(repr, row))})")
        texts = texts if isinstance(texts, list) else [texts]
        starts = starts if isinstance(starts, list) else [starts]
        if len(texts) != len(starts):
            raise RowError(sname, f"{len(texts)} answer texts but {len(starts)} answer starts")
        return texts, starts

    def check_row(self, row: dict, options: QAOptions, state: dict | None = None) -> None:
        self.check_input(row, options)
        context = row[options.context_column]
        texts, starts = self.answers(row, options)
        tname = f"{options.answers_column}.{options.answer_text_key}"
        sname = f"{options.answers_column}.{options.answer_start_key}"
        if not texts and not options.version_2_with_negative:
            raise RowError(tname, "no answer; for unanswerable questions (SQuAD v2) set "
                                  "data.version_2_with_negative=true")
        for text, start in zip(texts, starts):
            if not isinstance(text, str) or not text:
                raise RowError(tname, f"expected a non-empty answer text, got {text!r}")
            if not isinstance(start, int) or isinstance(start, bool) or start < 0:
                raise RowError(sname, f"expected a character offset >= 0, got {start!r}")
            found = context[start:start + len(text)]
            if found != text:
                raise RowError(sname, f"answer_start {start} does not point at the answer {text!r}: "
                                      f"the context there reads {found!r}")

    def check_batch(self, batch: dict, options: QAOptions, state: dict | None = None) -> None:
        each_row(batch, lambda row: self.check_row(row, options, state))

    def setup(self, dataset, options: QAOptions) -> dict:
        return {"version_2_with_negative": options.version_2_with_negative}

    # -- model --------------------------------------------------------------
    def build_model(self, model_path, tokenizer, state, options, load_kwargs):
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering.from_pretrained(model_path, **load_kwargs)

    def strategy_defaults(self, strategy: str) -> dict:
        """Strategy ``lora`` on span extraction: rank 16 (alpha 32) and lr 3e-3 where the
        config does not say; measured on MiniLM, docs/benchmarks.md (issue 17)."""
        if strategy == "lora":
            return {"strategy.r": 16, "strategy.alpha": 32, "training.learning_rate": 3e-3}
        return {}

    def lora_target_modules(self, model):
        """Strategy ``lora``: every linear layer of the transformer blocks (attention
        query/key/value/output and the feed-forward), not peft's query/value default.
        Span extraction needs the token representations themselves to change; with
        query/value only, MiniLM stayed at the first-sentence baseline (F1 14.5 after
        3 epochs, full fine-tuning 52.1; see docs/benchmarks.md)."""
        import re

        import torch.nn as nn

        from tunesmith.plugins.strategies import layer_stack

        stack_name, stack = layer_stack(model)
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in stack.named_modules() if isinstance(m, nn.Linear)})
        if not leaves:
            return None   # peft's default for the architecture
        return rf"^{re.escape(stack_name)}\.\d+\.(.*\.)?({'|'.join(map(re.escape, leaves))})$"

    def encode_batch(self, batch, tokenizer, state, options, train, indices=None):
        """Windows of a batch of questions. Training features hold the model inputs and the
        answer's token positions; evaluation features add what post-processing and scoring
        need (the example's row index in its split, character offsets, context, references)."""
        questions = batch[options.question_column]
        contexts = batch[options.context_column]
        indices = list(indices) if indices is not None else list(range(len(questions)))
        ids = batch.get(options.id_column) or indices
        check_question_room(tokenizer, questions, ids, options)
        enc, windows = tokenize_windows(tokenizer, questions, contexts, options)
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        has_answers = all(options.answers_column in r or f"{options.answers_column}.{options.answer_text_key}" in r
                          for r in rows)
        answers = [self.answers(r, options) for r in rows] if has_answers else None
        columns = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        columns["length"] = [len(x) for x in enc["input_ids"]]
        if answers is not None:
            spans = []
            for w in windows:
                texts, starts = answers[w.example]
                first = (starts[0], starts[0] + len(texts[0])) if texts else (None, None)
                spans.append(answer_tokens(w, *first))
            columns["start_positions"] = [s for s, _ in spans]
            columns["end_positions"] = [e for _, e in spans]
        if not train:
            columns["example_index"] = [indices[w.example] for w in windows]
            columns["example_id"] = [str(ids[w.example]) for w in windows]
            columns["offset_start"] = [[o[0] if o else -1 for o in w.offsets] for w in windows]
            columns["offset_end"] = [[o[1] if o else -1 for o in w.offsets] for w in windows]
            columns["cls_index"] = [w.cls_index for w in windows]
            columns["context"] = [contexts[w.example] for w in windows]
            if answers is not None:
                columns["references"] = [[str(t) for t in answers[w.example][0]] for w in windows]
        return columns

    def collator(self, tokenizer, options):
        return _PadRight(tokenizer)

    def trainer_class(self, options, modules):
        """The QA trainer, bound to this run's options and metric modules."""
        base = qa_trainer_class()
        return type(base.__name__, (base,), {"qa_options": options, "qa_metric_modules": modules})

    # -- metrics ------------------------------------------------------------
    def metrics(self, state, options, modules):
        """An accumulator of answer texts: ``add_batch(predictions=[str], references=[[str]])``."""
        return _SquadMetrics(modules)

    def score(self, features, start_logits, end_logits, options, modules) -> dict:
        """Post-process the logits of evaluation ``features`` (from ``encode(train=False)``)
        and score the answers against the references of each question."""
        contexts, windows, refs = features_to_windows(features)
        answers = best_answers(contexts, windows, start_logits, end_logits, options)
        acc = self.metrics({}, options, modules)
        acc.add_batch(predictions=[a["answer"] for a in answers], references=refs)
        return acc.compute()

    def evaluate(self, model, tokenizer, dataset, state, options, batch_size, modules):
        """``tunesmith evaluate``: SQuAD EM/F1 (and every metric registered for the task)
        over all windows of every question."""
        from tunesmith.data import encode

        features = encode(dataset, self, tokenizer, state, options, train=False)
        starts, ends, loss = run_model(model, features, self.collator(tokenizer, options), batch_size)
        metrics = self.score(features, starts, ends, options, modules)
        if loss is not None:
            metrics["loss"] = loss
        return {**metrics, "rows": len(dataset)}

    # -- inference ----------------------------------------------------------
    def predict(self, model, tokenizer, inputs, state, options, batch_size):
        for n, item in enumerate(inputs, 1):
            try:
                self.check_input(item, options)
            except RowError as exc:
                where = f"input {n}: field {exc.field!r}" if exc.field else f"input {n}"
                raise DataError(f"{where}: {exc}") from None
        import datasets

        if not inputs:
            return []
        rows = [{options.question_column: r[options.question_column],
                 options.context_column: r[options.context_column]} for r in inputs]
        features = datasets.Dataset.from_dict(self.encode_batch(
            {k: [r[k] for r in rows] for k in rows[0]}, tokenizer, state, options, train=False))
        starts, ends, _ = run_model(model, features, self.collator(tokenizer, options), batch_size)
        contexts, windows, _ = features_to_windows(features, n_examples=len(rows))
        return best_answers(contexts, windows, starts, ends, options)


def features_to_windows(features, n_examples: int | None = None):
    """Rebuild contexts, :class:`Window` objects and references from encoded features."""
    n = n_examples if n_examples is not None else (max(features["example_index"]) + 1 if len(features) else 0)
    contexts = [""] * n
    refs: list = [[] for _ in range(n)]
    has_refs = "references" in features.column_names
    windows = []
    cols = ["example_index", "offset_start", "offset_end", "cls_index", "context"] + (["references"] if has_refs else [])
    for f in features.select_columns(cols):
        i = f["example_index"]
        contexts[i] = f["context"]
        if has_refs:
            refs[i] = f["references"]
        windows.append(Window(i, [(s, e) if s >= 0 else None for s, e in zip(f["offset_start"], f["offset_end"])],
                              f["cls_index"]))
    return contexts, windows, refs


def run_model(model, features, collator, batch_size):
    """Start and end logits of every window (unpadded), and the mean loss when the
    features carry answer positions."""
    import torch
    from torch.utils.data import DataLoader

    inputs = features.select_columns([c for c in MODEL_COLUMNS if c in features.column_names])
    loader = DataLoader(inputs, batch_size=batch_size, collate_fn=collator)
    device = next(model.parameters()).device
    starts, ends, losses = [], [], []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for batch in loader:
            out = model(**{k: v.to(device) for k, v in batch.items()})
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            for row_s, row_e, n in zip(out.start_logits.float().cpu().numpy(),
                                       out.end_logits.float().cpu().numpy(), lengths):
                starts.append(row_s[:n])
                ends.append(row_e[:n])
            if getattr(out, "loss", None) is not None:
                losses.append((float(out.loss), len(lengths)))
    model.train(was_training)
    loss = sum(l * n for l, n in losses) / sum(n for _, n in losses) if losses else None
    return starts, ends, loss


class _PadRight:
    """Dynamic padding of the model inputs, always on the right (whatever the
    tokenizer's padding side), so a window's logits start at position 0 and line up
    with its offsets; the other feature columns serve grouping and post-processing."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, features):
        return self.tokenizer.pad([{k: v for k, v in f.items() if k in MODEL_COLUMNS} for f in features],
                                  padding=True, return_tensors="pt", padding_side="right")


class _SquadMetrics:
    """Every metric registered for the task (our SQuAD EM/F1, plus other plugins')
    over answer strings."""

    def __init__(self, modules):
        import evaluate   # ~5 s to import, so only when metrics actually run

        self.combined = evaluate.combine([evaluate.load(str(path)) for path in modules.values()])

    def add_batch(self, predictions, references):
        self.combined.add_batch(predictions=predictions, references=references)

    def compute(self) -> dict:
        return self.combined.compute()


_TRAINER = None


def qa_trainer_class():
    """A ``transformers.Trainer`` whose ``evaluate()`` post-processes all windows of
    each question and reports ``{prefix}_exact_match``, ``{prefix}_f1`` and
    ``{prefix}_loss``; so checkpoint selection on ``f1`` works as for any metric."""
    global _TRAINER
    if _TRAINER is not None:
        return _TRAINER
    import time

    from transformers import Trainer
    from transformers.trainer_utils import speed_metrics

    class QuestionAnsweringTrainer(Trainer):
        qa_options: QAOptions | None = None      # bound by QuestionAnswering.trainer_class
        qa_metric_modules: dict | None = None

        def _get_eval_sampler(self, eval_dataset):
            # with group_by_length the Trainer also reorders evaluation batches by length;
            # windows must come back in order to be matched to their questions
            import torch

            return torch.utils.data.SequentialSampler(eval_dataset)

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            features = eval_dataset if eval_dataset is not None else self.eval_dataset
            options = self.qa_options or QAOptions()
            modules = self.qa_metric_modules or {"squad": METRICS_DIR / "squad"}
            inputs = features.select_columns([c for c in MODEL_COLUMNS if c in features.column_names])
            self._memory_tracker.start()
            started = time.time()
            compute, self.compute_metrics = self.compute_metrics, None   # not the streaming metrics
            try:
                # "Prediction" makes the loop keep every window's logits even with batch_eval_metrics
                output = self.evaluation_loop(self.get_eval_dataloader(inputs), description="Prediction",
                                              prediction_loss_only=False, ignore_keys=ignore_keys,
                                              metric_key_prefix=metric_key_prefix)
            finally:
                self.compute_metrics = compute
            start_logits, end_logits = output.predictions[:2]
            metrics = dict(output.metrics)
            # the loop gathered every process's windows, so each process can score them all
            scores = QuestionAnswering().score(features, start_logits, end_logits, options, modules)
            metrics.update({f"{metric_key_prefix}_{k}": v for k, v in scores.items()})
            metrics.update(speed_metrics(metric_key_prefix, started, num_samples=len(inputs)))
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            self._memory_tracker.stop_and_update_metrics(metrics)
            return metrics

    _TRAINER = QuestionAnsweringTrainer
    return _TRAINER


@hookimpl(trylast=True)
def register_tasks(register):
    register(QuestionAnswering())


@hookimpl(trylast=True)
def register_metrics(register):
    register(NAME, "squad", METRICS_DIR / "squad")
