"""Sentence pooling for BERT-style classifiers: the pooling the checkpoint was trained for.

A sentence-transformers checkpoint (such as all-MiniLM-L6-v2) was trained to be read
through the *mean* of its token vectors; its BERT pooler (``[CLS]`` → dense → tanh) was
never trained. A classifier on that pooler learns from a nearly useless feature, which
is why a frozen backbone does poorly with the architecture's default head.

:func:`use_pooling` swaps the model's pooler for :class:`Pooler`, which keeps the same
``dense``/``activation`` parameters (so ``state_dict`` keys and the saved safetensors stay
those of the standard architecture) but pools the tokens first (``cls`` or ``mean``). A
mean-pooled model records ``tunesmith_pooling: "mean"`` in its ``config.json``, and
:func:`restore_pooling` (called by the classification task when it loads a model)
re-applies it, so ``tunesmith.load`` predicts exactly what was trained.

Trade-off: plain ``transformers`` (``pipeline``, ``AutoModel...``) ignores that config key
and would read the ``[CLS]`` pooler instead, so a mean-pooled model must be loaded with
tunesmith. Models trained with ``cls`` pooling are unchanged standard models.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_KEY = "tunesmith_pooling"
MODES = ("auto", "cls", "mean")


def trained_pooling(model_path: str | None) -> str | None:
    """The pooling a sentence-transformers checkpoint declares (``modules.json`` →
    its Pooling module's ``config.json``): ``"mean"``, ``"cls"``, or None if unknown."""
    if not model_path:
        return None
    folder = Path(model_path)
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        pooling_dir = next(m.get("path", "") for m in modules if str(m.get("type", "")).endswith(".Pooling"))
        conf = json.loads((folder / pooling_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, StopIteration, TypeError, AttributeError):
        return None
    if conf.get("pooling_mode_mean_tokens"):
        return "mean"
    if conf.get("pooling_mode_cls_token"):
        return "cls"
    return None   # max / weighted / last-token pooling: not supported here


def replaceable_pooler(model):
    """The base model's BERT-style pooler (``dense`` + ``activation``), or None."""
    base = getattr(model, "base_model", None)
    pooler = getattr(base, "pooler", None)
    if pooler is None or not hasattr(pooler, "dense") or not hasattr(pooler, "activation"):
        return None
    return pooler


def resolve_mode(model, requested: str) -> tuple[str, str]:
    """``(mode, why)``: ``auto`` becomes what the checkpoint was trained for, else ``cls``."""
    if requested != "auto":
        return requested, f"pooling {requested!r} as configured"
    found = trained_pooling(getattr(model, "name_or_path", None))
    if found:
        return found, f"pooling {found!r}, read from the sentence-transformers config of the checkpoint"
    return "cls", "pooling 'cls' (the architecture's own pooler; no sentence-transformers config found)"


def _make_pooler_class():
    import torch
    import torch.nn as nn

    class Pooler(nn.Module):
        """``activation(dense(pool(tokens)))``: BERT's pooler with a choice of token pooling."""

        def __init__(self, mode: str, dense, activation):
            super().__init__()
            self.mode = mode
            self.dense = dense
            self.activation = activation
            self.mask = None   # set by a pre-hook on the base model for each forward call

        def pool(self, hidden, mask):
            if self.mode == "cls":
                return hidden[:, 0]
            if mask is None:
                return hidden.mean(dim=1)
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)

        def head(self, pooled):
            return self.activation(self.dense(pooled))

        def forward(self, hidden_states):
            mask = self.mask
            if mask is not None and mask.shape[:2] != hidden_states.shape[:2]:
                mask = None
            return self.head(self.pool(hidden_states, mask))

    def remember_mask(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1 and isinstance(args[1], torch.Tensor):
            mask = args[1]
        module.pooler.mask = mask

    return Pooler, remember_mask


_CACHE: dict = {}


def pooler_class():
    if "cls" not in _CACHE:
        _CACHE["cls"], _CACHE["hook"] = _make_pooler_class()
    return _CACHE["cls"]


def is_tunesmith_pooler(module) -> bool:
    return "cls" in _CACHE and isinstance(module, _CACHE["cls"])


def use_pooling(model, mode: str):
    """Replace the BERT-style pooler by :class:`Pooler` in ``mode``; return it (None if the
    model has no replaceable pooler). ``mean`` is recorded in the model config."""
    if mode not in ("cls", "mean"):
        raise ValueError(f"pooling must be 'cls' or 'mean', got {mode!r}")
    old = replaceable_pooler(model)
    if old is None:
        return None
    cls = pooler_class()
    if isinstance(old, cls):
        old.mode = mode
        new = old
    else:
        new = cls(mode, old.dense, old.activation)
        new.train(old.training)
        model.base_model.pooler = new
        model.base_model.register_forward_pre_hook(_CACHE["hook"], with_kwargs=True)
    if mode == "mean":
        setattr(model.config, CONFIG_KEY, "mean")
    elif hasattr(model.config, CONFIG_KEY):
        delattr(model.config, CONFIG_KEY)
    return new


def restore_pooling(model):
    """Re-apply the pooling a saved model was trained with (no-op for standard models)."""
    mode = getattr(model.config, CONFIG_KEY, None)
    if mode in ("cls", "mean"):
        use_pooling(model, mode)
    return model
