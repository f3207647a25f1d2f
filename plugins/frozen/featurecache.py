"""Frozen backbone, cached features: run the backbone once, train the head for all epochs.

With a frozen backbone in eval mode, the pooled input of the head is a fixed function
of each example, so computing it once gives exactly the features the normal path
would compute in every epoch. The Trainer then trains :class:`CachedHead`, which feeds
those features through the *model's own* head code (pooler dense + activation, dropout,
classifier, loss for the configured ``problem_type``), with the model's own parameters:
when training ends, the original model holds the trained head and is saved as usual.

The ``frozen`` strategy hands this to the core through its ``swap_for_training`` member:
the core trains what :class:`Cached` holds and saves what ``restore()`` gives back.
Applies to models whose base model has a :class:`~.pooling.Pooler` (BERT-style
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
    """What the Trainer trains instead (a :class:`tunesmith.protocols.TrainingSwap`)."""

    model: Any          # the CachedHead the Trainer trains
    datasets: dict      # "train", "validation": feature datasets
    collator: Any
    seconds: float      # time spent computing the features
    _extract: Any = None
    _precision: str = "fp32"

    def encode(self, dataset):
        """Features for another encoded split (e.g. the test set)."""
        return self._extract(dataset)

    def restore(self):
        """The original model (sharing the trained head parameters), run as it trained:
        the Trainer autocast only the cached head."""
        from tunesmith import precision

        model = self.model.model
        precision.wrap_forward(model, self._precision, next(model.parameters()).device.type)
        return model


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

    from tunesmith.plugins import in_batches

    base = model.base_model
    # the task's collator gets whole rows (a hand-written one may read every row's labels);
    # the backbone gets only the model inputs it returns
    inputs = [c for c in dataset.column_names if c not in ("labels", "length")]
    columns = [c for c in dataset.column_names if c != "length"]
    lengths = dataset["length"] if "length" in dataset.column_names else [len(x) for x in dataset["input_ids"]]
    device = next(model.parameters()).device

    def run(idx):
        batch = collator(dataset.select(idx).select_columns(columns).to_list())
        batch = {k: v.to(device) for k, v in batch.items() if k in inputs}
        hidden = base(**batch).last_hidden_state
        return list(base.pooler.pool(hidden, batch.get("attention_mask")).float().cpu().numpy())

    feats = in_batches(base, list(range(len(dataset))), batch_size, run, length=lambda i: lengths[i])
    columns = {"features": np.stack(feats), "length": list(lengths)}
    if "labels" in dataset.column_names:
        columns["labels"] = dataset["labels"]
    return datasets.Dataset.from_dict(columns).with_format("numpy", columns=list(columns))


def setup(run, model, datasets: dict, collator) -> Cached | None:
    """Cached features when ``strategy.cache_features`` asks for them and the model allows,
    else None (the normal path, with a log line saying why)."""
    if not run.config.strategy_options.cache_features:
        return None
    train_ds, eval_ds = datasets["train"], datasets["validation"]
    batch_size = run.config.training.eval_batch_size
    reason = why_not(model)
    if reason is None and not hasattr(train_ds, "column_names"):
        reason = "the task's encoded data is not a datasets.Dataset"
    elif reason is None and "input_ids" not in train_ds.column_names:
        reason = "the task's encoded data has no input_ids"
    if reason:
        log.warning("tunesmith: feature cache not used (%s); the frozen backbone runs in every epoch", reason)
        return None
    from tunesmith import precision

    used = (run.precision or {}).get("used", "fp32")
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
    return Cached(_head_class()(model), {"train": train_f, "validation": eval_f}, _FeatureCollator(), seconds,
                  features, used)
