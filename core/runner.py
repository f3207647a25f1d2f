"""The pipeline: resolve → load data → model → strategy → Trainer → evaluate → save.

Everything that can be checked without torch (config, plugins, data rows, the model
reference) is checked before the run directory is created, so a user mistake leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import checkpoints, data, featurecache, lifecycle, precision, prepcache, rundir
from .config import RunConfig, load_config
from .errors import ConfigError, DataError, ModelError, RowError, RunDirError, TrainingInterrupted
from .manager import Plugins, load_plugins
from .protocols import member


@dataclass
class Run:
    """Everything about a run in progress; handed to ``configure_trainer``/``on_run_end``."""

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


def main_metric(task, state: dict) -> str:
    pick = member(task, "main_metric_for")
    return pick(state) if pick else task.main_metric


SETUP_ROWS = 10_000   # what a streaming run's task.setup sees: the first rows of the stream


def _first(split: data.Split, limit: int | None) -> None:
    if limit is not None:
        ds = split.dataset
        split.dataset = ds.take(limit) if split.streaming else ds.select(range(min(limit, len(ds))))


def load_data(task, cfg: RunConfig) -> tuple[dict, dict[str, data.Split]]:
    """Load, check and set up every split: ``(state, {"train": Split, ...})``. Training rows are
    checked before ``setup`` (state None), the others against the state it derived."""
    opts, t = cfg.task_options, cfg.training
    train = data.load_split(cfg.data.train, "train", streaming=cfg.data.streaming)
    _first(train, t.max_train_samples)
    if train.streaming:   # setup and its check see the first rows; the rest is checked as it streams
        import datasets

        sample = data.Split("train", datasets.Dataset.from_list(list(train.dataset.take(SETUP_ROWS))),
                            train.where, train.files, train.builder)
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
        split = data.load_split(spec, key)   # evaluation data is never streamed: it is scored whole
        _first(split, limit)
        data.check(split, task, opts, state)
        splits[key] = split
    return state, splits


def prepare(config, overrides=(), plugins: Plugins | None = None, overwrite: bool = False,
            resume: bool = False, data_splits=None):
    """Validate config, plugins, data and model reference; nothing is written."""
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
    run_dir, replace = Path(cfg.output_dir), False
    resuming = resume and run_dir.is_dir() and any(run_dir.iterdir())
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
    run = Run(cfg, task, strategy, plugins, run_dir, replace=replace)
    run.state, run.splits = load_data(task, cfg)
    if resuming:
        _check_resumable(run_dir, run.splits)
    source = plugins.registry.model_source_for(cfg.model)
    run.model_path = source.resolve(cfg.model)
    if run.replace and not resume and run_dir.exists():
        rundir.check_replaceable(run_dir, [run.model_path])   # never the base model's own folder
    return run


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
        raise ModelError(f"cannot load a tokenizer from {path!r}: {str(exc).splitlines()[0]}") from None
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
    return run.strategy.apply(model, run.task, cfg.strategy_options)


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


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
    if quiet:   # before the data loads (its "Generating train split" bars)
        import datasets

        datasets.disable_progress_bars()
    run = prepare(config, overrides, plugins, overwrite, resume, data_splits=data)
    cfg, task = run.config, run.task

    import transformers

    if quiet:
        quiet_libraries()
    run.precision = choose_precision(run)
    transformers.set_seed(cfg.training.seed)
    tokenizer = load_tokenizer(run.model_path, cfg)
    model = build_model(run, tokenizer)
    opts = cfg.task_options
    train_ds = encode_split(run, run.splits["train"], tokenizer, train=True)
    eval_ds = encode_split(run, run.splits["validation"], tokenizer, train=False)
    test_ds = encode_split(run, run.splits["test"], tokenizer, train=False) if "test" in run.splits else None
    # the last checks that can fail without training; after them the run directory exists
    args = lifecycle.preflight(run, model, [train_ds, eval_ds, test_ds], quiet)
    collator = task.collator(tokenizer, opts)
    # frozen backbone: features computed once, the head trains on them (None: normal path)
    cache = featurecache.setup(run, model, train_ds, eval_ds, collator, cfg.training.eval_batch_size)
    trainer_model = model
    if cache is not None:
        trainer_model, train_ds, eval_ds, collator = cache.model, cache.train, cache.eval, cache.collator

    resume_from = None
    if resume:
        resume_from, broken = checkpoints.latest_valid(run.run_dir)
        if broken:   # half-written by a crash: never loaded, and out of the rotation's way
            print(f"tunesmith: skipping incomplete checkpoint(s): {', '.join(p.name for p in broken)}",
                  file=sys.stderr)
            if is_main_process():
                checkpoints.discard(broken)
        if resume_from is None:
            print(f"tunesmith: no complete checkpoint in {str(run.run_dir)!r}; starting from step 0",
                  file=sys.stderr)
        run.resumed_from = str(resume_from) if resume_from else None
    if is_main_process():   # only rank 0 writes the run dir (torchrun / accelerate launch)
        if run.replace and not overwrite and not resume:
            lifecycle.note(f"replacing the failed run in {str(run.run_dir)!r} (nothing in it to resume)")
        lifecycle.start(run, run.replace, resume)
    # stdout carries the result only: the Trainer's log lines (printed with progress bars
    # on) and anything a plugin prints while training go to stderr
    with lifecycle.marks_failure(run, is_main_process()), contextlib.redirect_stdout(sys.stderr):
        return _train(run, trainer_model, tokenizer, args, train_ds, eval_ds, test_ds, collator, cache,
                      resume_from, quiet)


def _train(run, trainer_model, tokenizer, args, train_ds, eval_ds, test_ds, collator, cache,
           resume_from, quiet) -> RunResult:
    """Train, evaluate, save: everything that runs while the run directory exists."""
    import transformers
    from transformers import EarlyStoppingCallback

    cfg, task, opts, t = run.config, run.task, run.config.task_options, run.config.training
    extra_metrics = run.plugins.registry.metrics_for(task.name)
    compute = _streaming_metrics(lambda: task.metrics(run.state, opts, extra_metrics))
    callbacks = [EarlyStoppingCallback(t.early_stopping_patience)] if t.early_stopping_patience else []
    stop: dict = {}
    callbacks += [checkpoints.make_callback(t.save_steps, stop), lifecycle.finite_callback()]
    trainer_cls = member(task, "trainer_class")
    trainer = (trainer_cls(opts, extra_metrics) if trainer_cls else transformers.Trainer)(
        model=trainer_model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=collator, processing_class=tokenizer,
        compute_metrics=compute, callbacks=callbacks)
    if quiet:   # with progress bars off the Trainer prints every log dict on stdout instead
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    run.plugins.call("configure_trainer", trainer=trainer, run=run)

    started = time.time()
    try:
        with checkpoints.graceful_stop(stop):
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RunDirError(f"disk full while writing checkpoints under {str(run.run_dir)!r} ({exc.strerror}); "
                              "free space, then continue with --resume") from None
        raise
    runtime = time.time() - started + (cache.seconds if cache else 0.0)
    if stop.get("signal"):
        rundir.write_manifest(run, status="interrupted")
        raise TrainingInterrupted(
            f"{stop['signal']}: training stopped at step {stop.get('step')}; checkpoint saved in "
            f"{str(run.run_dir / checkpoints.CHECKPOINTS)!r}; continue with: "
            f"{lifecycle.resume_command(run.run_dir)}")
    hist = rundir.history(trainer.state.log_history)
    final = rundir.strip_prefix(trainer.evaluate(), "eval_")   # the best checkpoint, reloaded
    test = None
    if test_ds is not None:
        test_ds = cache.encode(test_ds) if cache else test_ds
        test = rundir.strip_prefix(trainer.evaluate(test_ds, metric_key_prefix="test"), "test_")
    trained = cache.unwrap() if cache else trainer.model
    if cache:   # the Trainer autocast only the cached head: the in-memory model runs as it trained
        precision.wrap_forward(trained, run.precision["used"], next(trained.parameters()).device.type)
    trainable, total = count_parameters(trained)
    result = RunResult(run.run_dir, final, hist, trainable, total,
                       round(runtime, 3), test, trained, tokenizer)
    if trainer.is_world_process_zero():   # one writer of the run dir under torchrun/accelerate
        rundir.save(run, trained, tokenizer, result)
        run.plugins.call("on_run_end", run=run, result=result)
    return result


def encode_split(run: Run, split: data.Split, tokenizer, train: bool):
    """The task's encoding of ``split``, cached across runs (see prepcache)."""
    opts = run.config.task_options
    key = None if split.streaming else prepcache.key(run.task, split.dataset, tokenizer, run.state, opts, train)
    return data.encode(split, run.task, tokenizer, run.state, opts, train,
                       num_proc=run.config.training.num_proc, cache_key=key)


def choose_precision(run: Run) -> dict:
    """``training.precision`` resolved for this machine and run (see tunesmith.precision).
    A strategy or task that loses accuracy in mixed precision says why in its optional
    ``mixed_precision_unsafe`` attribute; ``auto`` then trains in float32."""
    cfg = run.config
    requested = cfg.training.precision
    unsafe = member(run.strategy, "mixed_precision_unsafe") or member(run.task, "mixed_precision_unsafe")
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if is_main_process() else (lambda msg: None)
    try:
        used, why = precision.choose(requested, "cuda" if _has_accelerator() else "cpu", unsafe=unsafe,
                                     where="training.precision", say=say)
    except ValueError as exc:
        raise ConfigError([str(exc)], source=cfg.source) from None
    return {"requested": requested, "used": used, "why": why}


def quiet_libraries() -> None:
    """Only tunesmith's own messages on stderr: no load reports or progress bars from
    transformers (e.g. "Loading weights") or datasets (the preprocessing cache's saves)."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def is_main_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch (or a plain single process)."""
    return int(os.environ.get("RANK", "0")) == 0


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
        acc.add_batch(eval_pred.predictions, eval_pred.label_ids)
        if compute_result:
            del holder["acc"]
            return acc.compute()
        return {}

    return compute_metrics

