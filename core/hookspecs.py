"""The hook specifications every tunesmith plugin implements a subset of.

A plugin is a module (or object) listed in the ``tunesmith`` entry-point group.
It implements hooks by decorating functions with ``tunesmith.hookimpl``. Hooks are
called once per plugin; registration hooks hand the plugin a ``register``
callback, so the registry knows which plugin registered what.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("tunesmith")


@hookspec
def register_tasks(register):
    """Register the tasks this plugin provides.

    :param register: call ``register(task)`` once per task object. A task is any
        object satisfying :class:`tunesmith.Task` (``name``, ``aliases``,
        ``options``, ``main_metric`` and the methods described there).
    :return: nothing; results are ignored. A name (or alias) registered by two
        plugins is an error naming both.
    """


@hookspec
def register_strategies(register):
    """Register the fine-tuning strategies this plugin provides.

    :param register: call ``register(strategy)`` once per strategy object, which
        satisfies :class:`tunesmith.Strategy` (``name``, ``options``,
        ``default_learning_rate``, ``apply(model, task, options)``).
    :return: nothing; results are ignored. Duplicate names are an error.
    """


@hookspec
def register_metrics(register):
    """Register named metrics for a task, possibly someone else's task.

    :param register: call ``register(task_name, metric_name, path)`` where
        ``path`` is a local ``evaluate`` module folder (loaded with
        ``evaluate.load(path)``; never a hub name, which fails offline). The
        metric is computed on validation data alongside the task's own metrics.
    :return: nothing; results are ignored. Duplicate (task, metric) pairs are an error.
    """


@hookspec
def register_model_sources(register):
    """Register resolvers that turn a ``model`` reference into a loadable folder.

    :param register: call ``register(source)`` once per model source; a source has
        ``name``, ``description``, ``matches(ref) -> bool`` and
        ``resolve(ref) -> str`` (a path or hub id ``from_pretrained`` accepts).
        The first source (in registration order: plugins before built-ins) whose
        ``matches`` is true resolves the reference.
    :return: nothing; results are ignored. Duplicate names are an error.
    """


@hookspec
def register_data_sources(register):
    """Register loaders that turn a ``data.train`` / ``validation`` / ``test`` value into a split.

    :param register: call ``register(source)`` once per data source; a source has ``name``,
        ``description``, ``matches(spec) -> bool`` and ``load(spec, name, streaming)``
        (a :class:`tunesmith.data.Split`), and optionally ``locate``, ``raw_rows`` and
        ``decode_error``, which name a bad row's file and line. The first source (in
        registration order: plugins before built-ins) whose ``matches`` is true loads it.
    :return: nothing; results are ignored. Duplicate names are an error.
    """


@hookspec
def configure_trainer(trainer, run):
    """Adjust the Hugging Face ``Trainer`` before training starts.

    Called once per run, after the model, data and strategy are set up. Typical
    uses: ``trainer.add_callback(...)`` for tracking or notifications.

    :param trainer: the ``transformers.Trainer`` (or subclass) about to train.
    :param run: the :class:`tunesmith.runner.Run` (config, task, strategy, paths).
    :return: nothing; every implementation is called.
    """


@hookspec
def on_run_end(run, result):
    """Called after a run directory has been saved successfully.

    :param run: the :class:`tunesmith.runner.Run` that finished.
    :param result: the :class:`tunesmith.RunResult` (``run_dir``, ``metrics``).
    :return: nothing; every implementation is called.
    """


@hookspec
def register_commands(register):
    """Add subcommands to the ``tunesmith`` command (the apps' evaluate, predict, serve,
    export, compare and tune come in this way too).

    :param register: call ``register(name, help=..., arguments=..., run=...)`` once per
        command: ``arguments(parser)`` adds its options to an ``argparse`` subparser,
        ``run(args, plugins)`` does the work and returns the exit code (``args`` is the
        parsed namespace, ``plugins`` the loaded :class:`tunesmith.manager.Plugins`).
        Import heavy libraries inside ``run``: every ``tunesmith`` call, ``--help`` too,
        loads the plugins to build its parser.
    :return: nothing; results are ignored. A name already taken is an error.
    """
