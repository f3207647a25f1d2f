"""``tunesmith tune``: hyperparameter search over any config keys, on Optuna.

The search space comes from the config's ``tune:`` section and ``--space KEY=DIST(...)``
options (``loguniform(a,b)``, ``uniform(a,b)``, ``int(a,b)``, ``choice(a,b,...)``); every
key and bound is checked against the real config loader before anything is written.

Trials run in this process, one after the other, each as a real run directory
``OUT/trials/NNNN`` made by :func:`tunesmith.runner.train`; a Trainer callback (added
through the public ``configure_trainer`` hook) reports the validation metric of every
evaluation to Optuna and stops a trial the pruner gives up on. The study lives in an
RDB storage, by default ``sqlite:///OUT/study.db``: running the same command again
continues the study (finished trials are kept; a trial left RUNNING by a killed process
is marked FAIL and re-run with its parameters), and several processes, or machines
sharing one ``--storage`` URL, can work on one study. After every trial ``OUT`` gets
``trials.md``, ``trials.json``, ``best.yaml`` (a runnable config) and PNG plots.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import apply_overrides, load_config, read_file
from ..errors import ConfigError, RunDirError, TrainingInterrupted, TunesmithError
from ..util import atomic_file

DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "halving", "none")
MARKER = "tune.json"          # what makes a folder a tune folder (resumable)
TRIALS = "trials"
_SPEC = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$", re.S)
# keys a trial must not change: where it writes, and the search itself
_FORBIDDEN = ("output_dir", "tune")


# ----------------------------------------------------------------------------- search space

@dataclass(frozen=True)
class Param:
    key: str        # dotted config key, e.g. training.learning_rate
    kind: str       # one of DISTRIBUTIONS
    values: tuple   # (low, high) or the choices

    @property
    def spec(self) -> str:
        return f"{self.kind}({', '.join(_show(v) for v in self.values)})"

    def suggest(self, trial):
        if self.kind == "loguniform":
            return trial.suggest_float(self.key, *self.values, log=True)
        if self.kind == "uniform":
            return trial.suggest_float(self.key, *self.values)
        if self.kind == "int":
            return trial.suggest_int(self.key, *self.values)
        return trial.suggest_categorical(self.key, list(self.values))

    def extremes(self) -> list:
        """Values that must all make a valid config (the bounds, or every choice)."""
        return list(self.values)


def _show(v) -> str:
    return json.dumps(v) if isinstance(v, str) else repr(v)


def parse_param(key: str, text: Any, where: str) -> Param:
    """``loguniform(1e-5, 1e-2)`` etc. → :class:`Param`; a ConfigError names ``where``."""
    def bad(msg):
        return ConfigError([f"{where}: {msg}"])

    key = str(key).strip()
    if not key or any(not part for part in key.split(".")):
        raise bad("empty key")
    if key.split(".")[0] in _FORBIDDEN:
        raise bad(f"{key!r} cannot be searched")
    if not isinstance(text, str):
        raise bad(f"expected a distribution such as loguniform(1e-5, 1e-2), got {text!r}")
    m = _SPEC.match(text)
    if not m:
        raise bad(f"cannot parse {text!r}; expected one of "
                  f"{', '.join(d + '(...)' for d in DISTRIBUTIONS)}")
    kind, inner = m.group(1), m.group(2)
    if kind not in DISTRIBUTIONS:
        raise bad(f"unknown distribution {kind!r}; use one of {', '.join(DISTRIBUTIONS)}")
    import yaml

    try:   # a YAML flow sequence: numbers, quoted strings with commas, true/false
        args = yaml.safe_load(f"[{inner}]")
    except yaml.YAMLError:
        raise bad(f"cannot parse the arguments of {text!r}") from None
    if kind == "choice":
        if not args:
            raise bad("choice() needs at least one value")
        if any(not isinstance(a, (str, int, float, bool)) or a is None for a in args):
            raise bad(f"choice() values must be numbers, strings or true/false, got {text!r}")
        if len(set(map(repr, args))) != len(args):
            raise bad(f"choice() lists a value twice in {text!r}")
        return Param(key, kind, tuple(args))
    if len(args) != 2:
        raise bad(f"{kind}() takes two bounds (low, high), got {len(args)} in {text!r}")
    try:
        if kind == "int":
            low, high = (_as_int(a) for a in args)
        else:
            low, high = (float(a) for a in args)   # YAML reads 1e-5 as a string
    except (TypeError, ValueError):
        raise bad(f"{kind}() bounds must be {'integers' if kind == 'int' else 'numbers'}, "
                  f"got {text!r}") from None
    if low > high or (kind != "int" and low == high):
        raise bad(f"empty range in {text!r}: low must be below high")
    if kind == "loguniform" and low <= 0:
        raise bad(f"loguniform() bounds must be > 0, got {text!r}")
    return Param(key, kind, (low, high))


def _as_int(v) -> int:
    if isinstance(v, bool):
        raise TypeError(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, int):
        return v
    return int(str(v))


def parse_space(section: dict, cli: list[str]) -> list[Param]:
    """The config's ``tune.space`` mapping, then ``--space KEY=DIST`` (which win)."""
    params: dict[str, Param] = {}
    problems = []
    if not isinstance(section, dict):
        raise ConfigError([f"tune.space must be a mapping of KEY: DIST, got {section!r}"])
    entries = [(k, v, f"tune.space.{k}") for k, v in section.items()]
    for text in cli:
        if "=" not in text:
            problems.append(f"--space {text!r}: expected KEY=DIST(...), e.g. "
                            "training.learning_rate=loguniform(1e-5,1e-2)")
            continue
        k, _, v = text.partition("=")
        entries.append((k.strip(), v, f"--space {text!r}"))
    for key, value, where in entries:
        try:
            p = parse_param(key, value, where)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        params[p.key] = p
    if problems:
        raise ConfigError(problems)
    if not params:
        raise ConfigError(["no search space: give --space KEY=DIST(...) or a tune.space section, e.g. "
                           "--space training.learning_rate=loguniform(1e-5,1e-2)"])
    return list(params.values())


def _set(data: dict, key: str, value) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        if isinstance(node.get(part), str) and part == "strategy":   # "strategy: lora" shorthand
            node[part] = {"name": node[part]}
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def trial_config(base: dict, params: dict, output_dir: str | None) -> dict:
    data = json.loads(json.dumps(base))
    for key, value in params.items():
        _set(data, key, value)
    if output_dir is not None:
        data["output_dir"] = output_dir
    return data


def check_space(base: dict, space: list[Param], registry, source: str | None) -> None:
    """Every bound / choice of every parameter (the others at their first value) must
    make a config the loader accepts: unknown keys and bad values fail here, up front."""
    problems: list[str] = []
    first = {p.key: p.extremes()[0] for p in space}
    for p in space:
        for value in p.extremes():
            try:
                load_config(trial_config(base, {**first, p.key: value}, "tune-check"), registry=registry)
            except ConfigError as exc:
                problems.extend(f"search space {p.key}={p.spec}: {msg}" for msg in exc.problems
                                if msg not in problems)
                break
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)), source=source)


# ----------------------------------------------------------------------------- settings

@dataclass
class Settings:
    trials: int = 10
    sampler: str = "tpe"
    pruner: str = "median"
    eval_steps: int | None = None
    study_name: str = "tunesmith"

    @classmethod
    def build(cls, section: dict, cli: dict) -> "Settings":
        problems = []
        known = {"space", "trials", "sampler", "pruner", "eval_steps", "study_name"}
        for k in section:
            if k not in known:
                problems.append(f"unknown key 'tune.{k}' (known: {', '.join(sorted(known))})")
        values = {k: section[k] for k in known - {"space"} if k in section}
        values.update({k: v for k, v in cli.items() if v is not None})
        s = cls(**values)
        if not isinstance(s.trials, int) or isinstance(s.trials, bool) or s.trials < 1:
            problems.append(f"tune.trials must be an integer >= 1, got {s.trials!r}")
        if s.sampler not in SAMPLERS:
            problems.append(f"tune.sampler must be one of {', '.join(SAMPLERS)}, got {s.sampler!r}")
        if s.pruner not in PRUNERS:
            problems.append(f"tune.pruner must be one of {', '.join(PRUNERS)}, got {s.pruner!r}")
        if s.eval_steps is not None and (not isinstance(s.eval_steps, int) or isinstance(s.eval_steps, bool)
                                         or s.eval_steps < 1):
            problems.append(f"tune.eval_steps must be an integer >= 1, got {s.eval_steps!r}")
        if not isinstance(s.study_name, str) or not s.study_name:
            problems.append(f"tune.study_name must be a non-empty string, got {s.study_name!r}")
        if problems:
            raise ConfigError(problems)
        return s


def _sampler(name: str, trials: int, seed: int):
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # TPE's default of 10 random start-up trials would leave a 12-trial budget almost no
    # guided trials; a third of the budget (2..10) is random, the rest follows TPE
    return optuna.samplers.TPESampler(n_startup_trials=max(2, min(10, trials // 3)), seed=seed)


def _pruner(name: str, trials: int):
    import optuna

    if name == "median":   # never prune before a few trials have shown what "median" is
        return optuna.pruners.MedianPruner(n_startup_trials=max(2, min(5, trials // 3)))
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def _storage(url: str):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        # the heartbeat lets any worker on any machine notice a trial whose process died
        return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=30, grace_period=120,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
    except (ImportError, ValueError, optuna.exceptions.StorageInternalError) as exc:
        raise ConfigError([f"--storage {_safe_url(url)!r}: {str(exc).splitlines()[0]}"]) from None
    except Exception as exc:   # sqlalchemy's errors (bad driver, no server) are not a bug of ours
        if type(exc).__module__.startswith("sqlalchemy"):
            raise ConfigError([f"--storage {_safe_url(url)!r}: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0]}"]) from None
        raise


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:   # not an URL sqlalchemy knows: show it without anything after '@'
        return re.sub(r"//[^/@]*@", "//***@", url)


# ----------------------------------------------------------------------------- the study

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_dead_trials(study) -> list[int]:
    """Trials left RUNNING by a process of this machine that no longer exists (SIGKILL,
    power loss): marked FAIL and queued again with the same parameters at once, without
    waiting for the heartbeat's grace period (which covers other machines)."""
    from optuna.trial import TrialState

    host, recovered = socket.gethostname(), []
    storage = study._storage
    callback = storage.get_heartbeat_stale_trial_callback()
    retried = {t.system_attrs.get("failed_trial") for t in study.get_trials(deepcopy=False)}
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get("interrupted") and t.number not in retried and callback is not None:
            callback(study, t)   # stopped by a signal (tune told the user): queued again
            recovered.append(t.number)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or not isinstance(pid, int) or pid == os.getpid() or _alive(pid):
            continue
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                recovered.append(t.number)
                if callback is not None:
                    callback(study, storage.get_trial(t._trial_id))
        except Exception:   # another worker got there first
            continue
    return recovered


from ..manager import hookimpl  # noqa: E402  (pluggy only: cheap)


class _Reporter:
    """A plugin object: on each trial's Trainer, adds the pruning callback and captures
    what the trial table needs (the effective learning rate, the metric)."""

    def __init__(self):
        self.trial = None
        self.seen: dict = {}

    @hookimpl
    def configure_trainer(self, trainer, run):
        from ..runner import main_metric

        metric = main_metric(run.task, run.state)
        self.seen.update(run=run, learning_rate=trainer.args.learning_rate, metric=metric,
                         greater=run.task.greater_is_better)
        trainer.add_callback(_pruning_callback(self.trial, metric, self.seen))


def _pruning_callback(trial, metric: str, seen: dict):
    import optuna
    from transformers import TrainerCallback

    class Prune(TrainerCallback):
        done = False

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            # the runner's final evaluate() (best checkpoint) comes after on_train_end: not a step
            value = (metrics or {}).get(f"eval_{metric}")
            if self.done or value is None:
                return
            trial.report(float(value), state.global_step)
            seen["last_step"] = state.global_step
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {state.global_step} ({metric}={float(value):.4f})")

        def on_train_end(self, args, state, control, **kwargs):
            self.done = True

    return Prune()


def tune(config, space: list[str] = (), overrides=(), *, trials: int | None = None, sampler: str | None = None,
         pruner: str | None = None, eval_steps: int | None = None, output: str | None = None,
         storage: str | None = None, study_name: str | None = None, plugins=None, echo=None) -> dict:
    """Search ``space`` for ``config``; returns the summary also written to ``trials.json``."""
    from ..manager import load_plugins

    plugins = plugins or load_plugins()
    if not isinstance(config, (str, os.PathLike)):
        raise ConfigError(["tune needs a config file (YAML or JSON)"])
    source = str(config)
    raw = read_file(config)
    section = raw.pop("tune", None) or {}
    if not isinstance(section, dict):
        raise ConfigError([f"tune must be a mapping, got {section!r}"], source=source)
    base = apply_overrides(raw, overrides)
    cfg = load_config(json.loads(json.dumps(base)), registry=plugins.registry)   # the base config itself
    settings = Settings.build(section, {"trials": trials, "sampler": sampler, "pruner": pruner,
                                        "eval_steps": eval_steps, "study_name": study_name})
    params = parse_space(section.get("space") or {}, list(space))
    if settings.eval_steps:   # more than one evaluation per epoch: something to prune on
        ta = base.setdefault("training", {}).setdefault("trainer_args", {})
        if not isinstance(ta, dict):
            raise ConfigError([f"training.trainer_args must be a mapping, got {ta!r}"], source=source)
        ta.update(eval_strategy="steps", eval_steps=settings.eval_steps,
                  save_strategy="steps", save_steps=settings.eval_steps)
    check_space(base, params, plugins.registry, source)

    own = base.get("output_dir")
    out = Path(output) if output else Path(str(own).rstrip("/\\") + "-tune" if own else "tune")
    marker = out / MARKER
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not marker.is_file())):
        raise RunDirError(f"output folder {str(out)!r} exists and is not a tune folder; choose another --output")
    try:
        import optuna
    except ImportError:
        raise ConfigError(["tunesmith tune needs Optuna: pip install 'tunesmith[tune]'"]) from None
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    space_spec = {p.key: p.spec for p in params}
    if marker.is_file():
        old = json.loads(marker.read_text(encoding="utf-8"))
        if old.get("space") != space_spec and not storage:
            raise ConfigError([f"{str(out)!r} holds a study over another search space "
                               f"({json.dumps(old.get('space'))}); use another --output"])

    # -- from here on, things are written
    out.mkdir(parents=True, exist_ok=True)
    (out / TRIALS).mkdir(exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = _storage(url)
    direction = "maximize" if plugins.registry.task(cfg.task).greater_is_better else "minimize"
    study = optuna.create_study(storage=store, study_name=settings.study_name, direction=direction,
                                load_if_exists=True)
    stored = study.user_attrs.get("space")
    if stored is None:
        study.set_user_attr("space", space_spec)
    elif stored != space_spec:
        raise ConfigError([f"study {settings.study_name!r} in {_safe_url(url)!r} searched another space "
                           f"({json.dumps(stored)}); use another --study-name"])
    from ..rundir import write_json

    write_json(marker, {"config": os.path.abspath(source), "overrides": list(overrides or ()),
                        "space": space_spec, "storage": _safe_url(url), "study_name": settings.study_name,
                        "trials": settings.trials, "sampler": settings.sampler, "pruner": settings.pruner,
                        "eval_steps": settings.eval_steps})
    from optuna.trial import TrialState

    done_states = (TrialState.COMPLETE, TrialState.PRUNED)
    recovered = recover_dead_trials(study)
    if echo and recovered:
        echo(f"tune: trial(s) {', '.join(map(str, recovered))} were left running by a stopped process: "
             f"marked failed, queued again")
    done = len(study.get_trials(deepcopy=False, states=done_states))
    if echo and done:
        echo(f"tune: continuing the study in {str(out)!r}: {done} of {settings.trials} trials finished")
    study.sampler = _sampler(settings.sampler, settings.trials, cfg.training.seed + len(study.trials))
    study.pruner = _pruner(settings.pruner, settings.trials)

    reporter = _Reporter()
    plugins.add(reporter, "tunesmith-tune")
    info = {"source": source, "base": base, "space": params, "settings": settings, "url": url, "out": out}

    def objective(trial):
        values = {p.key: p.suggest(trial) for p in params}
        # after the suggestions: a trial found with a dead pid is retried with all its parameters
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        run_dir = out / TRIALS / f"{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        reporter.trial, reporter.seen = trial, {}
        if echo:
            echo(f"tune: trial {trial.number}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in values.items()))
        started = time.time()
        pruned = None
        try:
            from ..runner import train

            result = train(trial_config(base, values, str(run_dir)), plugins=plugins, quiet=True)
        except optuna.TrialPruned as exc:
            pruned = exc
        except TrainingInterrupted:
            # SIGINT/SIGTERM: stop the whole tune; the trial is queued again on the next start
            trial.set_user_attr("interrupted", True)
            raise _Stop() from None
        except TunesmithError as exc:
            trial.set_user_attr("error", " ".join(str(exc).split())[:300])
            trial.set_user_attr("wall_s", round(time.time() - started, 2))
            raise
        finally:
            seen = reporter.seen
            for key in ("learning_rate", "metric", "last_step"):
                if key in seen:
                    trial.set_user_attr(key, seen[key])
            gc.collect()
        trial.set_user_attr("wall_s", round(time.time() - started, 2))
        # checkpoints serve only --resume of one run; a tune resumes by whole trials
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        if pruned is not None:
            run = reporter.seen.get("run")
            if run is not None:
                from ..rundir import write_manifest

                write_manifest(run, status="pruned")
            raise pruned
        metric = reporter.seen["metric"]
        value = result.metrics.get(metric)
        if value is None:
            raise TunesmithError(f"trial {trial.number}: no validation {metric!r} in the run's metrics")
        del result
        return float(value)

    def after_trial(study, frozen):
        t = frozen
        if echo:
            wall = t.user_attrs.get("wall_s")
            what = {TrialState.COMPLETE: lambda: f"{t.user_attrs.get('metric')}={t.value:.4f}",
                    TrialState.PRUNED: lambda: f"pruned at step {t.user_attrs.get('last_step')}",
                    TrialState.FAIL: lambda: f"failed: {t.user_attrs.get('error', 'see above')}"}
            echo(f"tune: trial {t.number}: {what.get(t.state, lambda: t.state.name)()}"
                 + (f" in {wall:.1f} s" if wall is not None else ""))
        write_reports(study, info)

    remaining = max(settings.trials - done, 0)
    if remaining:
        try:
            study.optimize(objective, n_trials=remaining, catch=(TunesmithError,), gc_after_trial=True,
                           callbacks=[optuna.study.MaxTrialsCallback(settings.trials, states=done_states),
                                      after_trial])
        except _Stop:
            write_reports(study, info)
            raise TrainingInterrupted(f"tune stopped during a trial; run the same command again to continue "
                                      f"the study in {str(out)!r}") from None
    return write_reports(study, info)


class _Stop(Exception):
    """A trial was interrupted by a signal: not a failed trial, the end of this tune."""


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ----------------------------------------------------------------------------- outputs

def summary(study, info: dict) -> dict:
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        steps = sorted(t.intermediate_values)
        rows.append({"number": t.number, "state": t.state.name, "params": dict(t.params),
                     "value": t.value, "metric": t.user_attrs.get("metric"),
                     "learning_rate": t.user_attrs.get("learning_rate"),
                     "wall_s": t.user_attrs.get("wall_s"),
                     "last_step": steps[-1] if steps else None,
                     "intermediate": {str(s): t.intermediate_values[s] for s in steps},
                     "run_dir": t.user_attrs.get("run_dir"),
                     "retry_of": t.system_attrs.get("failed_trial"),
                     "error": t.user_attrs.get("error"),
                     "started": t.datetime_start.isoformat() if t.datetime_start else None,
                     "finished": t.datetime_complete.isoformat() if t.datetime_complete else None})
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    best = None
    if complete:
        b = study.best_trial
        best = {"number": b.number, "value": b.value, "params": dict(b.params)}
    counts = {s: sum(1 for r in rows if r["state"] == s) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    metric = next((r["metric"] for r in rows if r["metric"]), None)
    s = info["settings"]
    return {"config": info["source"], "study_name": s.study_name, "storage": _safe_url(info["url"]),
            "direction": study.direction.name.lower(), "metric": metric,
            "space": {p.key: p.spec for p in info["space"]}, "trials_wanted": s.trials,
            "sampler": s.sampler, "pruner": s.pruner, "eval_steps": s.eval_steps,
            "counts": counts, "best": best, "trials": rows}


def render_markdown(result: dict) -> str:
    keys = list(result["space"])
    metric = result["metric"] or "value"
    lines = [f"| trial | state | {' | '.join(keys)} | {metric} | last step | learning rate | wall (s) |",
             "|---:|---|" + "---:|" * len(keys) + "---:|---:|---:|---:|"]
    best = (result["best"] or {}).get("number")
    for r in result["trials"]:
        value = f"{r['value']:.4f}" if isinstance(r["value"], (int, float)) else "—"
        if r["state"] == "PRUNED" and r["intermediate"]:
            value = f"({list(r['intermediate'].values())[-1]:.4f})"   # the last reported value
        state = r["state"].lower() + (" (best)" if r["number"] == best else "")
        if r.get("retry_of") is not None:
            state += f", retry of {r['retry_of']}"
        params = " | ".join(_fmt(r["params"][k]) if k in r["params"] else "—" for k in keys)
        lr = f"{r['learning_rate']:.3g}" if isinstance(r["learning_rate"], (int, float)) else "—"
        wall = f"{r['wall_s']:.1f}" if isinstance(r["wall_s"], (int, float)) else "—"
        lines.append(f"| {r['number']} | {state} | {params} | {value} | {r['last_step'] or '—'} | {lr} | {wall} |")
    return "\n".join(lines)


def write_reports(study, info: dict) -> dict:
    from ..rundir import write_json

    out: Path = info["out"]
    result = summary(study, info)
    write_json(out / "trials.json", result)
    c = result["counts"]
    text = (f"# Tune: {result['config']}\n\n"
            f"Study `{result['study_name']}` ({result['direction']} validation {result['metric']}), sampler "
            f"{result['sampler']}, pruner {result['pruner']}; {c['COMPLETE']} complete, {c['PRUNED']} pruned, "
            f"{c['FAIL']} failed of {result['trials_wanted']} wanted. Search space: "
            + ", ".join(f"`{k}={v}`" for k, v in result["space"].items()) + ".\n\n"
            + render_markdown(result) + "\n\nA pruned trial's value (in brackets) is its last reported "
            "evaluation; run directories: `trials/NNNN/`.\n")
    _write_text(out / "trials.md", text)
    if result["best"]:
        import yaml

        best = trial_config(info["base"], result["best"]["params"], info["base"].get("output_dir"))
        if best.get("output_dir") is None:
            best.pop("output_dir", None)
        head = (f"# best trial {result['best']['number']} of `tunesmith tune {result['config']}`: "
                f"validation {result['metric']} = {result['best']['value']:.4f}\n")
        _write_text(out / "best.yaml", head + yaml.safe_dump(best, sort_keys=False))
    plots(study, out)
    return result


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text)


_SAID: set = set()


def plots(study, out: Path) -> None:
    """Optimisation history and parameter importance as PNG (needs matplotlib: tunesmith[plots])."""
    import warnings

    from optuna.trial import TrialState

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as ovm
    except ImportError:
        return
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # optuna marks its matplotlib plots experimental
        figures = []
        if complete:
            figures.append(("optimization_history.png", lambda: ovm.plot_optimization_history(study)))
        # importance needs two finished trials that differ; on fewer there is nothing to say
        if len(complete) >= 2 and len({tuple(sorted(t.params.items())) for t in complete}) >= 2:
            figures.append(("param_importances.png",
                            lambda: ovm.plot_param_importances(study, evaluator=_importance_evaluator())))
        for name, make in figures:
            try:
                ax = make()
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:   # e.g. all values equal
                if name not in _SAID:   # once per process, not after every trial
                    _SAID.add(name)
                    print(f"tunesmith: tune: no {name} yet: {exc}", file=sys.stderr)
                continue
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            with atomic_file(out / name, "wb") as f:
                fig.savefig(f, dpi=100, format="png")
            plt.close(fig)


def _importance_evaluator():
    import optuna

    try:   # fANOVA (Optuna's default) needs scikit-learn; PED-ANOVA does not
        import sklearn  # noqa: F401

        return optuna.importance.FanovaImportanceEvaluator(seed=0)
    except ImportError:
        return optuna.importance.PedAnovaImportanceEvaluator()


# ---------------------------------------------------------------- the `tune` command

from ..progress import add_result_options  # noqa: E402
from . import echo  # noqa: E402

def _arguments(tu) -> None:
    tu.add_argument("config", help="YAML or JSON run configuration (an optional tune: section holds the space)")
    tu.add_argument("--space", action="append", default=[], metavar="KEY=DIST",
                    help="a searched key: loguniform(a,b), uniform(a,b), int(a,b) or choice(a,b,...), e.g. "
                         "--space training.learning_rate=loguniform(1e-5,1e-2) (repeatable)")
    tu.add_argument("--trials", type=int, help="trials in the study, finished ones included (default 10)")
    tu.add_argument("--sampler", choices=("tpe", "random"), help="default tpe")
    tu.add_argument("--pruner", choices=("median", "halving", "none"),
                    help="stop trials early on the validation metric (default median)")
    tu.add_argument("--eval-steps", type=int, metavar="N",
                    help="evaluate (and report to the pruner) every N steps instead of each epoch")
    tu.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value for every trial (repeatable)")
    tu.add_argument("--output", help="tune folder (default: the config's output_dir + '-tune'); "
                                     "run again with the same folder to continue")
    tu.add_argument("--storage", metavar="URL",
                    help="Optuna RDB storage shared by workers (default: sqlite in the tune folder)")
    tu.add_argument("--study-name", help="study name in the storage (default tunesmith)")
    add_result_options(tu, output=False)


def _run(args, plugins) -> int:
    result = tune(args.config, args.space, args.overrides, trials=args.trials, sampler=args.sampler,
                  pruner=args.pruner, eval_steps=args.eval_steps, output=args.output, storage=args.storage,
                  study_name=args.study_name, plugins=plugins, echo=echo(args.quiet))
    print(render_markdown(result))
    best = result["best"]
    if best:
        print(f"\nbest: trial {best['number']}, {result['metric']}={best['value']:.4f}, "
              + ", ".join(f"{k}={v}" for k, v in best["params"].items()))
    return 0 if best else 1


@hookimpl
def register_commands(register):
    register("tune", help="search hyperparameters with Optuna (needs tunesmith[tune])", arguments=_arguments, run=_run)
