"""A run's life around its run directory: pre-flight checks before it exists, status marks after.

:func:`preflight` (before the directory), :func:`start` (``status: running``), :func:`marks_failure`
(``status: failed``), :func:`rerunnable` (a failed run with nothing to keep): docs/architecture.md.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

from . import checkpoints, data, rundir
from .errors import ConfigError, PluginError, RunDirError, TrainingInterrupted, TunesmithError, first_line
from .util import split_list
from .protocols import member


class TrainingDiverged(TunesmithError):
    """The loss or a metric became inf/nan: the numbers would be meaningless."""


# ----------------------------------------------------------------- before the run directory

def check_creatable(run_dir: Path) -> None:
    """``output_dir`` can be made: no regular file on its path, a writable parent."""
    try:
        parent = Path(os.path.abspath(run_dir))
        while not parent.exists():
            parent = parent.parent
    except (OSError, ValueError) as exc:   # a NUL byte, a name too long
        raise RunDirError(f"output_dir {str(run_dir)!r} is not a usable path: {exc}") from None
    if not parent.is_dir():
        raise RunDirError(f"output_dir {str(run_dir)!r} cannot be created: {str(parent)!r} is a file, "
                          "not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError(f"output_dir {str(run_dir)!r} cannot be created: no write permission in "
                          f"{str(parent)!r}")


def preflight(run, model, datasets, quiet: bool):
    """The checks that need the model but not training; returns the TrainingArguments."""
    check_positions(run, model, datasets)
    return training_arguments(run, quiet)


def training_arguments(run, quiet: bool):
    from transformers import TrainingArguments
    from transformers.integrations import get_reporting_integration_callbacks

    cfg, task = run.config, run.task
    t = cfg.training
    streaming = run.splits["train"].streaming
    from .runner import _has_accelerator, main_metric

    args = dict(
        output_dir=str(run.run_dir / checkpoints.CHECKPOINTS),
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
        metric_for_best_model=main_metric(task, run.state),
        greater_is_better=task.greater_is_better,
        logging_steps=t.logging_steps,
        logging_strategy="steps",
        report_to=[] if t.report_to == "none" else split_list(t.report_to),
        # a stream has no length to group by
        train_sampling_strategy="group_by_length" if t.group_by_length and not streaming else "random",
        batch_eval_metrics=True,
        disable_tqdm=True,   # tunesmith.progress draws the bars (stderr, labelled)
        dataloader_num_workers=0,
        dataloader_pin_memory=_has_accelerator(),
        use_cpu=not _has_accelerator(),   # also what makes torchrun on CPU use DDP (gloo), not N copies
        # mixed precision through the Trainer's own options: accelerate autocasts the forward
        bf16=run.precision.get("used") == "bf16",
        fp16=run.precision.get("used") == "fp16",
    )
    if t.max_steps:   # a step budget instead of epochs: evaluate and checkpoint when it is spent
        args.update(max_steps=t.max_steps, eval_strategy="steps", eval_steps=t.max_steps,
                    save_strategy="steps", save_steps=t.max_steps)
    try:   # training.trainer_args: any TrainingArguments (deepspeed, fsdp, bf16, ...) passes through
        args = TrainingArguments(**{**args, **t.trainer_args})
    except (TypeError, ValueError, OverflowError, ImportError) as exc:
        raise ConfigError([f"training.trainer_args: {first_line(exc)}"], source=cfg.source) from None
    try:   # the Trainer makes these callbacks; an unknown or uninstalled one fails there, so here
        for callback in get_reporting_integration_callbacks(args.report_to):
            callback()
    except (ValueError, RuntimeError, ImportError) as exc:
        raise ConfigError([f"training.report_to={t.report_to!r}: {first_line(exc)}"],
                          source=cfg.source) from None
    return args


def position_limit(model) -> int | None:
    """Most tokens the model's learned/sinusoidal position embeddings take (None: no
    such table, e.g. rotary or relative positions). RoBERTa-style tables start after
    the padding index, BART-style ones after an ``offset``."""
    import torch

    limits = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding) and name.rsplit(".", 1)[-1] in (
                "position_embeddings", "embed_positions", "wpe"):
            skip = getattr(module, "offset", 0) or 0
            if module.padding_idx is not None:
                skip += module.padding_idx + 1
            limits.append(module.num_embeddings - skip)
    return min(limits) if limits else None


def _longest(dataset) -> int:
    """Longest token sequence (input_ids or token labels) in an encoded dataset."""
    if not hasattr(dataset, "__len__"):
        return 0   # a stream: reading it to the end here would defeat streaming
    names = getattr(dataset, "column_names", None)
    if names is not None:   # a datasets.Dataset: the lengths from Arrow, no Python lists
        import pyarrow as pa
        import pyarrow.compute as pc

        schema = dataset.data.schema
        cols = [c for c in ("input_ids", "labels", "decoder_input_ids") if c in names
                and (pa.types.is_list(schema.field(c).type) or pa.types.is_large_list(schema.field(c).type))]
        best = 0
        for batch in (data.arrow_batches(dataset, cols) if cols else ()):
            for i in range(batch.num_columns):
                best = max(best, pc.max(pc.list_value_length(batch.column(i))).as_py() or 0)
        return best
    best = 0
    for item in dataset:
        for col in ("input_ids", "labels", "decoder_input_ids"):
            value = item.get(col) if isinstance(item, dict) else None
            if value is not None and hasattr(value, "__len__") and not isinstance(value, (str, int)):
                best = max(best, len(value))
    return best


def check_positions(run, model, datasets) -> None:
    """An input longer than the position table fails deep inside the first batch that
    holds it (an index error): report it with the option that controls the length."""
    limit = position_limit(model)
    if limit is None:
        return
    longest = max((_longest(ds) for ds in datasets if ds is not None), default=0)
    if longest <= limit:
        return
    opts = run.config.task_options
    names = [k for k, v in (vars(opts).items() if opts is not None else ())
             if k.startswith("max_") and k.endswith("length") and isinstance(v, int) and v > limit]
    fix = " or ".join(f"data.{k}={getattr(opts, k)}" for k in names)
    raise ConfigError([f"{fix or 'the data'} lets inputs reach {longest:,} tokens, but model "
                       f"{run.config.model!r} has {limit:,} positions; set "
                       f"{' and '.join(f'data.{k}' for k in names) or 'a maximum length'} to at most {limit:,}"],
                      source=run.config.source)


def check_main_metric(run, model, eval_ds, collator, rows: int = 2) -> None:
    """The task's ``main_metric`` is a key its metrics produce (or ``loss``), checked on
    the model's outputs for the first validation rows, the way the Trainer's default
    evaluation feeds them (numpy, loss dropped). A task with its own ``trainer_class``
    evaluates its own way; there the Trainer checks the name after the first evaluation."""
    if member(run.task, "trainer_class") or not hasattr(eval_ds, "__len__") or len(eval_ds) == 0:
        return
    import torch

    from .progress import to_numpy
    from .runner import main_metric

    metric = main_metric(run.task, run.state)
    task = run.task
    try:
        batch = collator([eval_ds[i] for i in range(min(rows, len(eval_ds)))])
        labels = batch.pop("labels")
        device = next(model.parameters()).device
        modes = {m: m.training for m in model.modules()}   # e.g. frozen keeps its backbone in eval mode
        model.eval()
        try:
            with torch.inference_mode():
                out = model(**{k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()})
        finally:
            for module, mode in modes.items():
                module.training = mode
        outputs = tuple(v for k, v in out.items() if k != "loss")
        acc = task.metrics(run.state, run.config.task_options, run.plugins.registry.metrics_for(task.name))
        acc.add_batch(to_numpy(outputs[0] if len(outputs) == 1 else outputs), to_numpy(labels))
        names = set(acc.compute()) | {"loss"}   # the Trainer adds the validation loss
    except Exception:   # noqa: BLE001 - only a check: the real evaluation reports its own errors
        return
    if metric not in names:
        entry = run.plugins.registry.tasks.get(task.name)
        raise PluginError(getattr(entry, "plugin", task.name),
                          f"task {task.name!r}: main_metric {metric!r} is not one of the metrics it computes "
                          f"({', '.join(sorted(names))}); set the task's main_metric to one of them")


# ----------------------------------------------------------------- the run directory

def rerunnable(run_dir: Path) -> bool:
    """A tunesmith run that failed, or whose process is gone while it said ``running``,
    with no ``model/`` and no complete checkpoint: nothing in it to keep or resume."""
    if not rundir.is_run_dir(run_dir):
        return False
    manifest = rundir.read_manifest(run_dir)
    status = manifest.get("status")
    dead = status == "running" and not _alive(manifest.get("pid"), manifest.get("host"))
    if status != "failed" and not dead:
        return False
    # only what tunesmith itself wrote there, so that a rerun deletes nothing of the user's
    if any(not _ours(p.name) for p in run_dir.iterdir()):
        return False
    return checkpoints.latest_valid(run_dir)[0] is None


def _ours(name: str) -> bool:
    return name in (rundir.MANIFEST, checkpoints.CHECKPOINTS) or name.startswith(
        (".model-", f".{rundir.MANIFEST}.", f".{rundir.METRICS}."))


def _alive(pid, host) -> bool:
    if not isinstance(pid, int) or host != socket.gethostname():
        return True   # unknown, or another machine's process: assume it still runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # EPERM: it exists, someone else's
        return True
    return True


def start(run, replace: bool, resume: bool) -> None:
    """Create the run directory (replacing the old one when allowed) and mark it running."""
    run_dir = run.run_dir
    try:
        if replace and not resume and run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            remove_stale_temporaries(run_dir)
        rundir.write_manifest(run, status="running")
    except OSError as exc:
        raise RunDirError(f"cannot create the run directory {str(run_dir)!r}: {exc.strerror or exc}") from None


def remove_stale_temporaries(run_dir: Path) -> list[str]:
    """The ``.model-*`` folder and ``.NAME.*`` files of a save that was killed midway."""
    removed = []
    for p in run_dir.iterdir():
        if p.name.startswith(".model-") and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_file() and any(p.name.startswith(f".{n}.") for n in (rundir.MANIFEST, rundir.METRICS)):
            p.unlink(missing_ok=True)
        else:
            continue
        removed.append(p.name)
    return removed


@contextmanager
def marks_failure(run, is_main: bool):
    """Whatever goes wrong after the run directory exists leaves ``status: failed``
    (a graceful stop has already written ``interrupted``)."""
    try:
        yield
    except TrainingInterrupted:
        raise
    except BaseException as exc:
        if is_main:
            if isinstance(exc, TrainingDiverged):   # its checkpoints hold or lead to NaN weights
                shutil.rmtree(run.run_dir / checkpoints.CHECKPOINTS, ignore_errors=True)
            try:
                rundir.write_manifest(run, status="failed")
            except OSError:   # e.g. the disk is still full; a dead "running" counts as failed
                pass
        raise


def finite_callback():
    """Stop at the first inf/nan training loss or evaluation metric, naming the step."""
    from transformers import TrainerCallback

    class FiniteNumbers(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            for key, value in (logs or {}).items():
                if (key in ("loss", "train_loss") or key.startswith(("eval_", "test_"))) and \
                        isinstance(value, float) and not math.isfinite(value):
                    raise TrainingDiverged(
                        f"training diverged: {key} is {value} at step {state.global_step}; the run is "
                        "marked failed; lower training.learning_rate (or check the data) and run the "
                        "same command again")
            return control

    return FiniteNumbers()


def resume_command(run_dir: Path) -> str:
    """The command that continues this run from any directory: the run directory holds
    the full config (with every ``--set`` override applied, data paths absolute)."""
    return f"tunesmith train {shlex.quote(os.path.abspath(run_dir))} --resume"


def note(message: str) -> None:
    print(f"tunesmith: {message}", file=sys.stderr, flush=True)
