"""Task ``text-generation`` (aliases ``instruction``, ``sft``): supervised fine-tuning of a decoder LM.

Rows are ``prompt`` + ``completion`` texts, or chat ``messages`` (a list of ``{"role",
"content"}`` whose last turn is the assistant's answer). With the model's chat template
(when its tokenizer has one, or ``data.chat_template: true``) a prompt becomes a user turn
and the completion the assistant's turn; without it the texts are used as they are. The loss
is on the completion tokens only (the prompt's labels are -100), optionally with sequences
packed together (TRL's best-fit-decreasing ``pack_dataset``, positions restarting in each
sequence). Batches are padded by TRL's ``DataCollatorForLanguageModeling``.

Evaluation is the teacher-forced loss plus real generation (``model.generate``) scored by
the metrics named in ``data.metrics`` (exact match, chrF, BLEU, ROUGE; sacreBLEU/ROUGE
computed locally as in translation/summarization), ``pass@k`` when the rows carry a
``test`` column (each completion run against its tests in the sandbox of
``tunesmith.plugins.code_exec``, never in this process), and any metric module another
plugin registers for the task (``register_metrics``: a local ``evaluate`` folder, called
with ``predictions`` and ``references``).

TRL's ``SFTTrainer`` is not used as the trainer: tunesmith builds the Trainer itself and
encodes data once through its cached ``Dataset.map``, which is SFTTrainer's own dataset
preparation; its collator, packing and completion-boundary rule are what is reused here.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

from tunesmith import DataError, RowError, hookimpl
from tunesmith.config import option

BUILTIN_METRICS = ("exact_match", "chrf", "bleu", "rouge", "pass@k")
PASS_AT_K = "pass@k"
# optional columns that make a row a code problem scored by execution (HumanEval layout)
CODE_COLUMNS = ("test", "entry_point")


@dataclass
class TextGenerationOptions:
    uses_generation: typing.ClassVar[bool] = True   # receives generation.* (config.attach_generation)
    prompt_column: str = option("Column with the prompt (instruction).", "prompt")
    completion_column: str = option("Column with the response the model learns to write.", "completion")
    messages_column: str = option("Column with a chat (list of {role, content}); used when a row has no prompt "
                                  "column. The loss is on the last turn, which must be the assistant's.", "messages")
    chat_template: typing.Optional[bool] = option(
        "Render rows with the tokenizer's chat template; default: when it has one (recorded in the run's manifest).",
        None)
    system_prompt: typing.Optional[str] = option(
        "A system turn put before every prompt when the chat template is used.", None)
    max_prompt_length: int = option("Keep the last this many prompt tokens (the end, where the answer starts).", 512)
    max_completion_length: int = option("Truncate completions to this many tokens; default generation length.", 256)
    packing: bool = option("Pack training sequences into rows of max_prompt_length + max_completion_length tokens "
                           "(TRL best-fit decreasing; positions restart in each sequence).", False)
    metrics: typing.List[str] = option("Metrics on generated text: exact_match, chrf, bleu, rouge, pass@k (pass@k "
                                       "is added when the rows have a test column).",
                                       factory=lambda: ["exact_match", "chrf", "bleu", "rouge"])
    main_metric: typing.Optional[str] = option(
        "The metric that picks the best checkpoint; default: pass@1 when the rows have tests, else chrf (or the "
        "first of data.metrics).", None)
    stop: typing.List[str] = option(
        "Cut each generation at the first of these strings (e.g. \"\\ndef \" for code).", factory=list)
    num_samples: int = option("Completions sampled per prompt for pass@k (1: one greedy completion).", 1)
    temperature: float = option("Sampling temperature when num_samples > 1.", 0.8)
    pass_k: typing.List[int] = option("The k of pass@k (each <= num_samples).", factory=lambda: [1])
    sandbox_timeout_s: float = option("Seconds each completion's tests may run.", 10.0)

    def check(self, problems: list[str]) -> None:
        for name in ("max_prompt_length", "max_completion_length", "num_samples"):
            if getattr(self, name) < 1:
                problems.append(f"data.{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.metrics:
            problems.append("data.metrics must name at least one metric (the best checkpoint is picked on one)")
        unknown = [m for m in self.metrics if m not in BUILTIN_METRICS]
        if unknown:   # a plugin's registered metric is computed anyway; data.metrics names built-ins
            problems.append(f"data.metrics: unknown metric(s) {', '.join(map(repr, unknown))} "
                            f"(built-in: {', '.join(BUILTIN_METRICS)})")
        if self.temperature <= 0:
            problems.append(f"data.temperature must be > 0, got {self.temperature!r}")
        bad_k = [k for k in self.pass_k if not isinstance(k, int) or k < 1 or k > self.num_samples]
        if bad_k or not self.pass_k:
            problems.append(f"data.pass_k must be a non-empty list of integers in 1..data.num_samples "
                            f"({self.num_samples}), got {self.pass_k!r}")
        if self.sandbox_timeout_s <= 0:
            problems.append(f"data.sandbox_timeout_s must be > 0, got {self.sandbox_timeout_s!r}")


def _text(value, field_name: str, allow_empty: bool = False) -> str:
    if value is None:
        raise RowError(field_name, "missing")
    if not isinstance(value, str):
        raise RowError(field_name, f"expected text, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RowError(field_name, "empty text")
    return value


def _check_messages(value, col: str) -> list[dict]:
    if not isinstance(value, list) or len(value) < 2:
        raise RowError(col, "expected a list of at least two {role, content} turns"
                       if isinstance(value, list) else f"expected a list of turns, got {type(value).__name__}")
    for i, turn in enumerate(value):
        where = f"{col}[{i}]"
        if not isinstance(turn, dict):
            raise RowError(where, f"expected an object with role and content, got {type(turn).__name__}")
        role = turn.get("role")
        if role not in ("system", "user", "assistant"):
            raise RowError(f"{where}.role", f"expected system, user or assistant, got {role!r}")
        _text(turn.get("content"), f"{where}.content")
    if value[-1]["role"] != "assistant":
        raise RowError(f"{col}[{len(value) - 1}].role", "the last turn must be the assistant's (the target)")
    return value


class TextGeneration:
    name = "text-generation"
    aliases = ("instruction", "sft")
    options = TextGenerationOptions
    main_metric = "chrf"
    greater_is_better = True
    output_key = "generated_text"
    pipeline_task = "text-generation"
    example_input = {"prompt": "Write a haiku about the sea."}

    # -- data -----------------------------------------------------------------
    def _row_pair(self, row: dict, options, need_completion: bool = True):
        """(prompt, completion) of a row: ``prompt`` a string, or a chat (list of turns)
        without its last, assistant, turn; ``completion`` the target text or None."""
        if row.get(options.prompt_column) is not None or row.get(options.messages_column) is None:
            prompt = _text(row.get(options.prompt_column), options.prompt_column)
            completion = row.get(options.completion_column)
            if need_completion or completion is not None:
                completion = _text(completion, options.completion_column)
            return prompt, completion
        turns = _check_messages(row.get(options.messages_column), options.messages_column)
        return [dict(role=t["role"], content=t["content"]) for t in turns[:-1]], turns[-1]["content"]

    def check_row(self, row: dict, options, state=None) -> None:
        self._row_pair(row, options)
        for col in CODE_COLUMNS:
            if row.get(col) is not None:
                _text(row[col], col)
        if row.get("test") is not None and row.get("entry_point") is None:
            raise RowError("entry_point", "missing (a row with tests names the function they call)")

    def check_batch(self, batch: dict, options, state=None) -> None:
        from tunesmith.data import each_row

        each_row(batch, lambda row: self.check_row(row, options, state))

    def setup(self, dataset, options) -> dict:
        cols = dataset.column_names
        fmt = "prompt-completion" if options.prompt_column in cols else "messages"
        main = options.main_metric
        if main is None:
            first = {"exact_match": "exact_match", "chrf": "chrf", "bleu": "bleu", "rouge": "rougeL",
                     PASS_AT_K: f"pass@{options.pass_k[0]}"}
            main = f"pass@{options.pass_k[0]}" if "test" in cols else \
                "chrf" if "chrf" in options.metrics else first[options.metrics[0]]
        return {"format": fmt, "main_metric": main}

    def main_metric_for(self, state) -> str:
        return (state or {}).get("main_metric", self.main_metric)

    # -- model ----------------------------------------------------------------
    def build_model(self, model_path, tokenizer, state, options, load_kwargs):
        """A causal LM. Resolves ``data.chat_template`` (recorded in the manifest): true when
        the tokenizer has a template and the option is unset."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_path, **load_kwargs)
        if tokenizer.eos_token_id is None:
            raise ValueError("text-generation needs a tokenizer with an EOS token")
        if options.chat_template is None:
            options.chat_template = bool(getattr(tokenizer, "chat_template", None))
        elif options.chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError("data.chat_template is true but the tokenizer has no chat template")
        for c in (model.config, model.generation_config):
            c.pad_token_id = tokenizer.pad_token_id
        gen = model.generation_config   # the decoding options travel with the saved model
        for key, value in self.generate_kwargs(options).items():
            setattr(gen, key, value)
        return model

    # strategy anatomy: the same as a decoder-only translation model
    def head_module_names(self, model, adapter: bool = False) -> list[str]:
        from tunesmith.plugins.seq2seq import Seq2SeqTask

        return Seq2SeqTask.head_module_names(self, model, adapter)

    def layer_stack(self, model):
        from tunesmith.plugins.strategies import layer_stack

        return layer_stack(model)

    def lora_target_modules(self, model):
        return None   # peft's per-architecture default (q_proj, v_proj for Llama/Qwen2/Gemma)

    # -- encoding ---------------------------------------------------------------
    def _chat(self, prompt, options) -> list[dict]:
        turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if options.system_prompt and turns[0]["role"] != "system":
            turns.insert(0, {"role": "system", "content": options.system_prompt})
        return turns

    def prompt_ids(self, tokenizer, prompt, options) -> list[int]:
        """The ids generation starts from (the same as the training prompt), of which the
        last ``max_prompt_length`` are kept."""
        if options.chat_template:
            ids = _ids(tokenizer.apply_chat_template(self._chat(prompt, options), add_generation_prompt=True,
                                                     tokenize=True))
        else:
            if not isinstance(prompt, str):   # a chat without a template: plain "role: content" lines
                prompt = "".join(f"{t['role']}: {t['content']}\n" for t in prompt) + "assistant:"
            ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
            if ids and ids[-1] == tokenizer.eos_token_id:   # BERT-style tokenizers end with [SEP]
                ids = ids[:-1]
        return ids[-options.max_prompt_length:]

    def _pair_ids(self, tokenizer, prompt, completion: str, options) -> tuple[list[int], list[int]]:
        prompt_ids = self.prompt_ids(tokenizer, prompt, options)
        if options.chat_template:
            _need_trl()
            from trl.data_utils import common_prefix_length

            full = _ids(tokenizer.apply_chat_template(
                self._chat(prompt, options) + [{"role": "assistant", "content": completion}], tokenize=True))
            # the answer starts where the rendered prompt and prompt + answer diverge (TRL's rule);
            # what follows includes the template's end-of-turn, which teaches the model to stop
            full_prompt = _ids(tokenizer.apply_chat_template(self._chat(prompt, options),
                                                             add_generation_prompt=True, tokenize=True))
            comp = full[common_prefix_length(full_prompt, full):]
        else:
            comp = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return prompt_ids, comp[:options.max_completion_length]

    def encode_batch(self, batch, tokenizer, state, options, train):
        n = len(next(iter(batch.values())))
        rows = [{k: v[i] for k, v in batch.items()} for i in range(n)]
        ids, labels, prompts, refs = [], [], [], []
        for row in rows:
            prompt, completion = self._row_pair(row, options)
            p, c = self._pair_ids(tokenizer, prompt, completion, options)
            ids.append(p + c)
            labels.append([-100] * len(p) + c)   # the loss on the completion only
            prompts.append(p)
            refs.append(completion)
        columns = {"input_ids": ids, "labels": labels}
        if train and options.packing:
            _need_trl()
            import datasets
            from trl.data_utils import pack_dataset

            packed = pack_dataset(datasets.Dataset.from_dict(columns),
                                  options.max_prompt_length + options.max_completion_length, "bfd")
            columns = packed.to_dict()
            ids = columns["input_ids"]
        columns["length"] = [len(x) for x in ids]
        if not train:   # for evaluation by generation
            columns["_prompt_ids"] = prompts
            columns["_reference"] = refs
            for col in ("prompt",) + CODE_COLUMNS:
                columns[f"_{col}"] = [r.get(col) if isinstance(r.get(col), str) else None for r in rows]
        return columns

    def collator(self, tokenizer, options):
        return _Collator(tokenizer.pad_token_id, options)

    # -- generation ---------------------------------------------------------------
    def generate_kwargs(self, options) -> dict:
        from tunesmith.plugins.seq2seq import generation_kwargs

        return generation_kwargs(options, options.max_completion_length)

    def generate(self, model, tokenizer, prompts: list[list[int]], options, batch_size: int,
                 samples: int = 1) -> list[list[str]]:
        """``samples`` generated completions per prompt (the prompt cut off, special tokens
        dropped, each cut at the first ``data.stop`` string). One greedy completion unless
        ``samples > 1``, which samples at ``data.temperature``."""
        import torch

        kwargs = self.generate_kwargs(options)
        if samples > 1:
            kwargs.update(do_sample=True, temperature=options.temperature, num_return_sequences=samples,
                          num_beams=1)
        if options.stop:   # stop early (saves time); the text is cut below either way
            kwargs.update(stop_strings=list(options.stop), tokenizer=tokenizer)
        from tunesmith.plugins import in_batches

        device = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

        def run(batch):
            batch = [list(p) for p in batch]
            width = max(map(len, batch))
            # left padding: every prompt ends where generation starts
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
            gen = model.generate(input_ids=ids, attention_mask=mask, **kwargs)[:, width:]
            texts = tokenizer.batch_decode(gen, skip_special_tokens=True)
            return [[_cut(t, options.stop) for t in texts[j * samples:(j + 1) * samples]] for j in range(len(batch))]

        return in_batches(model, list(prompts), batch_size, run)

    # -- metrics / evaluation / prediction ----------------------------------------
    def metrics(self, state, options, modules):
        from tunesmith.plugins.seq2seq import Collected

        return Collected(lambda samples, rows: self.score(samples, rows, options, modules))

    def score(self, samples: list[list[str]], rows: list[dict], options, modules: dict | None = None) -> dict:
        """The metrics of generated ``samples`` (per row, a list) against ``rows`` (dicts
        with ``reference`` and, for code problems, ``prompt``, ``test`` and ``entry_point``)."""
        from tunesmith.plugins.seq2seq import rouge_scores, sacrebleu_scores

        first = [s[0] for s in samples]
        refs = [r["reference"] for r in rows]
        names = list(options.metrics)
        out: dict = {}
        if "exact_match" in names:
            hits = sum(p.strip() == r.strip() for p, r in zip(first, refs))
            out["exact_match"] = round(100 * hits / max(len(refs), 1), 4)
        if "chrf" in names or "bleu" in names:
            scores = sacrebleu_scores(first, refs)
            out.update({k: v for k, v in scores.items() if ("chrf" if k == "chrf" else "bleu") in names})
        if "rouge" in names:
            out.update(rouge_scores(first, refs))
        has_tests = bool(rows) and all(r.get("test") for r in rows)
        if has_tests or (PASS_AT_K in names and rows):
            out.update(_pass_at_k(samples, rows, options))
        for name, path in (modules or {}).items():
            if name == PASS_AT_K:   # computed above, in the sandbox, from the rows' tests
                continue
            import evaluate

            result = evaluate.load(path).compute(predictions=first, references=refs)
            out.update({k if k == name or k.startswith(name) else f"{name}_{k}": v for k, v in result.items()})
        return out

    def _eval_rows(self, ds) -> list[dict]:
        cols = ds.column_names
        get = (lambda c: list(ds[c]) if c in cols else [None] * len(ds))
        return [{"reference": ref, "prompt": p, "test": t, "entry_point": e}
                for ref, p, t, e in zip(get("_reference"), get("_prompt"), get("_test"), get("_entry_point"))]

    def evaluate(self, model, tokenizer, dataset, state, options, batch_size, modules):
        """Generation metrics on labelled rows (``tunesmith evaluate``); ``modules``: the
        metrics registered for the task."""
        from tunesmith.data import encode

        ds = encode(dataset, self, tokenizer, state, options, train=False)
        samples = self.generate(model, tokenizer, list(ds["_prompt_ids"]), options, batch_size,
                                options.num_samples)
        scores = self.score(samples, self._eval_rows(ds), options, modules)
        return {**scores, "gen_len": _gen_len(tokenizer, samples), "rows": len(ds)}

    def check_input(self, item, options) -> None:
        if isinstance(item, str):
            if not item.strip():
                raise RowError(None, "empty text")
            return
        if not isinstance(item, dict):
            raise RowError(None, f"expected a text or an object, got {type(item).__name__}")
        if item.get(options.prompt_column) is None and options.messages_column in item:
            msgs = item[options.messages_column]
            if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict) \
                    and msgs[-1].get("role") == "assistant":
                msgs = msgs[:-1]   # an answer given with the input is dropped: the model writes it
            if not isinstance(msgs, list) or not msgs:
                raise RowError(options.messages_column, "expected a non-empty list of turns")
            _check_messages(msgs + [{"role": "assistant", "content": "x"}], options.messages_column)
        else:
            _text(item.get(options.prompt_column), options.prompt_column)

    def _prompt_of(self, item, options):
        if isinstance(item, str):
            return item
        if item.get(options.prompt_column) is None and options.messages_column in item:
            msgs = item[options.messages_column]
            return [dict(role=t["role"], content=t["content"]) for t in msgs
                    if not (t is msgs[-1] and t.get("role") == "assistant")]
        return item[options.prompt_column]

    def predict(self, model, tokenizer, inputs, state, options, batch_size):
        prompts = []
        for n, item in enumerate(inputs, 1):
            try:   # a bad input is the user's mistake: a DataError (CLI exit 2), not a crash
                self.check_input(item, options)
            except RowError as exc:
                raise DataError(f"input {n}: {exc}", field=exc.field) from None
            prompts.append(self.prompt_ids(tokenizer, self._prompt_of(item, options), options))
        samples = self.generate(model, tokenizer, prompts, options, batch_size)
        return [{self.output_key: s[0]} for s in samples]

    def truncated(self, inputs, tokenizer, options) -> list[bool]:
        out = []
        for item in inputs:
            opts = _Unlimited(options)
            out.append(len(self.prompt_ids(tokenizer, self._prompt_of(item, options), opts))
                       > options.max_prompt_length)
        return out

    def trainer_class(self, options, modules):
        # the registered metrics reach it through the run's compute_metrics accumulator
        return _generation_trainer(self)


# ---------------------------------------------------------------------- helpers

def _need_trl() -> None:
    try:
        import trl  # noqa: F401
    except ImportError:
        from tunesmith import ConfigError

        raise ConfigError(["task text-generation needs TRL: pip install 'tunesmith[sft]'"]) from None


def _ids(rendered) -> list[int]:
    """``apply_chat_template(tokenize=True)`` returns ids or (transformers 5) an encoding."""
    if isinstance(rendered, dict) or hasattr(rendered, "keys"):
        rendered = rendered["input_ids"]
    return list(rendered)


def _cut(text: str, stop) -> str:
    for s in stop or ():
        pos = text.find(s)
        if pos >= 0:
            text = text[:pos]
    return text.rstrip()


def _gen_len(tokenizer, samples) -> float:
    firsts = [s[0] for s in samples]
    if not firsts:
        return 0.0
    return round(sum(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in firsts) / len(firsts), 4)


class _Unlimited:
    """The task options with no prompt limit (to tell whether an input is cut)."""

    def __init__(self, options):
        self._o = options
        self.max_prompt_length = 10 ** 9

    def __getattr__(self, name):
        return getattr(self._o, name)


def _pass_at_k(samples, rows, options) -> dict:
    """pass@k of the samples, each run against its row's tests in the sandbox (a
    separate process per completion, with time and memory limits)."""
    missing = [i for i, r in enumerate(rows) if not (r.get("test") and r.get("entry_point") and r.get("prompt"))]
    if missing:
        raise DataError(f"pass@k needs prompt, test and entry_point in every evaluation row; row {missing[0] + 1} "
                        f"lacks one", field="test")
    try:
        from tunesmith.plugins.code_exec import score_completions
    except ImportError:
        raise DataError("pass@k needs the code sandbox (tunesmith.plugins.code_exec), which this "
                        "tunesmith does not have", field="test") from None
    ks = tuple(k for k in options.pass_k if k <= len(samples[0]))
    result = score_completions([{"prompt": r["prompt"], "test": r["test"], "entry_point": r["entry_point"]}
                                for r in rows], samples, ks=ks, timeout_s=options.sandbox_timeout_s)
    out = {f"pass@{k}": round(100 * float(result[f"pass@{k}"]), 4) for k in ks if f"pass@{k}" in result}
    return out


class _Collator:
    """TRL's ``DataCollatorForLanguageModeling`` (right padding, labels padded with -100,
    packed rows flattened with restarting positions); drops the helper columns. Holds the
    task options, which the generation trainer reads."""

    def __init__(self, pad_id, options):
        _need_trl()
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        self.options = options
        self.pad_id = pad_id if pad_id is not None else 0
        self._plain = DataCollatorForLanguageModeling(pad_token_id=self.pad_id)
        self._packed = DataCollatorForLanguageModeling(pad_token_id=self.pad_id, padding_free=True)

    def __call__(self, features):
        keep = ("input_ids", "labels", "seq_lengths")
        feats = [{k: list(f[k]) for k in keep if k in f} for f in features]
        if "seq_lengths" in feats[0]:
            batch = self._packed(feats)
            # the flattened batch's positions restart per sequence; transformers reads the
            # boundaries from position_ids, the other keys are for flash-attention kernels
            return {k: batch[k] for k in ("input_ids", "labels", "position_ids")}
        return self._plain(feats)


def _generation_trainer(task):
    """seq2seq's generation Trainer scoring through the run's metric accumulator (so
    registered metric modules are included), on packed or plain rows."""
    from transformers.trainer_utils import EvalPrediction

    from tunesmith.plugins.seq2seq import generation_trainer

    def scores(trainer, ds, compute):
        if "_prompt_ids" not in ds.column_names or compute is None:
            return None
        options, tok = trainer.data_collator.options, trainer.processing_class
        samples = task.generate(trainer.model, tok, list(ds["_prompt_ids"]), options,
                                trainer.args.per_device_eval_batch_size, options.num_samples)
        result = compute(EvalPrediction(predictions=samples, label_ids=task._eval_rows(ds)), compute_result=True)
        return {**result, "gen_len": _gen_len(tok, samples)}

    class TextGenerationTrainer(generation_trainer(scores)):
        def _set_signature_columns_if_needed(self):
            # packed rows carry their sequence lengths to the collator
            if self._signature_columns is None:
                self._signature_columns = ["input_ids", "labels", "seq_lengths", "length"]

    return TextGenerationTrainer


TASK = TextGeneration()


@hookimpl(trylast=True)
def register_tasks(register):
    register(TASK)


@hookimpl(trylast=True)
def register_metrics(register):
    """``pass@k`` (the sandbox's local metric module, where this tunesmith ships it)."""
    from pathlib import Path

    folder = Path(__file__).parent / "metrics" / "pass_at_k"
    if folder.is_dir():
        register(TextGeneration.name, PASS_AT_K, str(folder))
