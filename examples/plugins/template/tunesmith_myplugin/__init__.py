"""A tunesmith plugin (template). The hooks below are what tunesmith calls; each
receives a ``register`` callback. Keep imports here cheap: no torch at module level."""

from __future__ import annotations

from tunesmith import hookimpl

from .strategy import HeadAndNorms

__version__ = "0.1.0"
# tunesmith refuses (and lists as failed) a plugin whose API range excludes its own
TUNESMITH_PLUGIN_API = ">=2,<3"


@hookimpl
def register_strategies(register):
    register(HeadAndNorms())


@hookimpl
def register_commands(register):
    # `tunesmith rows FILE`; command.py imports nothing heavy, so `tunesmith --help` stays fast
    from . import command

    register("rows", help="count the rows of a JSONL file and their fields (template plugin)",
             arguments=command.arguments, run=command.run)


# When tunesmith_myplugin/task.py is filled in:
#
# from .task import MyTask
#
# @hookimpl
# def register_tasks(register):
#     register(MyTask())
#
# @hookimpl
# def register_metrics(register):
#     from pathlib import Path
#     register("my-task", "my_metric", Path(__file__).parent / "metrics" / "my_metric")
