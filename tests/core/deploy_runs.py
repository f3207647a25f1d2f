"""Tiny trained runs shared by the predict / serve / export tests (seconds to train)."""

from __future__ import annotations

import tunesmith


def train_tiny(tiny_bert, sst2_small, out, strategy: str = "full", max_length: int = 32, **strategy_options):
    """A tiny BERT fine-tuned one epoch on 64 SST-2 rows; inputs over ``max_length``
    tokens are truncated (so truncation is easy to exercise)."""
    config = {"task": "text-classification", "model": str(tiny_bert), "output_dir": str(out),
              "data": {"train": str(sst2_small["train"]), "validation": str(sst2_small["validation"]),
                       "max_length": max_length},
              "strategy": {"name": strategy, **strategy_options},
              "training": {"epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "logging_steps": 2}}
    return tunesmith.train(config, quiet=True).run_dir
