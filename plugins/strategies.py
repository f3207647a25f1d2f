"""Built-in fine-tuning strategies: full, partial (last N layers), frozen, lora.

The head is whatever the task put on top of the backbone: every top-level module of
the model outside ``model.base_model``, plus a ``pooler`` inside it (BERT's pooler is
trained with the classifier; sentence-embedding checkpoints ship it untrained).
"""

from __future__ import annotations

import logging
import typing
from dataclasses import dataclass, field

from tunesmith import ConfigError, hookimpl
from tunesmith.protocols import member

log = logging.getLogger("tunesmith")


# ---------------------------------------------------------------- model anatomy

def head_module_names(model, task=None, adapter: bool = False) -> list[str]:
    """Names (as in ``named_modules``) of the task-head modules. A task may say itself with
    ``task.head_module_names(model, adapter)`` (generation tasks: bert2bert's new
    cross-attention; ``adapter`` asks what a LoRA adapter must train and save)."""
    hook = member(task, "head_module_names")
    if hook is not None:
        return hook(model, adapter)
    base = model.base_model
    names = [n for n, m in model.named_children() if m is not base and any(True for _ in m.parameters())]
    prefix = next((n for n, m in model.named_children() if m is base), None)
    if prefix is not None and hasattr(base, "pooler") and base.pooler is not None:
        names.append(f"{prefix}.pooler")
    return names


def layer_stack(model):
    """The repeated transformer blocks (an ``nn.ModuleList``), found generically:
    the longest ModuleList of same-class modules, preferring one whose length is
    the config's layer count. Works for BERT, RoBERTa, DistilBERT, GPT-2, Llama, T5."""
    import torch.nn as nn

    expected = None
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        expected = getattr(model.config, key, None)
        if isinstance(expected, int):
            break
    best = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and \
                len({type(m) for m in module}) == 1:
            score = (len(module) == expected, len(module))
            if best is None or score > best[0]:
                best = (score, name, module)
    if best is None:
        raise ConfigError([f"cannot find the transformer layers of {type(model).__name__} "
                           f"for strategy 'partial'"])
    return best[1], best[2]


def set_trainable(model, module_names: typing.Iterable[str]) -> None:
    wanted = tuple(module_names)
    for name, param in model.named_parameters():
        param.requires_grad = any(name == w or name.startswith(w + ".") for w in wanted)


def _freeze_mode(module) -> None:
    """Keep ``module`` in eval mode even when the Trainer calls ``model.train()``
    (so dropout is off in a frozen backbone, as at feature-extraction time)."""
    import types

    def train(self, mode=True):
        return type(self).train(self, False)

    module.train = types.MethodType(train, module)
    module.eval()


def _require(problems: list, name: str, value, ok: bool, need: str) -> None:
    if not ok:
        problems.append(f"strategy.{name} must be {need}, got {value!r}")


# ---------------------------------------------------------------- strategies

@dataclass
class NoOptions:
    pass


class Full:
    name = "full"
    description = "Train every parameter."
    default = True   # what a config without strategy.name trains with
    options = NoOptions
    default_learning_rate = 5e-5

    def apply(self, model, task, options):
        for p in model.parameters():
            p.requires_grad = True
        return model


@dataclass
class PartialOptions:
    layers: int = field(default=2, metadata={"help": "How many of the last transformer layers to train."})

    def check(self, problems):
        _require(problems, "layers", self.layers, self.layers >= 1, ">= 1")


class Partial:
    name = "partial"
    description = "Train the last N transformer layers and the head."
    options = PartialOptions
    default_learning_rate = 1e-4

    def apply(self, model, task, options):
        # a task may pick the stack (generation tasks: the decoder's blocks)
        stack_name, stack = (member(task, "layer_stack") or layer_stack)(model)
        if options.layers > len(stack):
            raise ConfigError([f"strategy.layers={options.layers} but {type(model).__name__} has "
                               f"only {len(stack)} layers"])
        first = len(stack) - options.layers
        names = [f"{stack_name}.{i}" for i in range(first, len(stack))] + head_module_names(model, task)
        # a final norm after the stack (Llama's `norm`, GPT-2's `ln_f`) belongs with the top layers
        base_prefix = next((n for n, m in model.named_children() if m is model.base_model), "")
        for child, _ in model.base_model.named_children():
            if "norm" in child.lower() or child in ("ln_f",):
                names.append(f"{base_prefix}.{child}" if base_prefix else child)
        set_trainable(model, names)
        return model


@dataclass
class FrozenOptions:
    pooling: str = field(default="auto", metadata={
        "help": "How the head reads the frozen token vectors (BERT-style models): 'auto' = the pooling "
                "the checkpoint was trained for (a sentence-transformers config says mean or cls), else "
                "'cls'; 'cls' = the architecture's [CLS] pooler; 'mean' = mean over the tokens."})
    cache_features: bool = field(default=True, metadata={
        "help": "Compute the frozen backbone's features once and train the head on them for all epochs "
                "(exactly equivalent; falls back to the normal path, with a log line, where it cannot apply)."})

    def check(self, problems):
        from .frozen.pooling import MODES

        if self.pooling not in MODES:
            problems.append(f"strategy.pooling must be one of {', '.join(MODES)}, got {self.pooling!r}")


class Frozen:
    name = "frozen"
    description = ("Train only the task head on the frozen backbone (eval mode), with the pooling the "
                   "checkpoint was trained for and backbone features computed once.")
    options = FrozenOptions
    default_learning_rate = 1e-3

    def apply(self, model, task, options):
        from .frozen import pooling

        if pooling.replaceable_pooler(model) is not None:
            mode, why = pooling.resolve_mode(model, options.pooling)
            pooling.use_pooling(model, mode)
            log.info("tunesmith: frozen: %s", why)
        elif options.pooling == "mean":
            raise ConfigError([f"strategy.pooling='mean' needs a BERT-style pooler; "
                               f"{type(model).__name__} has none (use pooling: auto)"])
        heads = head_module_names(model, task)
        set_trainable(model, heads)
        prefix = next((n for n, m in model.named_children() if m is model.base_model), None)
        if prefix is not None:
            pooler = f"{prefix}.pooler"
            for name, module in model.base_model.named_children():
                if f"{prefix}.{name}" != pooler:
                    _freeze_mode(module)
        return model

    def swap_for_training(self, model, datasets, collator, run):
        """With ``strategy.cache_features``: the head trains on backbone features computed
        once (plugins/frozen/featurecache.py); None where that cannot apply."""
        from .frozen import featurecache

        return featurecache.setup(run, model, datasets, collator)


# attention query/value projections under their names in common architectures
ATTENTION_QV = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("q", "v"),
                ("c_attn",), ("query_key_value",), ("Wqkv",), ("qkv_proj",))


def default_lora_targets(model) -> list[str] | None:
    """peft's default for the architecture, else the query/value projections found by name."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    known = DEFAULTS.get(getattr(model.config, "model_type", None))
    if known:
        return list(known)
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    for names in ATTENTION_QV:
        if all(n in leaves for n in names):
            return list(names)
    return None   # peft then explains that target_modules must be given


@dataclass
class LoraOptions:
    r: int = field(default=8, metadata={"help": "Rank of the LoRA update matrices."})
    alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})
    target_modules: typing.Optional[list[str]] = field(
        default=None, metadata={"help": "Module names to adapt; default: peft's choice for the architecture "
                                        "(query/value for BERT, q_proj/v_proj for Llama, ...)."})

    def check(self, problems):
        _require(problems, "r", self.r, self.r >= 1, ">= 1")
        _require(problems, "alpha", self.alpha, self.alpha > 0, "> 0")
        _require(problems, "dropout", self.dropout, 0 <= self.dropout < 1, "in [0, 1)")


class Lora:
    name, options, default_learning_rate = "lora", LoraOptions, 1e-3
    description = "Low-rank adapters (peft) on attention; the head trains and is saved with the adapter."

    def apply(self, model, task, options):
        from peft import LoraConfig, get_peft_model

        # the head must train and be saved (modules_to_save), or a reloaded model is random
        heads = head_module_names(model, task, adapter=True)
        task_targets = member(task, "lora_target_modules")
        targets = options.target_modules or (task_targets and task_targets(model)) or default_lora_targets(model)
        try:
            config = LoraConfig(r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout,
                                target_modules=targets, modules_to_save=heads)
            return get_peft_model(model, config)
        except ValueError as exc:
            raise ConfigError([f"strategy 'lora' cannot adapt {type(model).__name__}: {exc}"]) from None

    def save_model(self, model, folder, base):
        """The adapter and its trained head, plus a portable base: ``folder/base`` holds the
        base checkpoint's weight files (hard links where the file system allows, else
        copies) and the task model's config with the label names, and the adapter refers
        to it as ``model/base``, relative to the run directory. So peft alone
        (``AutoPeftModelFor...from_pretrained("model")`` run in the run directory)
        rebuilds the model with the real labels, and no absolute path (a virtualenv's)
        is recorded."""
        import json
        from pathlib import Path

        folder = Path(folder)
        model.save_pretrained(folder, safe_serialization=True)
        source = Path(base) if base else None
        weights = sorted(p for p in source.iterdir() if _weight_file(p.name)) if source and source.is_dir() else []
        if not weights:
            return   # a hub id or a base assembled in memory (bert2bert): nothing to point at portably
        target = folder / "base"
        target.mkdir()
        for path in weights:
            _link_or_copy(path.resolve(), target / path.name)
        model.get_base_model().config.save_pretrained(target)   # labels (id2label / label2id)
        config_path = folder / "adapter_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        # saved into a temporary folder that the core renames to the run directory's model/
        config["base_model_name_or_path"] = "model/base"
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def load_model(self, model_dir, build):
        """An adapter folder: rebuild the base model with the task head, then load the
        adapter and the saved head (modules_to_save) over it."""
        from pathlib import Path

        if not (Path(model_dir) / "adapter_config.json").is_file():
            return build(model_dir)   # e.g. a merged copy
        from peft import PeftModel

        return PeftModel.from_pretrained(build(), str(model_dir))

    def merge_model(self, model):
        """The plain transformers model: the adapters merged into the weights
        (modules_to_save, e.g. the classifier head, become ordinary modules)."""
        from peft import PeftModel

        return model.merge_and_unload() if isinstance(model, PeftModel) else model


def _weight_file(name: str) -> bool:
    return (name.startswith("model") and ".safetensors" in name) or \
        (name.startswith("pytorch_model") and ".bin" in name)


def _link_or_copy(source, target) -> None:
    import os
    import shutil

    try:
        os.link(source, target)   # same file system: no second copy of the weights
    except OSError:
        shutil.copy2(source, target)


@hookimpl(trylast=True)
def register_strategies(register):
    for strategy in (Full(), Partial(), Frozen(), Lora()):
        register(strategy)
