"""``tunesmith.testing``: the conformance kit for plugin authors.

It is a pytest plugin (registered through the ``pytest11`` entry point, so it is
active wherever tunesmith is installed) that provides fixtures:

- ``tunesmith_plugins``: a fresh plugin manager from the installed entry points;
- ``tiny_vocab``, ``tiny_bert``, ``tiny_llama``: tiny random models (2 layers,
  hidden 32) built from configs and saved with a WordPiece tokenizer, so a task
  or strategy trains in seconds, offline;
- ``tiny_classification_data``: a small labelled text-classification set, for
  checking a strategy on a built-in task;
- ``tunesmith_cli``: runs ``python -m tunesmith ...`` in a real subprocess;

and check functions a plugin author calls on a task or a strategy::

    from tunesmith.testing import check_task, check_strategy

    def test_my_task(tiny_bert, tmp_path):
        check_task("my-task", model=tiny_bert, train=..., validation=..., tmp_path=tmp_path)

Each check raises ``AssertionError`` with a message saying which part of the
contract failed (see :mod:`tunesmith.testing.checks`). Importing this module is
cheap; torch and transformers load when a check or fixture runs.
"""

from __future__ import annotations

from .checks import (DEFAULT_BAD_INPUTS, check_bad_inputs, check_bad_rows, check_registers,
                     check_resume, check_roundtrip, check_strategy, check_task, fresh_plugins,
                     strategies_to_check,
                     tiny_run_config)
from .models import (make_tiny_bert, make_tiny_llama, tiny_classification_rows, write_jsonl,
                     write_vocab)
from .cli import run_cli

__all__ = [
    "DEFAULT_BAD_INPUTS", "check_bad_inputs", "check_bad_rows", "check_registers", "check_resume",
    "check_roundtrip", "check_strategy", "check_task", "fresh_plugins", "make_tiny_bert",
    "make_tiny_llama", "run_cli", "strategies_to_check", "tiny_classification_rows", "tiny_run_config", "write_jsonl",
    "write_vocab",
]
