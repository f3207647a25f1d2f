"""tunesmith-ner: the ``token-classification`` task (named-entity recognition).

A third-party tunesmith plugin: installed with pip, found through the ``tunesmith``
entry-point group (see pyproject.toml). Importing it is cheap; torch and
transformers are imported inside the task's methods.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith import hookimpl

from .task import NerOptions, TokenClassification

__version__ = "0.1.0"
# the tunesmith plugin API this plugin was written for; tunesmith refuses to load it otherwise
TUNESMITH_PLUGIN_API = ">=2,<3"

METRICS = Path(__file__).parent / "metrics"

__all__ = ["NerOptions", "TokenClassification"]


@hookimpl
def register_tasks(register):
    register(TokenClassification())


@hookimpl
def register_metrics(register):
    register("token-classification", "entity_f1", METRICS / "entity_f1")
