"""The pipeline: resolve → load data → model → strategy → Trainer → evaluate → save.

Everything that can be checked without torch (config, plugins, data rows, the model
reference) is checked before the run directory is created, so a user mistake leaves
nothing behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import checkpoints, featurecache, precision, prepcache, rundir
from .config import RunConfig, load_config
from .data import load_rows
from .errors import ConfigError, DataError, ModelError, RowError, RunDirError, TrainingInterrupted
from .manager import Plugins, load_plugins


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
    precision: dict = field(default_factory=dict)   # {"requested", "used", "why"}: what trained the model
    state: dict = field(default_factory=dict)
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
    pick = getattr(task, "main_metric_for", None)
    return pick(state) if pick else task.main_metric


def load_split(task, cfg: RunConfig, key: str, state: dict | None, limit: int | None) -> list[dict]:
    path = getattr(cfg.data, key)
    return load_rows(path, check=lambda row: task.check_row(row, cfg.task_options, state), limit=limit)


def prepare(config, overrides=(), plugins: Plugins | None = None, overwrite: bool = False,
            resume: bool = False):
    """Validate config, plugins, data and model reference; nothing is written."""
    plugins = plugins or load_plugins()
    if isinstance(config, (str, os.PathLike)) and Path(config).is_dir():
        if not resume:
            raise RunDirError(f"{str(config)!r} is a directory; give a config file, or add --resume "
                              "to continue the run in it")
        manifest = rundir.read_manifest(config)   # resume a run dir: its own recorded config
        config = {**manifest["config"], "output_dir": str(config)}
    cfg = load_config(config, overrides, registry=plugins.registry)
    task = plugins.registry.task(cfg.task)
    strategy = plugins.registry.strategy(cfg.strategy.name)
    run_dir = Path(cfg.output_dir)
    if resume and run_dir.is_dir() and any(run_dir.iterdir()):
        _check_resumable(run_dir, cfg)
    # under torchrun/accelerate only rank 0 checks the run dir (no race with itself)
    elif is_main_process() and run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not overwrite:
            hint = ", pass --overwrite, or --resume to continue it" if rundir.is_run_dir(run_dir) else ""
            raise RunDirError(f"output_dir {str(run_dir)!r} already exists; choose another{hint}")
        rundir.check_replaceable(run_dir, [cfg.source, cfg.data.train, cfg.data.validation, cfg.data.test])
    run = Run(cfg, task, strategy, plugins, run_dir)
    train_rows = load_split(task, cfg, "train", None, cfg.training.max_train_samples)
    try:
        run.state = task.setup(train_rows, cfg.task_options)
    except RowError as exc:
        raise DataError(str(exc), file=cfg.data.train, field=exc.field) from None
    eval_rows = load_split(task, cfg, "validation", run.state, cfg.training.max_eval_samples)
    test_rows = load_split(task, cfg, "test", run.state, None) if cfg.data.test else None
    source = plugins.registry.model_source_for(cfg.model)
    run.model_path = source.resolve(cfg.model)
    if overwrite and not resume and run_dir.exists():
        rundir.check_replaceable(run_dir, [run.model_path])   # never the base model's own folder
    return run, train_rows, eval_rows, test_rows


def _check_resumable(run_dir: Path, cfg: RunConfig) -> None:
    """Only a run of this tool, not yet complete, on the same data, may be continued."""
    manifest = rundir.read_manifest(run_dir)
    if manifest.get("status") == "complete":
        raise RunDirError(f"{str(run_dir)!r}: the run is already complete; nothing to resume")
    for key, old in (manifest.get("data") or {}).items():
        path = getattr(cfg.data, key, None)
        if path and os.path.isfile(path) and rundir.sha256(path) != old.get("sha256"):
            raise RunDirError(f"{path}: the {key} data changed since the run started "
                              f"(sha256 differs from {run_dir / rundir.MANIFEST}); cannot resume")


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
          quiet: bool = False, resume: bool = False) -> RunResult:
    """Fine-tune a model as ``config`` (path, mapping or RunConfig) says.

    :param overrides: ``["training.epochs=1", ...]`` applied on top of the config.
    :param overwrite: replace an existing ``output_dir``.
    :param resume: continue the run in ``output_dir`` from its newest complete checkpoint
        (``config`` may also be that run directory).
    :return: the :class:`RunResult`; the run directory holds everything else.
    """
    run, train_rows, eval_rows, test_rows = prepare(config, overrides, plugins, overwrite, resume)
    cfg, task = run.config, run.task

    import transformers
    from transformers import EarlyStoppingCallback, TrainingArguments

    if quiet:
        quiet_libraries()
    run.precision = choose_precision(run)
    transformers.set_seed(cfg.training.seed)
    tokenizer = load_tokenizer(run.model_path, cfg)
    model = build_model(run, tokenizer)
    opts = cfg.task_options
    train_ds = prepcache.encode(task, train_rows, tokenizer, run.state, opts, train=True)
    eval_ds = prepcache.encode(task, eval_rows, tokenizer, run.state, opts, train=False)
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
        if run.run_dir.exists() and overwrite and not resume:
            shutil.rmtree(run.run_dir)
        run.run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_manifest(run, status="running")

    t = cfg.training
    metric = main_metric(task, run.state)
    extra_metrics = run.plugins.registry.metrics_for(task.name)
    compute = _streaming_metrics(lambda: task.metrics(run.state, opts, extra_metrics))
    args = dict(
        output_dir=str(run.run_dir / "checkpoints"),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        learning_rate=t.learning_rate or run.strategy.default_learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,   # a float in [0, 1) is a ratio of all steps
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        seed=t.seed,
        data_seed=t.seed,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=task.greater_is_better,
        logging_steps=t.logging_steps,
        logging_strategy="steps",
        report_to=[] if t.report_to in ("none", "") else [s.strip() for s in t.report_to.split(",")],
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        batch_eval_metrics=True,
        disable_tqdm=quiet,
        dataloader_num_workers=0,
        dataloader_pin_memory=_has_accelerator(),
        use_cpu=not _has_accelerator(),   # also what makes torchrun on CPU use DDP (gloo), not N copies
        # mixed precision through the Trainer's own options: accelerate autocasts the forward
        bf16=run.precision["used"] == "bf16",
        fp16=run.precision["used"] == "fp16",
    )
    try:   # training.trainer_args: any TrainingArguments (deepspeed, fsdp, bf16, ...) passes through
        args = TrainingArguments(**{**args, **t.trainer_args})
    except (TypeError, ValueError) as exc:
        raise ConfigError([f"training.trainer_args: {str(exc).splitlines()[0]}"], source=cfg.source) from None
    used = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    if used != run.precision["used"]:   # trainer_args' own bf16/fp16 decided
        run.precision = {**run.precision, "used": used, "why": "training.trainer_args"}

    callbacks = [EarlyStoppingCallback(t.early_stopping_patience)] if t.early_stopping_patience else []
    stop: dict = {}
    callbacks.append(checkpoints.make_callback(t.save_steps, stop))
    trainer_cls = getattr(task, "trainer_class", None)
    trainer = (trainer_cls() if trainer_cls else transformers.Trainer)(
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
            rundir.write_manifest(run, status="failed")
            raise RunDirError(f"disk full while writing checkpoints under {str(run.run_dir)!r} ({exc.strerror}); "
                              "free space, then continue with --resume") from None
        raise
    runtime = time.time() - started + (cache.seconds if cache else 0.0)
    if stop.get("signal"):
        rundir.write_manifest(run, status="interrupted")
        raise TrainingInterrupted(
            f"{stop['signal']}: training stopped at step {stop.get('step')}; checkpoint saved in "
            f"{str(run.run_dir / checkpoints.CHECKPOINTS)!r}; continue with: "
            f"tunesmith train {cfg.source or run.run_dir} --resume")
    hist = rundir.history(trainer.state.log_history)
    final = rundir.strip_prefix(trainer.evaluate(), "eval_")   # the best checkpoint, reloaded
    test = None
    if test_rows:
        test_ds = prepcache.encode(task, test_rows, tokenizer, run.state, opts, train=False)
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


def choose_precision(run: Run) -> dict:
    """``training.precision`` resolved for this machine and run (see tunesmith.precision).
    A strategy or task that loses accuracy in mixed precision says why in its optional
    ``mixed_precision_unsafe`` attribute; ``auto`` then trains in float32."""
    cfg = run.config
    requested = cfg.training.precision
    unsafe = getattr(run.strategy, "mixed_precision_unsafe", None) or getattr(run.task, "mixed_precision_unsafe", None)
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

