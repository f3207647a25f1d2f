"""A strategy: ``name``, ``description``, ``options`` (a dataclass of ``strategy.*``
options, every field with a default), ``default_learning_rate`` and ``apply``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class HeadAndNormsOptions:
    norms: bool = field(default=True, metadata={"help": "Also train every LayerNorm."})

    def check(self, problems: list[str]) -> None:
        """Optional: append one message per invalid value (reported with the config)."""


class HeadAndNorms:
    name = "head-and-norms"
    description = "Train the task head and the LayerNorms; freeze everything else."
    options = HeadAndNormsOptions
    default_learning_rate = 1e-3

    def apply(self, model, task, options):
        """Set ``requires_grad`` (or wrap the model, e.g. with peft); return the model."""
        base = model.base_model
        heads = tuple(f"{name}." for name, child in model.named_children() if child is not base)
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith(heads) or (options.norms and "norm" in name.lower())
        return model
