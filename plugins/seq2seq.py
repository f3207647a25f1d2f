"""Tasks ``translation`` and ``summarization``: text-to-text generation, sharing one machinery.

Three model families, detected from the model's config (or forced with ``data.model_family``):

* ``encoder-decoder``: T5, BART, Marian, mT5 (``config.is_encoder_decoder``), trained with
  their own LM head; T5-style models get a task prefix (``translate English to German: ``).
* ``bert2bert``: an encoder-only checkpoint (BERT, RoBERTa, MiniLM ...) warm-started into an
  ``EncoderDecoderModel`` (Rothe et al. 2020): encoder and decoder start from the same
  weights, the decoder's cross-attention and LM-head transform are new and always trained.
* ``decoder-only``: causal LMs (Llama/SmolLM2, GPT-2): ``prompt + target + EOS`` with the
  loss on the target tokens only; generation continues the prompt, which is cut off.

Training uses the Trainer (the model computes the loss from ``labels``); evaluation is real
generation (``model.generate``) scored with sacreBLEU/chrF or ROUGE, through the runner's
``trainer_class`` hook. Metrics are on the 0-100 scale, as the transformers examples report.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field

from tunesmith import DataError, RowError, hookimpl
from tunesmith.data import each_row, require_text

FAMILIES = ("encoder-decoder", "bert2bert", "decoder-only")
# model types that are encoders only: they become both halves of a bert2bert model
ENCODER_ONLY_TYPES = {"bert", "roberta", "distilbert", "electra", "xlm-roberta", "mpnet", "albert",
                      "camembert", "deberta", "deberta-v2", "modernbert", "ernie", "xlm-roberta-xl"}
T5_TYPES = {"t5", "mt5", "umt5", "longt5"}
LANGUAGES = {"en": "English", "de": "German", "fr": "French", "ro": "Romanian", "es": "Spanish",
             "it": "Italian", "nl": "Dutch", "pt": "Portuguese", "ru": "Russian", "zh": "Chinese",
             "ja": "Japanese", "cs": "Czech"}


def language_name(code: str) -> str:
    return LANGUAGES.get(code.lower(), code)


def detect_family(config) -> str:
    """The family of a model from its config (a saved bert2bert is ``encoder-decoder`` type,
    callers that know better pass ``data.model_family``)."""
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    if config.model_type in ENCODER_ONLY_TYPES and not getattr(config, "is_decoder", False):
        return "bert2bert"
    return "decoder-only"


# ---------------------------------------------------------------------- options

def _check_common(opts, problems: list[str]) -> None:
    if opts.model_family is not None and opts.model_family not in FAMILIES:
        problems.append(f"data.model_family must be one of {', '.join(FAMILIES)}, got {opts.model_family!r}")
    if opts.max_source_length < 1:
        problems.append(f"data.max_source_length must be >= 1, got {opts.max_source_length!r}")
    if opts.max_target_length < 1:
        problems.append(f"data.max_target_length must be >= 1, got {opts.max_target_length!r}")
    if opts.prompt_template is not None and "{source}" not in opts.prompt_template:
        problems.append("data.prompt_template must contain the placeholder {source}")


_FAMILY_HELP = ("Model family: encoder-decoder, bert2bert or decoder-only; default: detected from "
                "the model config (recorded in the run's manifest).")
_PREFIX_HELP = ("Text put before every source for encoder-decoder models; default: the T5 task "
                "prefix for T5-style models, else none.")
_TEMPLATE_HELP = ("Decoder-only prompt; {source} is the input (translation also fills {source_lang} "
                  "and {target_lang}); the target follows it. Default: the task's own.")


@dataclass
class _GenerationOptions:
    """Options every generation task shares; each task adds its columns and lengths."""

    uses_generation: typing.ClassVar[bool] = True   # receives generation.* (config.attach_generation)
    model_family: typing.Optional[str] = field(default=None, metadata={"help": _FAMILY_HELP})
    prefix: typing.Optional[str] = field(default=None, metadata={"help": _PREFIX_HELP})
    prompt_template: typing.Optional[str] = field(default=None, metadata={"help": _TEMPLATE_HELP})
    stop: typing.List[str] = field(default_factory=list, metadata={
        "help": "Decoder-only: cut each generation at the first of these strings (e.g. a newline, "
                "where a base LM would go on with the next example)."})

    def check(self, problems: list[str]) -> None:
        _check_common(self, problems)


@dataclass
class TranslationOptions(_GenerationOptions):
    source_column: str = field(default="source", metadata={"help": "Column with the source sentence."})
    target_column: str = field(default="target", metadata={"help": "Column with the reference translation."})
    source_lang: str = field(default="en", metadata={"help": "Source language (code or name)."})
    target_lang: str = field(default="de", metadata={"help": "Target language (code or name)."})
    max_source_length: int = field(default=128, metadata={"help": "Truncate sources to this many tokens."})
    max_target_length: int = field(default=128, metadata={"help": "Truncate targets to this many tokens; "
                                                                  "default generation length."})


@dataclass
class SummarizationOptions(_GenerationOptions):
    text_column: str = field(default="document", metadata={"help": "Column with the document."})
    summary_column: str = field(default="summary", metadata={"help": "Column with the reference summary."})
    max_source_length: int = field(default=512, metadata={"help": "Truncate documents to this many tokens."})
    max_target_length: int = field(default=64, metadata={"help": "Truncate summaries to this many tokens; "
                                                                 "default generation length."})


# ---------------------------------------------------------------------- the shared task

class Seq2SeqTask:
    greater_is_better = True
    output_key = "generated_text"
    parity_check = "generation"   # export: generate() with only generation_config.json

    # -- per-task pieces (overridden below) ----------------------------------
    def columns(self, options) -> tuple[str, str]:
        raise NotImplementedError

    def t5_prefix(self, options) -> str:
        raise NotImplementedError

    def default_template(self, options) -> str:
        raise NotImplementedError

    def score(self, predictions: list[str], references: list[str]) -> dict:
        raise NotImplementedError

    def score_all(self, predictions: list[str], references: list[str], modules: dict) -> dict:
        """The task's own scores plus every metric registered for it (register_metrics), each
        an ``evaluate`` module computed on ``predictions=[str], references=[str]``."""
        scores = self.score(predictions, references)
        if modules:
            import evaluate   # ~5 s to import: only when another plugin registered a metric

            for name, path in modules.items():
                for key, value in (evaluate.load(str(path)).compute(predictions=predictions,
                                                                   references=references) or {}).items():
                    scores[key if key not in scores else f"{name}_{key}"] = value
        return scores

    # -- data -----------------------------------------------------------------
    def _check_text(self, row: dict, col: str) -> None:
        require_text(row, col)

    def check_row(self, row: dict, options, state: dict | None = None) -> None:
        for col in self.columns(options):
            self._check_text(row, col)

    def check_batch(self, batch: dict, options, state: dict | None = None) -> None:
        each_row(batch, lambda row: self.check_row(row, options, state))

    def check_input(self, item, options) -> None:
        """Raise RowError for an input ``predict`` cannot use: a text, or an object with a
        non-empty source text (checked per line / request)."""
        if isinstance(item, dict):
            self._check_text(item, self.columns(options)[0])
        elif not isinstance(item, str):
            raise RowError(None, f"expected a text or an object, got {type(item).__name__}")
        elif not item.strip():
            raise RowError(None, "empty text")

    def setup(self, dataset, options) -> dict:
        return {}   # nothing to learn from the data; the family is resolved with the model

    # -- model ----------------------------------------------------------------
    def build_model(self, model_path, tokenizer, state, options, load_kwargs):
        """Load the model of the right family. Resolves (and so records in the manifest)
        ``data.model_family``, ``data.prefix`` and ``data.prompt_template``."""
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_path, **load_kwargs)
        family = options.model_family or detect_family(config)
        options.model_family = family
        if family == "bert2bert":
            model = self._bert2bert(model_path, config, tokenizer, load_kwargs)
        elif family == "encoder-decoder":
            from transformers import AutoModelForSeq2SeqLM

            if not getattr(config, "is_encoder_decoder", False):
                raise ValueError(f"data.model_family=encoder-decoder but {config.model_type!r} is not "
                                 f"an encoder-decoder model")
            model = AutoModelForSeq2SeqLM.from_pretrained(model_path, **load_kwargs)
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(model_path, **load_kwargs)
            if tokenizer.eos_token_id is None:
                raise ValueError("a decoder-only model needs a tokenizer with an EOS token")
            for c in (model.config, model.generation_config):
                c.eos_token_id = tokenizer.eos_token_id
                c.pad_token_id = tokenizer.pad_token_id
        if options.prefix is None:
            options.prefix = self.t5_prefix(options) if (
                family == "encoder-decoder" and config.model_type in T5_TYPES) else ""
        if options.prompt_template is None and family == "decoder-only":
            options.prompt_template = self.default_template(options)
        # the decoding options travel with the model, so plain transformers users get them too
        gen = model.generation_config
        for key, value in self.generate_kwargs(tokenizer, options).items():
            setattr(gen, key, value)
        return model

    def _bert2bert(self, model_path, config, tokenizer, load_kwargs):
        from transformers import EncoderDecoderModel

        if config.model_type == "encoder-decoder":   # a saved bert2bert run
            return EncoderDecoderModel.from_pretrained(model_path, **load_kwargs)
        import transformers

        level = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()   # "newly initialized: crossattention" is expected
        try:
            model = EncoderDecoderModel.from_encoder_decoder_pretrained(model_path, model_path)
        finally:
            transformers.logging.set_verbosity(level)
        start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        if start is None or eos is None or tokenizer.pad_token_id is None:
            raise ValueError("bert2bert needs a tokenizer with CLS (or BOS), SEP (or EOS) and PAD tokens")
        # on the config (the model shifts labels right with them) and on the generation
        # config (generate() reads it), so a saved and reloaded model generates
        for c in (model.config, model.generation_config):
            c.decoder_start_token_id = start
            c.bos_token_id = start
            c.eos_token_id = eos
            c.pad_token_id = tokenizer.pad_token_id
        model.config.vocab_size = model.config.decoder.vocab_size
        return model

    # -- strategy anatomy (optional task hooks read by plugins/strategies.py) --
    def head_module_names(self, model, adapter: bool = False) -> list[str]:
        """Modules trained under every strategy. bert2bert: the new cross-attention and the
        decoder's LM head (also saved with a LoRA adapter). Pretrained generators have no new
        weights; ``frozen``/``partial`` train their output projection (the shared embedding
        matrix when tied), a LoRA adapter saves nothing extra."""
        new = [n for n, _ in model.named_modules() if n.endswith(".crossattention")] \
            if type(model).__name__ == "EncoderDecoderModel" else []
        if new:
            return new + ["decoder.cls"]
        if adapter:
            return []
        out, inp = model.get_output_embeddings(), model.get_input_embeddings()
        target = inp if out is None or out.weight is inp.weight else out
        return [n for n, m in model.named_modules() if m is target][:1]

    def layer_stack(self, model):
        """For ``partial``: the decoder's blocks when there is a decoder, else the LM's blocks."""
        import torch.nn as nn

        best = None
        for name, module in model.named_modules():
            if isinstance(module, nn.ModuleList) and len(module) and "decoder" in name and \
                    len({type(m) for m in module}) == 1 and (best is None or len(module) > len(best[1])):
                best = (name, module)
        if best is None:
            from tunesmith.plugins.strategies import layer_stack

            return layer_stack(model)
        return best

    def lora_target_modules(self, model):
        """bert2bert: query/value of the pretrained self-attention only; the new
        cross-attention trains in full (modules_to_save), so LoRA must not wrap it."""
        if type(model).__name__ == "EncoderDecoderModel":
            return r"^(?!.*crossattention).*\.(query|value)$"
        return None   # peft's per-architecture default

    # -- encoding ---------------------------------------------------------------
    def _prompt_ids(self, tokenizer, source: str, options) -> list[int]:
        """Template pieces tokenized apart, so the source truncates without cutting the
        template and training and generation see exactly the same ids."""
        before, _, after = options.prompt_template.partition("{source}")
        fill = {"source_lang": language_name(getattr(options, "source_lang", "")),
                "target_lang": language_name(getattr(options, "target_lang", ""))}
        before, after = before.format(**fill), after.format(**fill)
        ids = tokenizer(before, add_special_tokens=True)["input_ids"] if before else []
        if ids and tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id:
            ids = ids[:-1]
        ids += tokenizer(source, add_special_tokens=False)["input_ids"][:options.max_source_length]
        return ids + (tokenizer(after, add_special_tokens=False)["input_ids"] if after else [])

    def encode_batch(self, batch, tokenizer, state, options, train):
        src_col, tgt_col = self.columns(options)
        sources = batch[src_col]
        targets = batch.get(tgt_col)
        columns: dict = {}
        if options.model_family == "decoder-only":
            ids, labels = [], []
            for i, s in enumerate(sources):
                prompt = self._prompt_ids(tokenizer, s, options)
                if targets is None:
                    ids.append(prompt)
                    continue
                t = tokenizer(targets[i], add_special_tokens=False)["input_ids"][:options.max_target_length]
                t = t + [tokenizer.eos_token_id]   # so the model learns to stop
                ids.append(prompt + t)
                labels.append([-100] * len(prompt) + t)   # loss on the target only
            columns["input_ids"] = ids
            columns["attention_mask"] = [[1] * len(x) for x in ids]
            if targets is not None:
                columns["labels"] = labels
        else:
            enc = tokenizer([options.prefix + s for s in sources], truncation=True,
                            max_length=options.max_source_length)
            columns.update(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            if targets is not None:
                lab = tokenizer(text_target=targets, truncation=True,
                                max_length=options.max_target_length)["input_ids"]
                if options.model_family == "bert2bert" and tokenizer.cls_token_id is not None:
                    # [CLS] is the decoder start token; the labels begin with the first word
                    lab = [x[1:] if x and x[0] == tokenizer.cls_token_id else x for x in lab]
                columns["labels"] = lab
        columns["length"] = [len(x) for x in columns["input_ids"]]
        if not train and targets is not None:   # for evaluation by generation
            columns["_source"] = sources
            columns["_reference"] = targets
        return columns

    def collator(self, tokenizer, options):
        return _Collator(tokenizer.pad_token_id, options)

    # -- generation ---------------------------------------------------------------
    def generate_kwargs(self, tokenizer, options) -> dict:
        return generation_kwargs(options, options.max_target_length, early_stopping=True)

    def generate(self, model, tokenizer, sources: list[str], options, batch_size: int) -> list[str]:
        """Generated text for each source (prompt stripped, special tokens dropped)."""
        import torch

        from tunesmith.plugins import in_batches

        kwargs = self.generate_kwargs(tokenizer, options)
        device = next(model.parameters()).device

        def run(texts):
            if options.model_family == "decoder-only":
                prompts = [self._prompt_ids(tokenizer, t, options) for t in texts]
                width = max(map(len, prompts))
                pad = tokenizer.pad_token_id
                # left padding: every prompt ends where generation starts
                ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
                # stop early too, not only cut afterwards (stop_strings needs the tokenizer)
                extra = {"stop_strings": list(options.stop), "tokenizer": tokenizer} \
                    if getattr(options, "stop", None) else {}
                gen = model.generate(input_ids=ids, attention_mask=mask, **kwargs, **extra)[:, width:]
            else:
                enc = tokenizer([options.prefix + t for t in texts], truncation=True,
                                max_length=options.max_source_length, padding=True, return_tensors="pt").to(device)
                gen = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs)
            decoded = tokenizer.batch_decode(gen, skip_special_tokens=True,
                                             clean_up_tokenization_spaces=_wordpiece(tokenizer))
            stops = getattr(options, "stop", ()) if options.model_family == "decoder-only" else ()
            return [_cut(text, stops) for text in decoded]

        return in_batches(model, list(sources), batch_size, run)

    def gen_len(self, tokenizer, predictions: list[str]) -> float:
        if not predictions:
            return 0.0
        return sum(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in predictions) / len(predictions)

    # -- metrics / evaluation / prediction ----------------------------------------
    def metrics(self, state, options, modules):
        return Collected(lambda predictions, references: self.score_all(predictions, references, modules))

    def evaluate(self, model, tokenizer, dataset, state, options, batch_size, modules):
        src_col, tgt_col = self.columns(options)
        preds = self.generate(model, tokenizer, list(dataset[src_col]), options, batch_size)
        scores = self.score_all(preds, list(dataset[tgt_col]), modules)
        return {**scores, "gen_len": round(self.gen_len(tokenizer, preds), 4), "rows": len(dataset)}

    def predict(self, model, tokenizer, inputs, state, options, batch_size):
        src_col, _ = self.columns(options)
        texts = []
        for n, item in enumerate(inputs, 1):
            try:   # a bad input is the user's mistake: a DataError (CLI exit 2), not a crash
                if isinstance(item, dict):
                    self._check_text(item, src_col)
                    item = item[src_col]
                elif not isinstance(item, str):
                    raise RowError(None, f"expected a text or an object, got {type(item).__name__}")
            except RowError as exc:
                raise DataError(f"input {n}: {exc}", field=exc.field) from None
            texts.append(item)
        return [{self.output_key: t} for t in self.generate(model, tokenizer, texts, options, batch_size)]

    def trainer_class(self, options, modules):
        return _generation_trainer(self, modules)


class Translation(Seq2SeqTask):
    name = "translation"
    aliases = ("translate", "mt")
    options = TranslationOptions
    main_metric = "chrf"   # more stable than BLEU on small validation sets
    pipeline_tag = "translation"   # the hub's task tag (model cards)
    metric_definitions = {
        "bleu": "corpus BLEU (sacreBLEU defaults, 13a tokenisation), 0-100, on generated text",
        "bleu_lowercase": "corpus BLEU with both sides lower-cased (what an uncased vocabulary can reach)",
        "chrf": "corpus chrF (sacreBLEU, character n-grams), 0-100, on generated text",
        "gen_len": "mean length of the generated outputs in tokens"}
    output_key = "translation_text"

    def columns(self, options):
        return options.source_column, options.target_column

    def t5_prefix(self, options):
        return f"translate {language_name(options.source_lang)} to {language_name(options.target_lang)}: "

    def default_template(self, options):
        return "Translate from {source_lang} to {target_lang}.\n{source_lang}: {source}\n{target_lang}:"

    def score(self, predictions, references):
        return sacrebleu_scores(predictions, references)


def sacrebleu_scores(predictions: list[str], references: list[str]) -> dict:
    """Corpus BLEU (cased and lower-cased) and chrF with sacreBLEU, computed locally
    (no metric download); one reference per prediction. Also used by text-generation."""
    import sacrebleu

    refs = [references]
    return {"bleu": round(sacrebleu.corpus_bleu(predictions, refs).score, 4),
            # the uncased-vocabulary effect, measured (see docs/benchmarks.md)
            "bleu_lowercase": round(sacrebleu.corpus_bleu(predictions, refs, lowercase=True).score, 4),
            "chrf": round(sacrebleu.corpus_chrf(predictions, refs).score, 4)}


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class Summarization(Seq2SeqTask):
    name = "summarization"
    aliases = ("summarize", "summarisation")
    options = SummarizationOptions
    main_metric = "rougeL"
    output_key = "summary_text"
    pipeline_tag = "summarization"   # the hub's task tag (model cards)
    metric_definitions = {
        "rouge1": "ROUGE-1 F-measure (unigram overlap, Porter stemming), 0-100, on generated text",
        "rouge2": "ROUGE-2 F-measure (bigram overlap, stemming), 0-100",
        "rougeL": "ROUGE-L F-measure (longest common subsequence, stemming), 0-100",
        "rougeLsum": "ROUGE-Lsum F-measure (LCS per sentence, newline-split), 0-100",
        "gen_len": "mean length of the generated outputs in tokens"}

    def columns(self, options):
        return options.text_column, options.summary_column

    def t5_prefix(self, options):
        return "summarize: "

    def default_template(self, options):
        return "Summarize the text in one sentence.\nText: {source}\nSummary:"

    def score(self, predictions, references):
        return rouge_scores(predictions, references)


def rouge_scores(predictions: list[str], references: list[str]) -> dict:
    """Mean ROUGE-1/2/L/Lsum F-measures (0-100) with rouge_score, computed locally."""
    from rouge_score import rouge_scorer

    keys = ("rouge1", "rouge2", "rougeL", "rougeLsum")
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=True)
    totals = dict.fromkeys(keys, 0.0)
    for pred, ref in zip(predictions, references):
        # rougeLsum scores sentence by sentence: one sentence a line, as the HF examples do
        s = scorer.score("\n".join(_SENTENCE_END.split(ref.strip())),
                         "\n".join(_SENTENCE_END.split(pred.strip())))
        for k in keys:
            totals[k] += s[k].fmeasure
    n = max(len(predictions), 1)
    return {k: round(100 * v / n, 4) for k, v in totals.items()}


# ---------------------------------------------------------------------- helpers

class _Collator:
    """Dynamic padding of input ids (pad id) and labels (-100); drops the helper columns.
    Holds the task options, which the generation trainer reads."""

    def __init__(self, pad_id, options):
        self.pad_id = pad_id if pad_id is not None else 0
        self.options = options

    def __call__(self, features):
        import torch

        width = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": torch.tensor([list(f["input_ids"]) + [self.pad_id] * (width - len(f["input_ids"]))
                                            for f in features]),
                 "attention_mask": torch.tensor([list(f["attention_mask"]) + [0] * (width - len(f["attention_mask"]))
                                                 for f in features])}
        if "labels" in features[0]:
            lw = max(len(f["labels"]) for f in features)
            batch["labels"] = torch.tensor([list(f["labels"]) + [-100] * (lw - len(f["labels"]))
                                            for f in features])
        return batch


class Collected:
    """The protocol's metric accumulator for generation tasks (text-generation uses it too):
    keeps every batch's predictions and references, then ``score(predictions, references)``."""

    def __init__(self, score):
        self.score, self.predictions, self.references = score, [], []

    def add_batch(self, predictions, references):
        self.predictions.extend(predictions)
        self.references.extend(references)

    def compute(self) -> dict:
        return self.score(self.predictions, self.references)


def generation_kwargs(options, max_new_tokens: int, early_stopping: bool = False) -> dict:
    """``generate()`` keywords from ``generation.*`` (``options.generation``; greedy without it)."""
    gen = getattr(options, "generation", None)
    kwargs = {"max_new_tokens": max_new_tokens, "num_beams": 1, "do_sample": False}
    if gen is not None:
        kwargs.update(max_new_tokens=gen.max_new_tokens or max_new_tokens, num_beams=gen.num_beams,
                      length_penalty=gen.length_penalty)
        if gen.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = gen.no_repeat_ngram_size
        if early_stopping and gen.num_beams > 1:
            kwargs["early_stopping"] = True
    return kwargs


def generation_trainer(scores):
    """A Trainer class whose evaluation is the teacher-forced loss (the Trainer's own loop,
    no logits gathered) plus ``scores(trainer, dataset, compute)``: metrics on generated text
    (``compute`` is the run's metric function); the best checkpoint is picked on those."""
    import transformers

    class GenerationTrainer(transformers.Trainer):
        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            self._generation_dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
            self._saved_metrics, self.compute_metrics = self.compute_metrics, None
            try:
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            finally:
                self.compute_metrics = self._saved_metrics

        def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                            metric_key_prefix="eval"):
            output = super().evaluation_loop(dataloader, description, True, ignore_keys, metric_key_prefix)
            ds = getattr(self, "_generation_dataset", None)
            extra = scores(self, ds, getattr(self, "_saved_metrics", None)) if ds is not None else None
            output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in (extra or {}).items()})
            return output

    return GenerationTrainer


def _generation_trainer(task, modules):
    def scores(trainer, ds, compute):
        if "_source" not in ds.column_names:
            return None
        tok = trainer.processing_class
        preds = task.generate(trainer.model, tok, list(ds["_source"]), trainer.data_collator.options,
                              trainer.args.per_device_eval_batch_size)
        return {**task.score_all(preds, list(ds["_reference"]), modules),
                "gen_len": round(task.gen_len(tok, preds), 4)}

    return generation_trainer(scores)


@hookimpl(trylast=True)
def register_tasks(register):
    register(Translation())
    register(Summarization())


def _cut(text: str, stop) -> str:
    """``text`` up to the first stop string, stripped (a base LM's next example cut off;
    the leading newline of a template that ends with ``:\n`` is not a stop)."""
    text = text.strip()
    for s in stop or ():
        pos = text.find(s)
        if pos >= 0:
            text = text[:pos]
    return text.strip()


def _wordpiece(tokenizer) -> bool:
    """Whether decoding should re-attach punctuation (``"word ."`` -> ``"word."``): right
    for WordPiece (bert2bert), wrong for byte-level BPE, which keeps its own spaces
    (transformers warns and ignores the clean-up there)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return type(getattr(backend, "model", None)).__name__ == "WordPiece"
