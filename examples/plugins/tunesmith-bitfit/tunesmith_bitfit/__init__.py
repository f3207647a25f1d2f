"""tunesmith-bitfit: the ``bitfit`` strategy — train only bias terms and the task head.

Self-contained: it uses nothing from tunesmith but ``hookimpl`` and the strategy
protocol (``name``, ``options``, ``default_learning_rate``, ``apply``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunesmith import hookimpl

__version__ = "0.1.0"
TUNESMITH_PLUGIN_API = ">=1,<3"   # a strategy: plugin API 2 changed only tasks


@dataclass
class BitFitOptions:
    train_head: bool = field(default=True, metadata={"help": "Also train the task head (and a pooler)."})


def head_prefixes(model) -> list[str]:
    """Parameter-name prefixes of the task head: the model's top-level children other
    than its backbone (``model.base_model``), plus the backbone's pooler if any."""
    base = model.base_model
    prefixes = [name for name, child in model.named_children() if child is not base]
    backbone = next((name for name, child in model.named_children() if child is base), None)
    if backbone is not None and getattr(base, "pooler", None) is not None:
        prefixes.append(f"{backbone}.pooler")
    return prefixes


class BitFit:
    name = "bitfit"
    description = "Train only bias terms and the task head (BitFit)."
    options = BitFitOptions
    default_learning_rate = 1e-3

    def apply(self, model, task, options):
        heads = tuple(p + "." for p in head_prefixes(model)) if options.train_head else ()
        n_bias = 0
        for name, param in model.named_parameters():
            is_bias = name.endswith(".bias")
            n_bias += is_bias
            param.requires_grad = is_bias or name.startswith(heads)
        if not n_bias:
            from tunesmith import ConfigError
            raise ConfigError([f"strategy 'bitfit': {type(model).__name__} has no bias parameters "
                               f"(e.g. Llama-style models); choose another strategy"])
        return model


@hookimpl
def register_strategies(register):
    register(BitFit())
