"""tunesmith: plugin-based fine-tuning of pretrained Transformer models.

Public API::

    import tunesmith
    result = tunesmith.train("examples/sentiment.yaml", overrides=["strategy.name=lora"])
    predictor = tunesmith.load(result.run_dir)
    predictor.predict(["a gripping, funny film"])

Importing this package is cheap: torch and transformers load only when a run starts.
"""

from __future__ import annotations

from .config import RunConfig, load_config
from .errors import (ConfigError, DataError, ModelError, PluginError, RowError, RunDirError,
                     TunesmithError, UnknownNameError)
from .manager import hookimpl, load_plugins
from .protocols import ModelSource, Strategy, Task

__version__ = "0.2.0"
PLUGIN_API_VERSION = 2   # 2: tasks get datasets batches (check_batch, setup(dataset), encode_batch)

__all__ = [
    "ConfigError", "DataError", "ModelError", "ModelSource", "PluginError", "RowError",
    "RunConfig", "RunDirError", "RunResult", "Strategy", "Task", "TunesmithError",
    "UnknownNameError", "hookimpl", "load", "load_config", "load_plugins", "train",
]


def train(config, overrides=(), **kwargs):
    """Fine-tune as ``config`` says; return a :class:`RunResult`. See runner.train."""
    from .runner import train as _train

    return _train(config, overrides, **kwargs)


def load(run_dir, **kwargs):
    """Load a run directory as a :class:`tunesmith.apps.predict.Predictor`."""
    from .apps.predict import Predictor

    return Predictor(run_dir, **kwargs)


def __getattr__(name):
    if name == "RunResult":
        from .runner import RunResult

        return RunResult
    raise AttributeError(f"module 'tunesmith' has no attribute {name!r}")
