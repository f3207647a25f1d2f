"""Run configuration: YAML/JSON + ``--set dotted.key=value`` overrides → dataclasses.

Nothing here imports torch or transformers, so a bad config fails in milliseconds.
Every problem is collected and reported at once in one :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .data import describe, hub_hint   # cheap: data.py imports datasets only inside functions
from .errors import ConfigError, TunesmithError, UnknownNameError, did_you_mean
from .protocols import member
from .util import split_list


def _help(text: str, default=dataclasses.MISSING, factory=dataclasses.MISSING):
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


option = _help   # a field with its --help text, for the options dataclasses of plugins too


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
    max_steps: typing.Optional[int] = _help(
        "Train for this many optimizer steps instead of epochs (required with data.streaming).", None)
    num_proc: typing.Optional[int] = _help("Processes that encode the data (Dataset.map num_proc).", None)
    seed: int = _help("One seed for data order, initialisation and dropout.", 42)
    early_stopping_patience: typing.Optional[int] = _help(
        "Stop after N evaluations without improvement of the main metric.", None)
    save_total_limit: int = _help("Checkpoints kept in checkpoints/ (the best is always kept).", 2)
    save_steps: typing.Optional[int] = _help(
        "Also checkpoint every N optimizer steps (for --resume); a checkpoint is always saved each epoch.", None)
    logging_steps: int = _help("Log the training loss every N steps.", 50)
    group_by_length: bool = _help("Batch rows of similar length together (less padding).", True)
    precision: str = _help(
        "Numeric precision of training: auto (bf16 where the CPU/GPU runs it natively, fp16 on older "
        "GPUs, else fp32), fp32, bf16 or fp16 (GPU only); mixed precision via autocast, weights stay float32. "
        "Default fp32 for now: bf16 predictions depend on batch composition, which the exact "
        "reload checks of the conformance kit do not allow yet.",
        "fp32")
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
                    "max_eval_samples": self.max_eval_samples, "max_steps": self.max_steps,
                    "num_proc": self.num_proc,
                    "early_stopping_patience": self.early_stopping_patience}
        for key, value in positive.items():
            if value is not None and value <= 0:
                problems.append(f"training.{key} must be > 0, got {value!r}")
        if self.weight_decay < 0:
            problems.append(f"training.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"training.warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if not 0 <= self.seed < 2 ** 32:   # what numpy / torch accept as a seed
            problems.append(f"training.seed must be in [0, 2**32), got {self.seed!r}")
        from .precision import CHOICES

        if self.precision not in CHOICES:
            problems.append(f"training.precision must be one of {', '.join(CHOICES)}, got {self.precision!r}"
                            f"{did_you_mean(str(self.precision), CHOICES)}")


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
    if options is not None and member(type(options), "uses_generation"):
        options.generation = generation


SPLITS = ("train", "validation", "test")


@dataclass
class DataConfig:
    train: Any = _help("Training data: a file (.jsonl .json .csv .tsv .parquet .arrow, optionally "
                       "compressed), a glob, a save_to_disk folder, or a hub dataset (hub:owner/name[:split] "
                       "or {path, name, split, revision}); from Python also a Dataset / DatasetDict / "
                       "IterableDataset / DataFrame.", None)
    validation: Any = _help("Validation data (same forms as train); metrics are computed on it.", None)
    test: Any = _help("Optional test data, evaluated once after training.", None)
    streaming: bool = _help("Stream the training data instead of loading it (needs training.max_steps).", False)
    options: dict = _help("Task options (data.text_column, ...), checked by the task.", factory=dict)


@dataclass
class StrategyConfig:
    name: str = _help("Fine-tuning strategy: full, partial, frozen, lora, ...; default: the strategy "
                      "registered as the default (full).", "")
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
               "data": {**{k: describe(getattr(self.data, k)) for k in SPLITS},
                        **({"streaming": True} if self.data.streaming else {}),
                        **(dataclasses.asdict(self.task_options)
                                                   if self.task_options is not None else self.data.options)},
               "strategy": {"name": self.strategy.name,
                            **(dataclasses.asdict(self.strategy_options)
                               if self.strategy_options is not None else self.strategy.options)},
               "training": dataclasses.asdict(self.training),
               "generation": dataclasses.asdict(self.generation),
               "trust_remote_code": self.trust_remote_code}
        return out


# --------------------------------------------------------------------------- loading

# a config is a few dozen keys: deeper nesting or more values is a mistake or an attack
# (a YAML "billion laughs" alias bomb expands exponentially), refused before anything walks it
MAX_DEPTH, MAX_VALUES = 64, 100_000


def read_file(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        what = "is a directory, not a config file" if p.is_dir() else "config file not found"
        raise ConfigError([f"{what}: {str(path)!r}"])
    try:
        raw = p.read_bytes()
    except OSError as exc:   # permissions, I/O error
        raise ConfigError([f"cannot read the config file: {exc.strerror or exc}"], source=str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 text (byte {exc.start})"], source=str(path)) from None
    try:
        data = _load_json(text) if p.suffix == ".json" else _load_yaml(text)
    except RecursionError:
        raise ConfigError([f"nested more than {MAX_DEPTH} levels deep"], source=str(path)) from None
    except ConfigError as exc:
        raise ConfigError(exc.problems, source=str(path)) from None
    if data is None:
        data = {}
    check_size(data, str(path))
    if not isinstance(data, dict):
        raise ConfigError([f"the top level must be a mapping of keys, got {type(data).__name__}"],
                          source=str(path))
    # data files are relative to the config file, so a config travels with its data
    base = p.parent
    section = data.get("data")
    if isinstance(section, dict):
        for key in SPLITS:
            v = section.get(key)
            if isinstance(v, str) and not v.startswith("hub:") and not os.path.isabs(v) and \
                    ((base / v).exists() or (_is_glob(v) and glob.glob(str(base / v)))):
                section[key] = str((base / v).absolute())
    return data


def _is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def check_size(data, source: str | None) -> None:
    """Refuse nesting deeper than MAX_DEPTH or more than MAX_VALUES values (counting what
    YAML aliases repeat), walking iteratively and stopping at the limit."""
    stack, count = [(data, 1)], 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError([f"more than {MAX_VALUES:,} values (YAML aliases expanding?); "
                               "a run configuration is a few dozen keys"], source=source)
        if depth > MAX_DEPTH:
            raise ConfigError([f"nested more than {MAX_DEPTH} levels deep"], source=source)
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _load_yaml(text: str):
    import yaml

    try:
        return yaml.load(text, Loader=_unique_keys_loader())   # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{line}invalid YAML: {problem}"]) from None


_LOADER = None


def _unique_keys_loader():
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML would keep
    the last silently); ``<<`` merge keys may still be overridden, as YAML intends."""
    global _LOADER
    if _LOADER is None:
        import yaml

        class UniqueKeyLoader(yaml.SafeLoader):
            def construct_mapping(self, node, deep=False):
                if isinstance(node, yaml.MappingNode):
                    seen = set()
                    for key_node, _ in node.value:
                        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                            continue
                        if key_node.value in seen:
                            raise ConfigError([f"line {key_node.start_mark.line + 1}: duplicate key "
                                               f"{key_node.value!r} (given twice in one mapping)"])
                        seen.add(key_node.value)
                return super().construct_mapping(node, deep=deep)

        _LOADER = UniqueKeyLoader
    return _LOADER


def _load_json(text: str):
    """json.loads that refuses duplicate keys, naming the line of the second one.

    The pure-Python scanner is used so that each object's span is known: a duplicate's
    line is found among the keys of its own object, not those of nested ones."""
    from json import decoder, scanner

    spans: list[tuple[int, int]] = []

    def parse_object(s_and_end, *args):
        start = s_and_end[1]
        inner = len(spans)
        pairs, end = decoder.JSONObject(s_and_end, *args[:3], lambda p: p, *args[4:])
        nested = spans[inner:]
        spans.append((start, end))
        keys = set()
        for key, _ in pairs:
            if key in keys:
                raise ConfigError([f"{_duplicate_line(s_and_end[0], key, start, end, nested)}"
                                   f"duplicate key {key!r} (given twice in one object)"])
            keys.add(key)
        return dict(pairs), end

    dec = json.JSONDecoder()
    dec.parse_object = parse_object
    dec.scan_once = scanner.py_make_scanner(dec)
    try:
        return dec.decode(text)
    except json.JSONDecodeError as exc:
        raise ConfigError([f"line {exc.lineno}: invalid JSON: {exc.msg}"]) from None


def _duplicate_line(text: str, key: str, start: int, end: int, nested) -> str:
    pattern = re.compile(re.escape(json.dumps(key)) + r"\s*:")
    hits = [m.start() for m in pattern.finditer(text, start, end)
            if not any(a <= m.start() < b for a, b in nested)]
    return f"line {text.count(chr(10), 0, hits[1]) + 1}: " if len(hits) > 1 else ""


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError([f"--set {text!r}: expected dotted.key=value"])
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError([f"--set {text!r}: empty key"])
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except RecursionError:
        raise ConfigError([f"--set {key!r}: nested more than {MAX_DEPTH} levels deep"]) from None
    except ConfigError:   # not YAML: the text itself
        value = raw
    check_size(value, f"--set {key!r}")
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
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= 2 ** 63:   # more than any count or size; C code below would overflow
                problems.append(f"{where} must be below 2**63, got {value!r}")
            return value
        problems.append(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) < 1e308 else math.inf   # float(10**400) overflows
        elif isinstance(value, str):   # YAML 1.1 reads "1e-4" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            problems.append(f"{where} must be a number, got {value!r}")
            return value
        if not math.isfinite(number):   # 1e400, .inf, .nan: would train to a NaN loss
            problems.append(f"{where} must be a finite number, got {value!r}")
        return number
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
            value = split_list(value)
        if not isinstance(value, list):
            problems.append(f"{where} must be a list, got {value!r}")
            return value
        return [coerce(v, inner, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{where} must be a mapping, got {value!r}")
        else:   # passed through untyped (trainer_args): still no inf / nan inside
            for key, number in _non_finite(value, where):
                problems.append(f"{key} must be a finite number, got {number!r}")
        return value
    return value


def _non_finite(value, where: str) -> list[tuple[str, float]]:
    """(dotted key, value) of every inf/nan float inside nested mappings and lists."""
    found, stack = [], [(where, value)]
    while stack:
        key, v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            found.append((key, v))
        elif isinstance(v, dict):
            stack.extend((f"{key}.{k}", x) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((f"{key}[{i}]", x) for i, x in enumerate(v))
    return sorted(found)


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
    if _missing(cfg.data.train):
        problems.append("'data.train' is required")
    if _missing(cfg.data.validation):
        problems.append("'data.validation' is required (metrics are computed on real validation data)")
    for key in SPLITS:
        spec = getattr(cfg.data, key)
        if isinstance(spec, str) and not spec.startswith("hub:") and "://" not in spec \
                and not _is_glob(spec) and not os.path.lexists(spec):
            problems.append(f"data.{key}: file not found: {spec!r}{hub_hint(spec)}")
        elif isinstance(spec, str) and os.path.lexists(spec):
            setattr(cfg.data, key, os.path.abspath(spec))   # so --resume works from any directory
        elif spec is not None and not isinstance(spec, str) and type(spec) is not dict and \
                type(spec).__module__.split(".")[0] not in ("datasets", "pandas"):
            problems.append(f"data.{key} must be a path, a hub: reference or a {{path: ...}} mapping, "
                            f"got {type(spec).__name__}")
    if cfg.data.streaming and not cfg.training.max_steps:
        problems.append("data.streaming needs training.max_steps (a stream has no length to count epochs in)")
    problem = _path_problem(cfg.output_dir) if isinstance(cfg.output_dir, str) and cfg.output_dir else None
    if problem:
        problems.append(f"output_dir: {problem}: {cfg.output_dir!r}")
    if cfg.model and ":" not in cfg.model.split(os.sep)[0] and _exists(cfg.model):
        cfg.model = os.path.abspath(cfg.model)   # a local folder, not a hub id or package:NAME
    cfg.training.check(problems)
    cfg.generation.check(problems)
    return cfg


def _path_problem(path: str) -> str | None:
    """What no file system accepts: a NUL byte, a name longer than 255 bytes."""
    if "\0" in path:
        return "a path cannot contain a NUL byte"
    if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in Path(path).parts):
        return "a file or folder name is longer than 255 bytes"
    return None


def _exists(path: str) -> bool:
    try:
        return Path(path).exists()
    except (OSError, ValueError):   # a NUL byte, a name too long
        return False


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
        check = member(cfg.task_options, "check")
        if check:
            check(problems)
        attach_generation(cfg.task_options, cfg.generation)
    if strategy is not None:
        cfg.strategy_options = build_dataclass(strategy.options, cfg.strategy.options, "strategy.", problems)
        check = member(cfg.strategy_options, "check")
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
    hook = member(task, "strategy_defaults")
    section = data.get("strategy", {})
    name = section if isinstance(section, str) else section.get("name") if isinstance(section, dict) else None
    if name is None and isinstance(section, dict):
        try:
            name = registry.default_strategy()
        except ConfigError:
            return   # resolve() reports it
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


def _missing(spec) -> bool:
    """Unset or empty; by type, not truthiness (a DataFrame has none)."""
    return spec is None or (isinstance(spec, str) and not spec)


def _take_objects(source: Mapping, data=None) -> tuple[dict, dict]:
    """Split in-memory datasets/DataFrames out of a config mapping (they do not survive the
    JSON round trip that copies it); ``data`` (a DatasetDict or {split: object}) adds more."""
    section = source.get("data") if isinstance(source.get("data"), Mapping) else {}
    objects = {k: v for k, v in section.items() if k in SPLITS and v is not None
               and type(v) not in (dict, list) and not isinstance(v, (str, int, float, bool, os.PathLike))}
    if data is not None:
        if not isinstance(data, Mapping) and not hasattr(data, "keys"):
            data = {"train": data}
        objects.update({k: data[k] for k in data.keys() if k in SPLITS})
    rest = dict(source)
    if objects:
        rest["data"] = {k: v for k, v in section.items() if k not in objects}
    return rest, objects


def load_config(source: "str | os.PathLike | Mapping | RunConfig", overrides=(), registry=None,
                data=None) -> RunConfig:
    """Load, override and validate a run configuration; raise one ConfigError listing
    every problem. With ``registry``, also check task, strategy and their options. ``data``
    gives in-memory splits (a ``DatasetDict`` or ``{split: Dataset | DataFrame}``)."""
    if isinstance(source, RunConfig):
        if overrides:
            raise TunesmithError("overrides need a config file or mapping, not a RunConfig")
        cfg, origin = source, source.source
        problems: list[str] = []
    else:
        if isinstance(source, Mapping):
            source, objects = _take_objects(source, data)
            raw, origin = json.loads(json.dumps(source, default=str)), None
        else:
            raw, origin = read_file(source), str(source)
            objects = _take_objects({}, data)[1]
        if objects:
            raw.setdefault("data", {}).update(objects)
        raw = apply_overrides(raw, overrides)
        if registry is not None:
            apply_task_defaults(raw, registry)
        problems = []
        cfg = parse(raw, problems)
        cfg.source = origin
    if registry is not None and not cfg.strategy.name:
        try:
            cfg.strategy.name = registry.default_strategy()
        except ConfigError as exc:
            problems.extend(exc.problems)
    if not cfg.output_dir:
        import time
        cfg.output_dir = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S") +
                                      f"-{cfg.task or 'task'}-{cfg.strategy.name}")
    if registry is not None:
        resolve(cfg, registry, problems)
    if problems:
        raise ConfigError(problems, source=origin)
    return cfg
