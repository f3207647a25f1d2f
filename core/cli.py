"""The ``tunesmith`` command: train and plugins, plus the commands plugins and apps register.

User mistakes (any TunesmithError) print one line and exit 2; ``--debug`` shows the
traceback instead. Heavy libraries are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import PluginError, TrainingInterrupted, TunesmithError
from .progress import add_result_options, emit
from .util import split_list


def _global_options(p) -> None:
    p.add_argument("--disable-plugins", metavar="A,B", default="",
                   help="plugins not to load (also TUNESMITH_DISABLE_PLUGINS)")
    p.add_argument("--plugins", dest="allow_plugins", metavar="A,B", default="",
                   help="load only these plugins (also TUNESMITH_PLUGINS)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser(plugins):
    """The argument parser with the core's commands and those plugins add through the
    ``register_commands`` hook; returns ``(parser, {command: run})``."""
    p = argparse.ArgumentParser(prog="tunesmith", description="Fine-tune pretrained Transformer models "
                                "with pluggable tasks and strategies.")
    p.add_argument("--version", action="version", version=f"tunesmith {_version()}")
    _global_options(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    commands: dict = {}

    def register(name: str, *, help: str, arguments, run) -> None:
        if not isinstance(name, str) or not name or name in commands:
            owner = getattr(run, "__module__", "?")
            raise PluginError(owner, f"command {name!r} is already registered or not a name")
        arguments(sub.add_parser(name, help=help, description=help))
        commands[name] = run

    _core_commands(register)
    plugins.call("register_commands", register=register)
    return p, commands


def _core_commands(register) -> None:
    register("train", help="fine-tune a model from a YAML/JSON config", arguments=_train_args,
             run=lambda args, plugins: cmd_train(args, plugins))
    register("plugins", help="list plugins, tasks, strategies, model and data sources",
             arguments=_plugins_args, run=lambda args, plugins: cmd_plugins(args, plugins))


def _plugins_args(pl) -> None:
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    add_result_options(pl)


def _train_args(t) -> None:
    t.add_argument("config", help="YAML or JSON run configuration (with --resume: or a run directory)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.epochs=1 (repeatable)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing output_dir")
    add_result_options(t)
    t.add_argument("--resume", action="store_true",
                   help="continue the run in output_dir from its newest complete checkpoint")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("tunesmith")
    except metadata.PackageNotFoundError:
        return "unknown"


def _plugins(args):
    from .manager import load_plugins

    return load_plugins(disable=split_list(args.disable_plugins), allow=split_list(args.allow_plugins))


def cmd_train(args, plugins) -> int:
    from .runner import train

    result = train(args.config, args.overrides, plugins=plugins, overwrite=args.overwrite,
                   quiet=args.quiet, resume=args.resume)
    emit(json.dumps({"run_dir": str(result.run_dir), "eval": result.metrics,
                     "trainable_parameters": result.trainable_parameters,
                     "train_runtime_s": result.train_runtime_s}, indent=2), args.output)
    return 0


def cmd_plugins(args, plugins) -> int:
    from .protocols import member

    reg = plugins.registry
    data = {
        "plugins": [{"name": i.name, "distribution": i.distribution, "version": i.version,
                     "module": i.module, "status": i.status, **({"error": i.error} if i.error else {})}
                    for i in plugins.infos.values()],
        "tasks": [{"name": e.name, "aliases": list(member(e.obj, "aliases")), "plugin": e.plugin,
                   "distribution": e.distribution, "version": e.version} for e in reg.tasks.values()],
        "strategies": [{"name": e.name, "description": member(e.obj, "description"), "plugin": e.plugin,
                        "distribution": e.distribution, "version": e.version} for e in reg.strategies.values()],
        "metrics": [{"task": t, "name": m, "plugin": e.plugin, "distribution": e.distribution,
                     "version": e.version} for (t, m), e in reg.metrics.items()],
        **{kind: [{"name": e.name, "description": member(e.obj, "description"), "plugin": e.plugin,
                   "distribution": e.distribution, "version": e.version} for e in getattr(reg, kind).values()]
           for kind in ("model_sources", "data_sources")},
    }
    if args.json:
        emit(json.dumps(data, indent=2), args.output)
        return 0
    lines = []
    for section in ("tasks", "strategies", "metrics", "model_sources", "data_sources"):
        lines.append(f"{section.replace('_', ' ')}:")
        for item in data[section] or [{"name": "(none)"}]:
            if "plugin" not in item:
                lines.append(f"  {item['name']}")
                continue
            label = f"{item['task']}:{item['name']}" if section == "metrics" else item["name"]
            alias = f" (aliases: {', '.join(item['aliases'])})" if item.get("aliases") else ""
            lines.append(f"  {label}{alias}  — {item['distribution']} {item['version']} [{item['plugin']}]")
    failed = [p for p in data["plugins"] if p["status"] != "loaded"]
    if failed:
        lines.append("not loaded:")
        for p in failed:
            lines.append(f"  {p['name']} ({p['distribution']} {p['version']}): {p['status']}"
                         + (f": {p['error']}" if p.get("error") else ""))
    emit("\n".join(lines), args.output)
    return 0


def main(argv=None) -> int:
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _global_options(early)
    known = early.parse_known_args(argv)[0]
    try:
        return _main(argv, known)
    except KeyboardInterrupt:
        print("tunesmith: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if known.debug:
            raise
        message, code = _failure(exc)
        print(f"tunesmith: {message}", file=sys.stderr)
        return code


def _failure(exc: Exception) -> tuple[str, int]:
    """The one line a user sees for an exception, and the exit code."""
    if isinstance(exc, TrainingInterrupted):
        return f"stopped: {exc}", exc.exit_code
    if isinstance(exc, TunesmithError):   # the user's mistake
        return f"error: {_one_line(exc)}", 2
    if isinstance(exc, MemoryError):
        return "error: out of memory (try a smaller training.batch_size)", 2
    # a bug, not a user mistake: say so, and keep it visible
    return (f"internal error: {type(exc).__name__}: {_one_line(exc)} "
            "(rerun with --debug for the traceback, and please report it)"), 1


def _main(argv, early) -> int:
    # the plugins come first: they add commands, so they must be loaded to parse the rest
    plugins = _plugins(early)
    parser, commands = build_parser(plugins)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    return commands[args.command](args, plugins)


def _one_line(exc) -> str:
    return " ".join(str(exc).split())
