"""Run configuration: YAML/JSON + ``--set dotted.key=value`` overrides → dataclasses.

Nothing here imports torch or transformers, so a bad config fails in milliseconds.
Every problem is collected and reported at once in one :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError, TunesmithError, UnknownNameError, did_you_mean


def _help(text: str, default=dataclasses.MISSING, factory=dataclasses.MISSING):
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class TrainingConfig:
    epochs: float = _help("Number of passes over the training data.", 3)
    batch_size: int = _help("Training batch size per device.", 16)
    eval_batch_size: int = _help("Evaluation / prediction batch size per device.", 64)
    learning_rate: typing.Optional[float] = _help(
        "Peak learning rate; default: the strategy's own (full 5e-5, lora 1e-3, ...).", None)
    weight_decay: float = _help("AdamW weight decay.", 0.0)
    warmup_ratio: float = _help("Fraction of steps for linear warm-up.", 0.0)
    gradient_accumulation_steps: int = _help("Batches per optimizer step.", 1)
    max_train_samples: typing.Optional[int] = _help("Use only the first N training rows.", None)
    max_eval_samples: typing.Optional[int] = _help("Use only the first N validation rows.", None)
    seed: int = _help("One seed for data order, initialisation and dropout.", 42)
    early_stopping_patience: typing.Optional[int] = _help(
        "Stop after N evaluations without improvement of the main metric.", None)
    save_total_limit: int = _help("Checkpoints kept in checkpoints/ (the best is always kept).", 2)
    save_steps: typing.Optional[int] = _help(
        "Also checkpoint every N optimizer steps (for --resume); a checkpoint is always saved each epoch.", None)
    logging_steps: int = _help("Log the training loss every N steps.", 50)
    group_by_length: bool = _help("Batch rows of similar length together (less padding).", True)
    report_to: str = _help("Trainer integrations, comma separated (e.g. 'tensorboard'); 'none' for none.", "none")
    trainer_args: dict = _help(
        "Extra transformers.TrainingArguments, passed through as given (e.g. deepspeed, fsdp, "
        "fsdp_config, bf16, gradient_checkpointing); they override tunesmith's own choices.", factory=dict)

    def check(self, problems: list[str]) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size,
                    "eval_batch_size": self.eval_batch_size,
                    "gradient_accumulation_steps": self.gradient_accumulation_steps,
                    "logging_steps": self.logging_steps, "save_total_limit": self.save_total_limit,
                    "save_steps": self.save_steps,
                    "learning_rate": self.learning_rate, "max_train_samples": self.max_train_samples,
                    "max_eval_samples": self.max_eval_samples,
                    "early_stopping_patience": self.early_stopping_patience}
        for key, value in positive.items():
            if value is not None and value <= 0:
                problems.append(f"training.{key} must be > 0, got {value!r}")
        if self.weight_decay < 0:
            problems.append(f"training.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"training.warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")


@dataclass
class GenerationConfig:
    """Decoding options for generation tasks (translation, summarization); other tasks ignore them."""

    max_new_tokens: typing.Optional[int] = _help(
        "Most tokens to generate; default: the task's data.max_target_length.", None)
    num_beams: int = _help("Beam search width (1 = greedy).", 1)
    length_penalty: float = _help("Beam search length penalty (> 1 favours longer outputs).", 1.0)
    no_repeat_ngram_size: int = _help("Forbid repeating n-grams of this size (0 = off).", 0)

    def check(self, problems: list[str]) -> None:
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            problems.append(f"generation.max_new_tokens must be >= 1, got {self.max_new_tokens!r}")
        if self.num_beams < 1:
            problems.append(f"generation.num_beams must be >= 1, got {self.num_beams!r}")
        if self.no_repeat_ngram_size < 0:
            problems.append(f"generation.no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size!r}")


def attach_generation(options, generation) -> None:
    """Hand ``generation.*`` to a task whose options class asks for it
    (``uses_generation = True``), as a plain attribute so it is not a data.* key."""
    if options is not None and getattr(type(options), "uses_generation", False):
        options.generation = generation


@dataclass
class DataConfig:
    train: typing.Optional[str] = _help("Training file (.jsonl, .json, .csv, .parquet).", None)
    validation: typing.Optional[str] = _help("Validation file; metrics are computed on it.", None)
    test: typing.Optional[str] = _help("Optional test file, evaluated once after training.", None)
    options: dict = _help("Task options (data.text_column, ...), checked by the task.", factory=dict)


@dataclass
class StrategyConfig:
    name: str = _help("Fine-tuning strategy: full, partial, frozen, lora, ...", "full")
    options: dict = _help("Strategy options (strategy.r, strategy.layers, ...), checked by the strategy.",
                          factory=dict)


@dataclass
class RunConfig:
    task: str = _help("Task name or alias (text-classification, classification, ...).", "")
    model: str = _help("Model reference: a folder, a hub id, or package:NAME.", "")
    output_dir: str = _help("Run directory to create.", "")
    data: DataConfig = _help("Data files and task column options.", factory=DataConfig)
    strategy: StrategyConfig = _help("Strategy and its options.", factory=StrategyConfig)
    training: TrainingConfig = _help("Training hyper-parameters.", factory=TrainingConfig)
    generation: GenerationConfig = _help("Decoding options of generation tasks.", factory=GenerationConfig)
    trust_remote_code: bool = _help("Allow model repositories to run their own code (off by default).", False)
    tune: dict = _help("Search space and settings for `tunesmith tune` (train ignores it).", factory=dict)
    source: typing.Optional[str] = _help("Where this config came from (set by the loader).", None)

    # filled in by resolve(): the task's and the strategy's typed option objects
    task_options: Any = field(default=None, repr=False, compare=False)
    strategy_options: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        out = {"task": self.task, "model": self.model, "output_dir": self.output_dir,
               "data": {"train": self.data.train, "validation": self.data.validation,
                        "test": self.data.test, **(dataclasses.asdict(self.task_options)
                                                   if self.task_options is not None else self.data.options)},
               "strategy": {"name": self.strategy.name,
                            **(dataclasses.asdict(self.strategy_options)
                               if self.strategy_options is not None else self.strategy.options)},
               "training": dataclasses.asdict(self.training),
               "generation": dataclasses.asdict(self.generation),
               "trust_remote_code": self.trust_remote_code}
        return out


# --------------------------------------------------------------------------- loading

def read_file(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"config file not found: {str(path)!r}"])
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 text (byte {exc.start})"], source=str(path)) from None
    if p.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError([f"line {exc.lineno}: invalid JSON: {exc.msg}"], source=str(path)) from None
    else:
        import yaml
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f"line {mark.line + 1}: " if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError([f"{line}invalid YAML: {problem}"], source=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"the top level must be a mapping of keys, got {type(data).__name__}"],
                          source=str(path))
    # data files are relative to the config file, so a config travels with its data
    base = p.parent
    section = data.get("data")
    if isinstance(section, dict):
        for key in ("train", "validation", "test"):
            v = section.get(key)
            if isinstance(v, str) and not os.path.isabs(v) and (base / v).exists():
                section[key] = str(base / v)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError([f"--set {text!r}: expected dotted.key=value"])
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError([f"--set {text!r}: empty key"])
    import yaml
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides) -> dict:
    for text in overrides or ():
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return data


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def coerce(value: Any, tp, where: str, problems: list[str]) -> Any:
    """Convert a YAML/CLI value to ``tp`` or record a problem; returns the value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(value, args[0], where, problems)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        problems.append(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):   # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        problems.append(f"{where} must be a number, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        problems.append(f"{where} must be a string, got {value!r}")
        return value
    if origin is list or tp is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):   # "a,b" from the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            problems.append(f"{where} must be a list, got {value!r}")
            return value
        return [coerce(v, inner, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{where} must be a mapping, got {value!r}")
        return value
    return value


def build_dataclass(cls, values: Mapping, prefix: str, problems: list[str], *, extra: str | None = None):
    """Build ``cls`` from ``values``; unknown keys are problems (with did-you-mean),
    or collected into the field named ``extra`` when given."""
    if not isinstance(values, Mapping):
        problems.append(f"{prefix or 'config'} must be a mapping, got {values!r}")
        values = {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name != extra}
    kwargs: dict[str, Any] = {}
    leftovers: dict[str, Any] = {}
    for key, value in values.items():
        where = f"{prefix}{key}"
        if key in fields:
            before = len(problems)
            value = coerce(value, hints[key], where, problems)
            if len(problems) == before:   # a bad value is reported; keep the default meanwhile
                kwargs[key] = value
        elif extra:
            leftovers[key] = value
        else:
            problems.append(f"unknown key {where!r}{did_you_mean(key, fields)}")
    if extra:
        kwargs[extra] = leftovers
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        problems.append(f"{prefix.rstrip('.') or 'config'}: {exc}")
        return cls()


SECTIONS = {"data": (DataConfig, "options"), "strategy": (StrategyConfig, "options"),
            "training": (TrainingConfig, None), "generation": (GenerationConfig, None)}


def parse(data: Mapping, problems: list[str]) -> RunConfig:
    top = {f.name for f in dataclasses.fields(RunConfig) if f.init and f.name not in
           ("task_options", "strategy_options", "source")}
    kwargs: dict[str, Any] = {}
    hints = typing.get_type_hints(RunConfig)
    for key, value in data.items():
        if key not in top:
            problems.append(f"unknown key {key!r}{did_you_mean(key, top)}")
        elif key in SECTIONS:
            cls, extra = SECTIONS[key]
            if key == "strategy" and isinstance(value, str):   # "strategy: lora" shorthand
                value = {"name": value}
            kwargs[key] = build_dataclass(cls, value, f"{key}.", problems, extra=extra)
        else:
            before = len(problems)
            value = coerce(value, hints[key], key, problems)
            if len(problems) == before:
                kwargs[key] = value
    cfg = RunConfig(**kwargs)
    for key in ("task", "model"):
        if not getattr(cfg, key):
            problems.append(f"{key!r} is required")
    if not cfg.data.train:
        problems.append("'data.train' is required")
    if not cfg.data.validation:
        problems.append("'data.validation' is required (metrics are computed on real validation data)")
    for key in ("train", "validation", "test"):
        path = getattr(cfg.data, key)
        if path and isinstance(path, str) and "://" not in path and not Path(path).exists():
            problems.append(f"data.{key}: file not found: {path!r}")
    cfg.training.check(problems)
    cfg.generation.check(problems)
    return cfg


def resolve(cfg: RunConfig, registry, problems: list[str]) -> None:
    """Check task, strategy and their options against what the plugins registered."""
    task = strategy = None
    try:
        task = registry.task(cfg.task) if cfg.task else None
    except UnknownNameError as exc:
        problems.append(str(exc))
    try:
        strategy = registry.strategy(cfg.strategy.name)
    except UnknownNameError as exc:
        problems.append(str(exc))
    if task is not None:
        cfg.task = task.name
        cfg.task_options = build_dataclass(task.options, cfg.data.options, "data.", problems)
        check = getattr(cfg.task_options, "check", None)
        if check:
            check(problems)
        attach_generation(cfg.task_options, cfg.generation)
    if strategy is not None:
        cfg.strategy_options = build_dataclass(strategy.options, cfg.strategy.options, "strategy.", problems)
        check = getattr(cfg.strategy_options, "check", None)
        if check:
            check(problems)


def apply_task_defaults(data: dict, registry) -> None:
    """A task's own defaults for a strategy: ``task.strategy_defaults(name)`` returns
    dotted keys → values (e.g. LoRA's rank and learning rate for span extraction),
    filled in where the config leaves the key unset (absent or null)."""
    try:
        task = registry.task(data.get("task")) if isinstance(data.get("task"), str) else None
    except UnknownNameError:
        return   # resolve() reports it
    hook = getattr(task, "strategy_defaults", None)
    section = data.get("strategy", {})
    name = section if isinstance(section, str) else section.get("name", "full") if isinstance(section, dict) else None
    if hook is None or not isinstance(name, str):
        return
    for key, value in (hook(name) or {}).items():
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            if part == "strategy" and isinstance(node.get(part), str):   # "strategy: lora" shorthand
                node[part] = {"name": node[part]}
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break   # a malformed section: parse() reports it
        else:
            if node.get(parts[-1]) is None:
                node[parts[-1]] = value


def load_config(source: "str | os.PathLike | Mapping | RunConfig", overrides=(), registry=None) -> RunConfig:
    """Load, override and validate a run configuration; raise one ConfigError listing
    every problem. With ``registry``, also check task, strategy and their options."""
    if isinstance(source, RunConfig):
        if overrides:
            raise TunesmithError("overrides need a config file or mapping, not a RunConfig")
        cfg, origin = source, source.source
        problems: list[str] = []
    else:
        if isinstance(source, Mapping):
            data, origin = json.loads(json.dumps(source, default=str)), None
        else:
            data, origin = read_file(source), str(source)
        data = apply_overrides(data, overrides)
        if registry is not None:
            apply_task_defaults(data, registry)
        problems = []
        cfg = parse(data, problems)
        cfg.source = origin
    if not cfg.output_dir:
        import time
        cfg.output_dir = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S") +
                                      f"-{cfg.task or 'task'}-{cfg.strategy.name}")
    if registry is not None:
        resolve(cfg, registry, problems)
    if problems:
        raise ConfigError(problems, source=origin)
    return cfg
