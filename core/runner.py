"""The pipeline as named steps: prepare → build → start → trainer → fit → finish (nothing written before start)."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import checkpoints, data, lifecycle, precision, prepcache, progress, rundir
from .config import RunConfig, load_config
from .errors import ConfigError, DataError, ModelError, RowError, RunDirError, TrainingInterrupted, first_line
from .manager import Plugins, load_plugins
from .protocols import member
from .util import is_main_process


@dataclass(frozen=True)
class Run:
    """Everything about a run in progress; handed to ``configure_trainer``/``on_run_end``.
    Built complete by :func:`prepare` (``train`` adds its terminal), not changed afterwards."""

    config: RunConfig
    task: Any
    strategy: Any
    plugins: Plugins
    run_dir: Path
    model_path: str = ""
    resumed_from: str | None = None   # checkpoint folder a --resume continued from
    replace: bool = False             # the existing output_dir is replaced (--overwrite, or a failed run)
    precision: dict = field(default_factory=dict)   # {"requested", "used", "why"}: what trained the model
    state: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)   # name -> tunesmith.data.Split
    started_at: float = field(default_factory=time.time)
    terminal: Any = field(default=None, repr=False, compare=False)   # tunesmith.progress.Terminal of train()


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict                 # final validation metrics ("eval" in metrics.json)
    history: list
    trainable_parameters: int
    total_parameters: int
    train_runtime_s: float
    test_metrics: dict | None = None
    model: Any = field(default=None, repr=False)       # the trained model, in memory
    tokenizer: Any = field(default=None, repr=False)
    steps: list = field(default_factory=list, repr=False)   # training loss per logged step


def main_metric(task, state: dict) -> str:
    pick = member(task, "main_metric_for")
    return pick(state) if pick else task.main_metric


SETUP_ROWS = 10_000   # what a streaming run's task.setup sees: the first rows of the stream


def _first(split: data.Split, limit: int | None) -> None:
    if limit is not None:
        ds = split.dataset
        split.dataset = ds.take(limit) if split.streaming else ds.select(range(min(limit, len(ds))))


def load_data(task, cfg: RunConfig, registry) -> tuple[dict, dict[str, data.Split]]:
    """Load, check and set up every split: ``(state, {"train": Split, ...})``. Training rows are
    checked before ``setup`` (state None), the others against the state it derived."""
    opts, t = cfg.task_options, cfg.training
    train = data.load_split(cfg.data.train, "train", streaming=cfg.data.streaming, registry=registry)
    _first(train, t.max_train_samples)
    if train.streaming:   # setup and its check see the first rows; the rest is checked as it streams
        import datasets

        sample = data.Split("train", datasets.Dataset.from_list(list(train.dataset.take(SETUP_ROWS))),
                            train.where, train.files, train.builder, source=train.source)
        data.check(sample, task, opts, None)
        setup_on = sample
    else:
        data.check(train, task, opts, None)
        setup_on = train
    try:
        state = task.setup(setup_on.dataset, opts)
    except RowError as exc:
        raise DataError(str(exc), file=train.where, field=exc.field) from None
    if train.streaming:
        train.dataset = data.checked_stream(train, task, opts, state)
    splits = {"train": train}
    for key, limit in (("validation", t.max_eval_samples), ("test", None)):
        spec = getattr(cfg.data, key)
        if spec is None:
            continue
        split = data.load_split(spec, key, registry=registry)   # evaluation data is never streamed: it is scored whole
        _first(split, limit)
        data.check(split, task, opts, state)
        splits[key] = split
    return state, splits


def prepare(config, overrides=(), plugins: Plugins | None = None, overwrite: bool = False,
            resume: bool = False, data_splits=None) -> Run:
    """Validate config, plugins, data and model reference; the :class:`Run`, built here
    once and complete. Nothing is written."""
    plugins = plugins or load_plugins()
    if isinstance(config, (str, os.PathLike)) and Path(config).is_dir():
        if not resume:
            raise RunDirError(f"{str(config)!r} is a directory; give a config file, or add --resume "
                              "to continue the run in it")
        manifest = rundir.read_manifest(config)   # resume a run dir: its own recorded config
        config = {**manifest["config"], "output_dir": str(config)}
    cfg = load_config(config, overrides, registry=plugins.registry, data=data_splits)
    task = plugins.registry.task(cfg.task)
    strategy = plugins.registry.strategy(cfg.strategy.name)
    run_dir = Path(cfg.output_dir)
    resuming = resume and run_dir.is_dir() and any(run_dir.iterdir())
    replace = _check_output_dir(cfg, run_dir, overwrite, resume, resuming)
    state, splits = load_data(task, cfg, plugins.registry)
    if resuming:
        _check_resumable(run_dir, splits)
    model_path = plugins.registry.model_source_for(cfg.model).resolve(cfg.model)
    if replace and not resume and run_dir.exists():
        rundir.check_replaceable(run_dir, [model_path])   # never the base model's own folder
    resume_from = checkpoints.latest_valid(run_dir)[0] if resume else None
    return Run(cfg, task, strategy, plugins, run_dir, model_path=model_path, replace=replace,
               resumed_from=str(resume_from) if resume_from else None,
               precision=choose_precision(cfg, task, strategy), state=state, splits=splits)


def _check_output_dir(cfg: RunConfig, run_dir: Path, overwrite: bool, resume: bool, resuming: bool) -> bool:
    """Whether the existing ``output_dir`` is replaced; raise if it may not be used."""
    replace = False
    if resuming:
        rundir.read_manifest(run_dir)   # a foreign or corrupt folder fails before any data is read
    # under torchrun/accelerate only rank 0 checks the run dir (no race with itself)
    elif is_main_process() and run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        # a failed run with nothing to resume is replaced by running again (docs/errors.md)
        replace = overwrite or (not resume and lifecycle.rerunnable(run_dir))
        if not replace:
            hint = ", pass --overwrite, or --resume to continue it" if rundir.is_run_dir(run_dir) else ""
            raise RunDirError(f"output_dir {str(run_dir)!r} already exists; choose another{hint}")
        rundir.check_replaceable(run_dir, [cfg.source, *(s for s in (cfg.data.train, cfg.data.validation,
                                                                     cfg.data.test) if isinstance(s, str))])
    lifecycle.check_creatable(run_dir)
    return replace


def _check_resumable(run_dir: Path, splits: dict) -> None:
    """Only a run of this tool, not yet complete, on the same data, may be continued."""
    manifest = rundir.read_manifest(run_dir)
    if manifest.get("status") == "complete":
        if not (run_dir / rundir.MODEL).is_dir():
            raise RunDirError(f"{str(run_dir)!r}: the run completed but its {rundir.MODEL}/ folder is missing "
                              "(deleted?); nothing to resume; train it again with --overwrite")
        raise RunDirError(f"{str(run_dir)!r}: the run is already complete; nothing to resume")
    for key, old in (manifest.get("data") or {}).items():
        new = splits.get(key)
        for what in ("sha256", "fingerprint"):
            if new is not None and old.get(what) and new.record.get(what) and old[what] != new.record[what]:
                raise RunDirError(f"{new.where}: the {key} data changed since the run started "
                                  f"({what} differs from {run_dir / rundir.MANIFEST}); cannot resume")


def load_kwargs(cfg: RunConfig) -> dict:
    return {"trust_remote_code": cfg.trust_remote_code}


def load_tokenizer(path: str, cfg_or_trust) -> Any:
    from transformers import AutoTokenizer

    trust = cfg_or_trust if isinstance(cfg_or_trust, bool) else cfg_or_trust.trust_remote_code
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"cannot load a tokenizer from {path!r}: {first_line(exc)}") from None
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token   # decoder-only LMs ship without a pad token
    return tok


def build_model(run: Run, tokenizer) -> Any:
    cfg = run.config
    from safetensors import SafetensorError

    try:
        model = run.task.build_model(run.model_path, tokenizer, run.state, cfg.task_options, load_kwargs(cfg))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        # truncated/corrupt weights or a config that does not match them: the user's files,
        # so one clear line; the cause stays chained for --debug
        raise ModelError(f"cannot load model {cfg.model!r} for task {cfg.task!r}: "
                         f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}") from exc
    precision.cpu_attention(model, run.precision.get("used", "fp32"), "cuda" if _has_accelerator() else "cpu")
    return run.strategy.apply(model, run.task, cfg.strategy_options)


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


@dataclass
class _Job:
    """What training needs besides the :class:`Run`: built before the run directory exists."""

    tokenizer: Any
    model: Any                # the model to save; the Trainer trains ``swap.model`` when swapped
    datasets: dict            # encoded splits: "train", "validation" and maybe "test"
    collator: Any
    args: Any                 # transformers.TrainingArguments
    swap: Any = None          # what the strategy's swap_for_training returned (None: no swap)


def train(config, overrides=(), *, plugins: Plugins | None = None, overwrite: bool = False,
          quiet: bool = False, resume: bool = False, data=None) -> RunResult:
    """Fine-tune a model as ``config`` (path, mapping or RunConfig) says.

    :param overrides: ``["training.epochs=1", ...]`` applied on top of the config.
    :param overwrite: replace an existing ``output_dir``.
    :param resume: continue the run in ``output_dir`` from its newest complete checkpoint
        (``config`` may also be that run directory).
    :param data: in-memory data instead of ``data.train``/``validation``/``test``: a
        ``datasets.DatasetDict`` (its train/validation/test splits) or a mapping of split
        name to a ``Dataset``, ``IterableDataset`` or pandas ``DataFrame``.
    :return: the :class:`RunResult`; the run directory holds everything else.
    """
    term = progress.Terminal(quiet)   # stderr: labelled phases (before the data's own bars)
    begun = time.time()
    run = prepare(config, overrides, plugins, overwrite, resume, data_splits=data)
    run = dataclasses.replace(run, terminal=term)   # the terminal plugin draws the Trainer's bars on it
    job = _build(run, quiet, term)
    _start(run, overwrite, resume)
    # stdout carries the result only: the Trainer's log lines and anything a plugin prints
    # while training go to stderr
    with lifecycle.marks_failure(run, is_main_process()), contextlib.redirect_stdout(sys.stderr):
        trainer, stop = _trainer(run, job)
        runtime = _fit(run, trainer, stop, resume) + (job.swap.seconds if job.swap else 0.0)
        result = _finish(run, job, trainer, runtime, term)
    progress.summary(term, run, result, time.time() - begun)
    return result


def _build(run: Run, quiet: bool, term) -> _Job:
    """Tokenizer, model (strategy applied), encoded splits, the last checks, and the
    strategy's swap: everything that can fail before the run directory is created."""
    import transformers

    progress.silence_libraries()
    progress.say_data(term, run.splits)   # after the last config check: a mistake stays one line
    transformers.set_seed(run.config.training.seed)
    loading = time.time()
    tokenizer = load_tokenizer(run.model_path, run.config)
    with progress.load_report() as report:
        model = build_model(run, tokenizer)
    progress.say_model(term, run, model, report, time.time() - loading)
    encoded: dict = {}
    with term.preprocessing(), term.phase("preprocess", lambda: progress.encoded_text(encoded)):
        for name, split in run.splits.items():
            encoded[name] = encode_split(run, split, tokenizer, train=name == "train")
    args = lifecycle.preflight(run, model, [encoded.get(k) for k in ("train", "validation", "test")], quiet)
    collator = run.task.collator(tokenizer, run.config.task_options)
    lifecycle.check_main_metric(run, model, encoded["validation"], collator)   # a wrong name fails now
    # e.g. frozen: backbone features computed once, the head trains on them
    swap_for_training = member(run.strategy, "swap_for_training")
    swap = swap_for_training(model, encoded, collator, run) if swap_for_training else None
    return _Job(tokenizer, model, encoded, collator, args, swap)


def _start(run: Run, overwrite: bool, resume: bool) -> None:
    """Create the run directory (rank 0 only) and say what happens to what was there."""
    if resume:
        broken = checkpoints.latest_valid(run.run_dir)[1]
        if broken:   # half-written by a crash: never loaded, and out of the rotation's way
            print(f"tunesmith: skipping incomplete checkpoint(s): {', '.join(p.name for p in broken)}",
                  file=sys.stderr)
            if is_main_process():
                checkpoints.discard(broken)
        if run.resumed_from is None:
            print(f"tunesmith: no complete checkpoint in {str(run.run_dir)!r}; starting from step 0",
                  file=sys.stderr)
    if is_main_process():   # only rank 0 writes the run dir (torchrun / accelerate launch)
        if run.replace and not overwrite and not resume:
            lifecycle.note(f"replacing the failed run in {str(run.run_dir)!r} (nothing in it to resume)")
        lifecycle.start(run, run.replace, resume)


def _trainer(run: Run, job: _Job):
    """The Trainer (the task's class, if it has one) and the dict its stop callback fills."""
    import transformers
    from transformers import EarlyStoppingCallback

    task, opts, t = run.task, run.config.task_options, run.config.training
    extra_metrics = run.plugins.registry.metrics_for(task.name)
    compute = _streaming_metrics(lambda: task.metrics(run.state, opts, extra_metrics))
    stop: dict = {}
    callbacks = [EarlyStoppingCallback(t.early_stopping_patience)] if t.early_stopping_patience else []
    callbacks += [checkpoints.make_callback(t.save_steps, stop), lifecycle.finite_callback()]
    swap = job.swap
    trainer_cls = member(task, "trainer_class")
    trainer = _lengths_read_once(trainer_cls(opts, extra_metrics) if trainer_cls else transformers.Trainer)(
        model=swap.model if swap else job.model, args=job.args,
        train_dataset=(swap.datasets if swap else job.datasets)["train"],
        eval_dataset=(swap.datasets if swap else job.datasets)["validation"],
        data_collator=swap.collator if swap else job.collator, processing_class=job.tokenizer,
        compute_metrics=compute, callbacks=callbacks)
    run.plugins.call("configure_trainer", trainer=trainer, run=run)
    return trainer, stop


def _lengths_read_once(trainer_cls):
    """``trainer_cls`` whose length-grouped samplers get the ``length`` column as one list read
    in a buffered pass. The stock Trainer drops that column first (the model does not take
    it), so its sampler reads every row in Python to measure it: minutes at millions of rows,
    and the whole mapped file left resident."""
    import transformers

    def lengths(trainer, dataset, original):
        if trainer.args.train_sampling_strategy != "group_by_length":
            return None
        name = trainer.args.length_column_name
        found = data.column_list(dataset, name)
        if found is None and hasattr(original, "__len__") and len(original) == len(dataset):
            found = data.column_list(original, name)   # the same rows, before the columns were dropped
        return found

    class Trainer(trainer_cls):
        def _get_train_sampler(self, train_dataset=None):
            ds = self.train_dataset if train_dataset is None else train_dataset
            found = lengths(self, ds, self.train_dataset)
            if found is None:
                return super()._get_train_sampler(train_dataset)
            return transformers.trainer_pt_utils.LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths=found)

        if trainer_cls._get_eval_sampler is transformers.Trainer._get_eval_sampler:   # a task's own wins
            def _get_eval_sampler(self, eval_dataset):
                found = lengths(self, eval_dataset, self.eval_dataset) if eval_dataset is not None else None
                if found is None:
                    return super()._get_eval_sampler(eval_dataset)
                import torch

                seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
                return transformers.trainer_pt_utils.LengthGroupedSampler(
                    self.args.eval_batch_size, lengths=found, generator=torch.Generator().manual_seed(seed))

    Trainer.__name__ = Trainer.__qualname__ = trainer_cls.__name__
    return Trainer


def _fit(run: Run, trainer, stop: dict, resume: bool) -> float:
    """Train (from the checkpoint a --resume found); the seconds it took. A graceful stop
    leaves ``status: interrupted`` and raises TrainingInterrupted."""
    started = time.time()
    try:
        with checkpoints.graceful_stop(stop):
            trainer.train(resume_from_checkpoint=run.resumed_from)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RunDirError(f"disk full while writing checkpoints under {str(run.run_dir)!r} ({exc.strerror}); "
                              "free space, then continue with --resume") from None
        raise
    if stop.get("signal"):
        rundir.write_manifest(run, status="interrupted")
        raise TrainingInterrupted(
            f"{stop['signal']}: training stopped at step {stop.get('step')}; checkpoint saved in "
            f"{str(run.run_dir / checkpoints.CHECKPOINTS)!r}; continue with: "
            f"{lifecycle.resume_command(run.run_dir)}")
    return time.time() - started


def _finish(run: Run, job: _Job, trainer, runtime: float, term) -> RunResult:
    """The best checkpoint's metrics (and the test split's), then save the run directory."""
    hist = rundir.history(trainer.state.log_history)
    final = _best_evaluation(trainer)
    if final is None:
        final = rundir.strip_prefix(trainer.evaluate(), "eval_")
    test = None
    if "test" in job.datasets:
        test_ds = job.swap.encode(job.datasets["test"]) if job.swap else job.datasets["test"]
        test = rundir.strip_prefix(trainer.evaluate(test_ds, metric_key_prefix="test"), "test_")
    trained = job.swap.restore() if job.swap else trainer.model
    trainable, total = count_parameters(trained)
    result = RunResult(run.run_dir, final, hist, trainable, total, round(runtime, 3), test, trained, job.tokenizer,
                       steps=rundir.steps(trainer.state.log_history))
    if is_main_process():   # one writer of the run dir under torchrun/accelerate
        with term.phase("save", lambda: f"{str(run.run_dir)!r}: {', '.join(rundir.SAVED)}"):
            rundir.save(run, trained, job.tokenizer, result)
        run.plugins.call("on_run_end", run=run, result=result)
    return result


def _best_evaluation(trainer) -> dict | None:
    """The validation metrics logged when the best checkpoint (the model now loaded) was
    evaluated: the same weights on the same rows, so evaluating again would only repeat
    them (a whole pass over the validation split; generation for seq2seq/QA tasks).
    None when there is no such entry, e.g. no checkpoint was kept."""
    best = trainer.state.best_model_checkpoint
    if not best or not trainer.args.load_best_model_at_end:
        return None
    try:
        step = int(best.rstrip("/").rsplit("-", 1)[-1])
    except ValueError:
        return None
    entries = [e for e in trainer.state.log_history if e.get("step") == step and "eval_runtime" in e]
    return rundir.strip_prefix(entries[-1], "eval_") if entries else None


def encode_split(run: Run, split: data.Split, tokenizer, train: bool):
    """The task's encoding of ``split``, cached across runs (see prepcache)."""
    opts = run.config.task_options
    key = None if split.streaming else prepcache.key(run.task, split.dataset, tokenizer, run.state, opts, train)
    return data.encode(split, run.task, tokenizer, run.state, opts, train,
                       num_proc=run.config.training.num_proc, cache_key=key)


def choose_precision(cfg: RunConfig, task, strategy) -> dict:
    """``training.precision`` resolved for this machine and run (see tunesmith.precision).
    A strategy or task that loses accuracy in mixed precision says why in its optional
    ``mixed_precision_unsafe`` attribute; ``auto`` then trains in float32. ``bf16``/``fp16``
    in ``training.trainer_args`` decide last, as they do for the Trainer."""
    requested = cfg.training.precision
    unsafe = member(strategy, "mixed_precision_unsafe") or member(task, "mixed_precision_unsafe")
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if is_main_process() else (lambda msg: None)
    try:
        used, why = precision.choose(requested, "cuda" if _has_accelerator() else "cpu", unsafe=unsafe,
                                     where="training.precision", say=say)
    except ValueError as exc:
        raise ConfigError([str(exc)], source=cfg.source) from None
    extra = cfg.training.trainer_args
    given = "bf16" if extra.get("bf16", used == "bf16") else "fp16" if extra.get("fp16", used == "fp16") else "fp32"
    if given != used:
        used, why = given, "training.trainer_args"
    return {"requested": requested, "used": used, "why": why}


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available()


def _streaming_metrics(make):
    """Adapt a task's metric accumulator to the Trainer's ``batch_eval_metrics`` protocol:
    called per batch, and with ``compute_result=True`` on the last one."""
    holder: dict = {}

    def compute_metrics(eval_pred, compute_result: bool = False):
        acc = holder.get("acc")
        if acc is None:
            acc = holder["acc"] = make()
        # numpy, whatever the Trainer hands over (the same types as Predictor.evaluate)
        acc.add_batch(progress.to_numpy(eval_pred.predictions), progress.to_numpy(eval_pred.label_ids))
        if compute_result:
            del holder["acc"]
            return acc.compute()
        return {}

    return compute_metrics

