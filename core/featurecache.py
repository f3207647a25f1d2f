"""Frozen backbone, cached features: run the backbone once, train the head for all epochs.

With a frozen backbone in eval mode, the pooled input of the head is a fixed function
of each example, so computing it once gives exactly the features the normal path
would compute in every epoch. The Trainer then trains :class:`CachedHead`, which feeds
those features through the *model's own* head code (pooler dense + activation, dropout,
classifier, loss for the configured ``problem_type``), with the model's own parameters:
when training ends, the original model holds the trained head and is saved as usual.

Applies to models whose base model has a :class:`tunesmith.pooling.Pooler` (BERT-style
classifiers, after ``frozen`` set up its pooling) and whose only trainable parameters
are the pooler and modules outside the base model. Anything else falls back to the
normal path, and says why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from . import pooling

log = logging.getLogger("tunesmith")


@dataclass
class Cached:
    model: Any          # the CachedHead the Trainer trains
    train: Any          # feature datasets
    eval: Any
    collator: Any
    seconds: float      # time spent computing the features
    _extract: Any = None

    def encode(self, dataset):
        """Features for another encoded split (e.g. the test set)."""
        return self._extract(dataset)

    def unwrap(self):
        """The original model (sharing the trained head parameters)."""
        return self.model.model


def why_not(model) -> str | None:
    """None if the head can train on cached features, else the reason it cannot."""
    pooler = pooling.replaceable_pooler(model)
    if pooler is None or not pooling.is_tunesmith_pooler(pooler):
        return (f"{type(model).__name__} has no BERT-style pooler to read features from "
                f"(only BERT-style sequence classifiers are supported)")
    base = model.base_model
    for name, param in base.named_parameters():
        if param.requires_grad and not name.startswith("pooler."):
            return f"backbone parameter {name!r} is trainable"
    import inspect

    if "input_ids" not in inspect.signature(model.forward).parameters:
        return f"{type(model).__name__}.forward does not take input_ids"
    return None


def _head_class():
    import torch.nn as nn
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    class CachedHead(nn.Module):
        """Train-time stand-in for a frozen-backbone model: ``features`` in, the model's
        usual output (loss, logits) out. The backbone is skipped: its ``forward`` is
        replaced, for the duration of one call, by the cached result."""

        def __init__(self, model):
            super().__init__()
            self.model = model
            self.config = model.config

        def forward(self, features, labels=None, length=None):
            base = self.model.base_model
            pooled = base.pooler.head(features)
            cached = BaseModelOutputWithPooling(last_hidden_state=features.unsqueeze(1), pooler_output=pooled)
            saved = base.__dict__.get("forward")
            base.forward = lambda *args, **kwargs: cached
            try:
                return self.model(input_ids=None, labels=labels, return_dict=True)
            finally:
                if saved is None:
                    del base.forward
                else:
                    base.forward = saved

    return CachedHead


class _FeatureCollator:
    def __call__(self, rows):
        import torch

        batch = {"features": torch.stack([torch.as_tensor(r["features"]) for r in rows])}
        if "labels" in rows[0]:
            batch["labels"] = torch.as_tensor([r["labels"] for r in rows])
        return batch


def extract(model, dataset, collator, batch_size: int):
    """A ``datasets.Dataset`` of pooled backbone features (+ labels, length) for ``dataset``."""
    import datasets
    import numpy as np
    import torch

    base = model.base_model
    pooler = base.pooler
    inputs = [c for c in dataset.column_names if c not in ("labels", "length")]
    lengths = dataset["length"] if "length" in dataset.column_names else [len(x) for x in dataset["input_ids"]]
    order = sorted(range(len(dataset)), key=lambda i: lengths[i])   # little padding per batch
    feats = [None] * len(dataset)
    was_training = base.training
    base.eval()
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = collator([{k: dataset[i][k] for k in inputs} for i in idx])
                batch = {k: v.to(device) for k, v in batch.items() if k in inputs}
                hidden = base(**batch).last_hidden_state
                pooled = pooler.pool(hidden, batch.get("attention_mask")).float().cpu().numpy()
                for j, i in enumerate(idx):
                    feats[i] = pooled[j]
    finally:
        base.train(was_training)
    columns = {"features": np.stack(feats), "length": list(lengths)}
    if "labels" in dataset.column_names:
        columns["labels"] = dataset["labels"]
    return datasets.Dataset.from_dict(columns).with_format("numpy", columns=list(columns))


def setup(run, model, train_ds, eval_ds, collator, batch_size: int) -> Cached | None:
    """Cached features for a strategy that asks for them (``cache_features``), else None."""
    if not getattr(run.config.strategy_options, "cache_features", False):
        return None
    reason = why_not(model)
    if reason is None and not hasattr(train_ds, "column_names"):
        reason = "the task's encoded data is not a datasets.Dataset"
    elif reason is None and "input_ids" not in train_ds.column_names:
        reason = "the task's encoded data has no input_ids"
    if reason:
        log.warning("tunesmith: feature cache not used (%s); the frozen backbone runs in every epoch", reason)
        return None
    from . import precision

    used = (getattr(run, "precision", None) or {}).get("used", "fp32")
    device = next(model.parameters()).device.type

    def features(ds):   # the backbone under the run's precision; features are stored as float32
        with precision.autocast(used, device):
            return extract(model, ds, collator, batch_size)

    started = time.time()
    train_f = features(train_ds)
    eval_f = features(eval_ds)
    seconds = time.time() - started
    log.warning("tunesmith: feature cache: backbone features for %d + %d examples computed once in %.1f s; "
                "the head trains on them for every epoch", len(train_f), len(eval_f), seconds)
    return Cached(_head_class()(model), train_f, eval_f, _FeatureCollator(), seconds, features)
