"""The checks of the conformance kit: what every task and strategy must do.

- :func:`check_registers`: registered once, under a unique slug name, satisfying the
  protocol, with an options dataclass that builds from defaults;
- :func:`check_roundtrip`: train a few steps → save → reload → identical predictions
  and metrics (in memory, reloaded, any batch size);
- :func:`check_resume`: a run resumed from its first checkpoint in ``checkpoints/``
  (``transformers.Trainer.train(resume_from_checkpoint=...)``) ends exactly where the
  uninterrupted run ended;
- :func:`check_bad_rows`: malformed data rows give a :class:`tunesmith.TunesmithError`
  naming file, line and field before any model is built; rows the task accepts do
  not crash later inside the tokenizer, the collator or the model;
- :func:`check_bad_inputs`: malformed prediction inputs give a TunesmithError.

:func:`check_task` and :func:`check_strategy` run them all. Failures are
``AssertionError`` with a message saying which part of the contract broke.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable

from ..errors import RowError, TunesmithError
from ..manager import Plugins, hookimpl, load_plugins
from ..protocols import Strategy, Task, member
from .models import write_jsonl

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
DEFAULT_BAD_INPUTS = ({}, 42, None, [], {"unexpected": "column"})


# ------------------------------------------------------------------ helpers

def fresh_plugins(*extra, disable: Iterable[str] = ()) -> Plugins:
    """A new plugin manager from the installed entry points, plus ``extra`` plugin
    objects (modules) not installed yet, e.g. while developing a plugin in place."""
    plugins = load_plugins(disable=disable)
    for obj in extra:
        if plugins.pm.is_registered(obj):
            continue   # installed: already loaded through its entry point
        name = getattr(obj, "__name__", type(obj).__name__)
        plugins.add(obj, name, "(local)", str(getattr(obj, "__version__", "")))
    return plugins


def tiny_run_config(task: str, model, train, validation, output_dir, strategy: str = "full",
                **training) -> dict:
    """A run configuration that trains in seconds on a tiny model."""
    options = {"layers": 1} if strategy == "partial" else {}
    return {"task": task, "model": str(model), "output_dir": str(output_dir),
            "data": {"train": str(train), "validation": str(validation)},
            "strategy": {"name": strategy, **options},
            "training": {"epochs": 1, "batch_size": 8, "eval_batch_size": 16, "learning_rate": 1e-3,
                         "logging_steps": 2, **training}}


def _with(config: dict, **changes) -> dict:
    cfg = copy.deepcopy(config)
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def _close(a: Any, b: Any, where: str = "prediction", rel: float = 1e-4, abs_: float = 1e-5) -> str | None:
    """None when ``a`` and ``b`` are equal (floats within tolerance), else where they differ."""
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
                math.isclose(a, b, rel_tol=rel, abs_tol=abs_):
            return None
        return f"{where}: {a!r} != {b!r}"
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            diff = _close(a[k], b[k], f"{where}[{k!r}]", rel, abs_)
            if diff:
                return diff
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: {len(a)} items != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            diff = _close(x, y, f"{where}[{i}]", rel, abs_)
            if diff:
                return diff
        return None
    return None if a == b else f"{where}: {a!r} != {b!r}"


def _read_rows(path, limit: int | None = None) -> list[dict]:
    from tunesmith.plugins.data_sources import iter_raw_rows

    rows = []
    for _, row in iter_raw_rows(str(path)):
        rows.append(row)
        if limit and len(rows) >= limit:
            break
    return rows


# ------------------------------------------------------------------ checks

def check_registers(kind: str, name: str, plugins: Plugins | None = None):
    """The ``task`` or ``strategy`` ``name`` is registered exactly once, under a slug
    name, satisfies the protocol, and its options dataclass builds from defaults.
    Returns the registry entry (``entry.plugin``, ``entry.distribution``, ...)."""
    if kind not in ("task", "strategy"):
        raise ValueError(f"kind must be 'task' or 'strategy', got {kind!r}")
    plugins = plugins or fresh_plugins()
    registry = plugins.registry   # a duplicate name raises PluginError naming both plugins
    table = registry.tasks if kind == "task" else registry.strategies
    assert name in table, (f"{kind} {name!r} is not registered; registered: {sorted(table)}; "
                           f"failed plugins: {[(f.name, f.error) for f in plugins.failures]}")
    entry = table[name]
    obj = entry.obj
    assert NAME.match(name), f"{kind} name {name!r} should be a lower-case slug (a-z, 0-9, -, _, .)"
    protocol = Task if kind == "task" else Strategy
    missing = [a for a in _protocol_members(protocol) if not hasattr(obj, a)]
    assert not missing, f"{kind} {name!r} lacks {missing} of tunesmith.{protocol.__name__}"
    assert dataclasses.is_dataclass(obj.options) and isinstance(obj.options, type), \
        f"{kind} {name!r}: 'options' must be a dataclass (the {'data' if kind == 'task' else 'strategy'}.* options)"
    try:
        obj.options()
    except TypeError as exc:
        raise AssertionError(f"{kind} {name!r}: every option needs a default ({exc})") from None
    if kind == "task":
        for alias in member(obj, "aliases"):
            assert registry.aliases.get(alias) == name, f"alias {alias!r} of {name!r} is not registered"
        assert isinstance(obj.main_metric, str) and obj.main_metric, f"task {name!r}: main_metric must be a name"
    else:
        assert isinstance(obj.default_learning_rate, float) and obj.default_learning_rate > 0, \
            f"strategy {name!r}: default_learning_rate must be a positive float"
    return entry


def _protocol_members(protocol) -> list[str]:
    names = set(getattr(protocol, "__annotations__", {}))
    names |= {n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")}
    return sorted(names)


def check_roundtrip(config: dict, plugins: Plugins | None = None, inputs: list | None = None):
    """Train as ``config`` says (keep it tiny), then: the run directory is complete;
    predictions of the in-memory model, of the reloaded run and of a second reload
    with another batch size are identical; ``Predictor.evaluate`` on the validation
    file reproduces ``metrics.json``. Returns the :class:`tunesmith.RunResult`."""
    import tunesmith
    from ..runner import main_metric

    plugins = plugins or fresh_plugins()
    result = tunesmith.train(config, plugins=plugins, overwrite=True, quiet=True)
    run_dir = Path(result.run_dir)
    for part in ("tunesmith.json", "metrics.json", "model", "checkpoints"):
        assert (run_dir / part).exists(), f"the run directory lacks {part}"
    assert not list(run_dir.glob(".model-*")), "a temporary model folder was left behind"
    saved = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    manifest = json.loads((run_dir / "tunesmith.json").read_text(encoding="utf-8"))
    task = plugins.registry.task(manifest["task"])
    state = manifest["task_state"]
    metric = main_metric(task, state)
    assert metric in saved["eval"], f"main metric {metric!r} missing from metrics.json eval: {sorted(saved['eval'])}"
    assert 0 < saved["trainable_parameters"] <= saved["total_parameters"]
    json.dumps(state)   # the task state must be JSON (it lives in the manifest)

    predictor = tunesmith.load(run_dir, plugins=plugins)
    if inputs is None:
        inputs = _read_rows(config["data"]["validation"], limit=24)
    result.model.eval()
    in_memory = task.predict(result.model, result.tokenizer, copy.deepcopy(inputs), state,
                             predictor.options, 8)
    reloaded = predictor.predict(copy.deepcopy(inputs), batch_size=8)
    assert len(reloaded) == len(inputs), f"{len(inputs)} inputs gave {len(reloaded)} predictions"
    json.dumps(reloaded)   # answers must be JSON-serialisable (predict --output, serve)
    diff = _close(in_memory, reloaded, "in-memory vs reloaded")
    assert diff is None, f"the reloaded model predicts differently: {diff}"
    again = tunesmith.load(run_dir, plugins=plugins).predict(copy.deepcopy(inputs), batch_size=3)
    diff = _close(reloaded, again, "batch 8 vs batch 3")
    assert diff is None, f"predictions depend on the batch (padding?) or the reload: {diff}"
    evaluated = predictor.evaluate(config["data"]["validation"])
    diff = _close(saved["eval"][metric], evaluated[metric], f"metrics.json vs evaluate {metric!r}", 1e-6, 1e-6)
    assert diff is None, f"evaluating the reloaded run does not reproduce metrics.json: {diff}"
    return result


class _ResumeFrom:
    """A plugin whose ``configure_trainer`` makes the run's ``trainer.train()`` resume
    from ``checkpoint`` (``resume_from_checkpoint``, the Trainer's own mechanism)."""

    def __init__(self, checkpoint: Path):
        self.checkpoint = str(checkpoint)
        self.resumed_at: int | None = None

    @hookimpl
    def configure_trainer(self, trainer, run):
        original = trainer.train

        def train(*args, **kwargs):
            kwargs["resume_from_checkpoint"] = self.checkpoint
            return original(*args, **kwargs)

        trainer.train = train
        state = json.loads((Path(self.checkpoint) / "trainer_state.json").read_text())
        self.resumed_at = state["global_step"]
        trainer.add_callback(self._counter())

    def _counter(self):
        from transformers import TrainerCallback

        outer = self
        outer.steps_run = 0

        class CountSteps(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                outer.steps_run += 1

        return CountSteps()


def check_resume(config: dict, plugins: Plugins | None = None, inputs: list | None = None):
    """Train 2 epochs (checkpoints each epoch in ``RUN_DIR/checkpoints``); train again,
    resuming from the epoch-1 checkpoint of the first run; the resumed run must end
    with the same metrics and predictions. Returns both RunResults."""
    import tunesmith

    base = _with(config, training__epochs=2, training__save_total_limit=3,
                 training__early_stopping_patience=None)
    out = Path(base["output_dir"])
    full_cfg = _with(base, output_dir=str(out.with_name(out.name + "-uninterrupted")))
    plugins = plugins or fresh_plugins()
    full = tunesmith.train(full_cfg, plugins=plugins, overwrite=True, quiet=True)
    ckpts = sorted(Path(full.run_dir, "checkpoints").glob("checkpoint-*"),
                   key=lambda p: int(p.name.rsplit("-", 1)[1]))
    assert len(ckpts) >= 2, f"expected a checkpoint per epoch in checkpoints/, found {[p.name for p in ckpts]}"
    first = ckpts[0]

    resumer = _ResumeFrom(first)
    again = fresh_plugins()
    for name, info in plugins.infos.items():   # the same plugins as the first run (incl. local ones)
        obj = plugins.pm.get_plugin(name)
        if obj is not None and not again.pm.is_registered(obj):
            again.add(obj, name, info.distribution, info.version)
    again.add(resumer, "tunesmith-testing-resume")
    resumed_cfg = _with(base, output_dir=str(out.with_name(out.name + "-resumed")))
    resumed = tunesmith.train(resumed_cfg, plugins=again, overwrite=True, quiet=True)
    final_step = full.history[-1]["step"]
    assert resumer.resumed_at and resumer.steps_run == final_step - resumer.resumed_at, \
        (f"the resumed run trained {resumer.steps_run} steps; resuming at step {resumer.resumed_at} "
         f"of {final_step} should train {final_step - (resumer.resumed_at or 0)}")
    steps = [h["step"] for h in resumed.history]
    assert steps and steps[-1] == final_step, \
        f"resumed run ended at step {steps[-1:]}, the uninterrupted one at {final_step}"
    diff = _close(full.metrics, resumed.metrics, "metrics", 1e-4, 1e-5)
    assert diff is None, f"resuming from {first.name} does not reproduce the uninterrupted run: {diff}"
    if inputs is None:
        inputs = _read_rows(config["data"]["validation"], limit=16)
    a = tunesmith.load(full.run_dir, plugins=plugins).predict(copy.deepcopy(inputs))
    b = tunesmith.load(resumed.run_dir, plugins=again).predict(copy.deepcopy(inputs))
    diff = _close(a, b, "uninterrupted vs resumed")
    assert diff is None, f"resumed run predicts differently: {diff}"
    return full, resumed


def _mutations(row: dict) -> list[tuple[str, str, dict]]:
    """(description, field, bad row) variants of a valid row."""
    out = []
    for key, value in row.items():
        missing = {k: v for k, v in row.items() if k != key}
        out.append((f"without {key!r}", key, missing))
        out.append((f"{key!r} = None", key, {**row, key: None}))
        wrong = {str: 12345, bool: "yes", int: "not-a-number", float: "not-a-number",
                 list: "not a list", dict: "not an object"}.get(type(value), [value])
        out.append((f"{key!r} of the wrong type", key, {**row, key: wrong}))
        if isinstance(value, str):
            out.append((f"{key!r} empty", key, {**row, key: ""}))
        if isinstance(value, list) and value:
            out.append((f"{key!r} one item short", key, {**row, key: value[:-1]}))
            out.append((f"{key!r} with a null item", key, {**row, key: [*value[:-1], None]}))
            out.append((f"{key!r} empty list", key, {**row, key: []}))
        if isinstance(value, dict):
            out.append((f"{key!r} empty object", key, {**row, key: {}}))
    out.append(("an empty object", None, {}))
    return out


def check_bad_rows(config: dict, plugins: Plugins | None = None,
                   bad_rows: Iterable[tuple[dict, str | None]] = (), tmp_dir=None) -> list[str]:
    """Malformed training rows are reported clearly.

    Every ``(row, field)`` in ``bad_rows`` must be refused with a TunesmithError naming
    the data file, the line (or the file for whole-file problems) and ``field``.
    Automatic variants of the first training row (a column missing, None, the wrong
    type, empty, one list item short, ...) must either be refused the same way or be
    usable: tokenised, collated and run through a tiny model without an exception.
    Nothing may be written to ``output_dir``. Returns the error messages seen."""
    from .. import runner

    plugins = plugins or fresh_plugins()
    tmp = Path(tmp_dir or Path(config["output_dir"]).parent / "bad-rows")
    tmp.mkdir(parents=True, exist_ok=True)
    good = _read_rows(config["data"]["train"], limit=16)
    messages: list[str] = []
    explicit = [(f"given bad row {i}", field, row, True) for i, (row, field) in enumerate(bad_rows)]
    auto = [(d, f, r, False) for d, f, r in _mutations(good[0])]
    accepted = []
    for n, (what, field, row, must_fail) in enumerate(explicit + auto):
        path = write_jsonl(tmp / f"train-{n}.jsonl", [*good, row])
        line = len(good) + 1
        cfg = _with(config, data__train=str(path), output_dir=str(tmp / f"run-{n}"))
        try:
            run = runner.prepare(cfg, (), plugins, overwrite=False)
        except TunesmithError as exc:
            msg = str(exc)
            messages.append(msg)
            assert str(path) in msg, f"{what}: the error does not name the file: {msg}"
            assert "\n" not in msg, f"{what}: the error should be one line: {msg!r}"
            if f":{line}" not in msg and f"{path}: " not in msg:
                raise AssertionError(f"{what}: the error names neither line {line} nor the file: {msg}")
            if must_fail and field is not None:
                assert repr(field) in msg, f"{what}: the error does not name field {field!r}: {msg}"
            continue
        except Exception as exc:   # anything else is a crash, not a clear error
            raise AssertionError(f"{what}: crashed with {type(exc).__name__}: {exc} "
                                 f"(expected a TunesmithError naming file and line)") from exc
        assert not must_fail, f"{what}: row {row!r} was accepted, expected an error about {field!r}"
        assert not Path(cfg["output_dir"]).exists(), f"{what}: validation wrote to output_dir"
        accepted.append((what, row, run))
    if accepted:
        _run_accepted(accepted)
    return messages


def _run_accepted(accepted) -> None:
    """Rows the task accepted must survive encode → collate → forward."""
    import torch

    from .. import runner

    what, _, run = accepted[0]
    tokenizer = runner.load_tokenizer(run.model_path, run.config)
    model = runner.build_model(run, tokenizer)
    model.eval()
    task, opts = run.task, run.config.task_options
    from ..data import encode

    for what, row, run in accepted:
        try:   # the row as datasets loaded it: the last of its training split
            train = run.splits["train"].dataset
            ds = encode(train.select([len(train) - 1]), task, tokenizer, run.state, opts, train=True)
            batch = task.collator(tokenizer, opts)([ds[0]])
            with torch.inference_mode():
                model(**batch)
        except TunesmithError:
            continue
        except Exception as exc:
            raise AssertionError(f"{what}: the task accepted row {row!r} but it crashed later with "
                                 f"{type(exc).__name__}: {exc}; check_row should refuse it") from exc


def check_bad_inputs(run_dir, plugins: Plugins | None = None,
                     inputs: Iterable = DEFAULT_BAD_INPUTS) -> list[str]:
    """Each malformed prediction input makes ``Predictor.predict`` raise a
    TunesmithError (never a crash inside torch). Returns the messages."""
    import tunesmith

    predictor = tunesmith.load(run_dir, plugins=plugins or fresh_plugins())
    messages = []
    for item in inputs:
        try:
            predictor.predict([item])
        except TunesmithError as exc:
            messages.append(str(exc))
            continue
        except RowError as exc:
            raise AssertionError(f"input {item!r}: RowError {exc} escaped Predictor.predict "
                                 f"(it should be a TunesmithError)") from exc
        except Exception as exc:
            raise AssertionError(f"input {item!r}: crashed with {type(exc).__name__}: {exc}") from exc
        raise AssertionError(f"input {item!r} was accepted; expected a clear error")
    return messages


# ------------------------------------------------------------------ all at once

def check_task(name: str, *, model, train, validation, tmp_path, plugins: Plugins | None = None,
               strategies: Iterable[str] | None = None, bad_rows=(), bad_inputs=DEFAULT_BAD_INPUTS,
               inputs: list | None = None, resume: bool = True) -> None:
    """Every check for task ``name`` on a tiny ``model`` and small data files, with each
    of ``strategies`` (default: every registered strategy, third-party ones included)."""
    plugins = plugins or fresh_plugins()
    check_registers("task", name, plugins)
    tmp_path = Path(tmp_path)
    last = None
    for strategy in strategies_to_check(plugins, strategies):
        check_registers("strategy", strategy, plugins)
        cfg = tiny_run_config(name, model, train, validation, tmp_path / f"{name}-{strategy}", strategy)
        last = check_roundtrip(cfg, plugins, inputs)
        if resume:
            check_resume(_with(cfg, output_dir=str(tmp_path / f"{name}-{strategy}-resume")), plugins, inputs)
    cfg = tiny_run_config(name, model, train, validation, tmp_path / f"{name}-bad", "full")
    check_bad_rows(cfg, plugins, bad_rows, tmp_dir=tmp_path / f"{name}-bad-rows")
    if last is not None:
        check_bad_inputs(last.run_dir, plugins, bad_inputs)


def strategies_to_check(plugins: Plugins, strategies: Iterable[str] | None = None) -> list[str]:
    """``strategies`` as given, or every registered strategy (in registration order)."""
    return list(strategies) if strategies is not None else list(plugins.registry.strategies)


def check_strategy(name: str, *, model, train, validation, tmp_path, plugins: Plugins | None = None,
                   task: str = "text-classification", resume: bool = True) -> None:
    """Every check for strategy ``name``, on ``task`` (by default the built-in
    text-classification with the ``tiny_classification_data`` fixture)."""
    plugins = plugins or fresh_plugins()
    check_registers("strategy", name, plugins)
    cfg = tiny_run_config(task, model, train, validation, Path(tmp_path) / f"{task}-{name}", name)
    check_roundtrip(cfg, plugins)
    if resume:
        check_resume(_with(cfg, output_dir=str(Path(tmp_path) / f"{task}-{name}-resume")), plugins)
