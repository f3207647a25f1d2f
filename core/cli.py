"""The ``tunesmith`` command: a thin layer over the Python API.

User mistakes (any TunesmithError) print one line and exit 2; ``--debug`` shows the
traceback instead. Heavy libraries are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager

from .errors import DataError, PluginError, TrainingInterrupted, TunesmithError
from .progress import add_result_options, emit
from .util import atomic_file, split_list


PRECISION_HELP = ("numeric precision of the model: auto (bf16 where the hardware runs it natively), "
                  "fp32, bf16, fp16 (GPU); default fp32")


def add_precision(parser) -> None:
    """The ``--precision`` option of every command that loads a run (apps use it too)."""
    parser.add_argument("--precision", default="fp32", metavar="auto|fp32|bf16|fp16", help=PRECISION_HELP)


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
    register("evaluate", help="compute the task's metrics of a run on a labelled file",
             arguments=_evaluate_args, run=lambda args, plugins: cmd_evaluate(args, plugins))
    register("predict", help="predict for JSONL (or plain text) lines; JSONL out", arguments=_predict_args,
             run=lambda args, plugins: cmd_predict(args, plugins))
    register("plugins", help="list plugins, tasks, strategies and model sources",
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


def _evaluate_args(e) -> None:
    e.add_argument("run_dir")
    e.add_argument("--data", required=True, help="labelled data file")
    e.add_argument("--batch-size", type=int, default=64)
    add_precision(e)
    add_result_options(e)


def _predict_args(pr) -> None:
    pr.add_argument("run_dir")
    pr.add_argument("--input", required=True, help="input file, or - for standard input")
    pr.add_argument("--output", default="-", help="output file (default: standard output)")
    pr.add_argument("--batch-size", type=int, default=32)
    add_precision(pr)
    pr.add_argument("--skip-bad-rows", action="store_true",
                    help="skip lines the task cannot use (reported on stderr) instead of stopping")
    pr.add_argument("--quiet", action="store_true", help="no progress on stderr (only warnings and errors)")
    pr.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                    help="onnx: run an ONNX export (tunesmith export --format onnx) with onnxruntime")


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


def cmd_evaluate(args, plugins) -> int:
    from .predictor import Predictor, check_precision

    if args.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {args.batch_size}")
    from . import data
    from .progress import Terminal
    from .rundir import read_manifest

    check_precision(args.precision)
    read_manifest(args.run_dir)   # a wrong run dir, then a wrong data file, before the model loads
    split = data.load_split(args.data, "evaluation")
    term = Terminal(args.quiet, load=True)
    term.say("load", f"data: {split.where} ({len(split.dataset):,} rows)")
    with term.phase("load", lambda: f"model: {args.run_dir}"):
        predictor = Predictor(args.run_dir, plugins=plugins, precision=args.precision)
    metrics = predictor.evaluate(split, batch_size=args.batch_size, terminal=term)
    emit(_json_line(metrics, args.data), args.output)
    return 0


def cmd_predict(args, plugins) -> int:
    from .predictor import Predictor, check_precision, predict_stream

    if args.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_precision(args.precision)
    _check_model_folder(args)
    name = "<stdin>" if args.input == "-" else args.input
    # bytes: predict_stream decodes each line, so a non-UTF-8 byte is an error naming its line
    src = sys.stdin.buffer if args.input == "-" else _open(args.input)
    total = None
    if src is not sys.stdin.buffer:
        with open(args.input, "rb") as f:   # a cheap pass for the progress bar's total
            total = sum(1 for line in f if line.strip())
    from .progress import silence_libraries

    silence_libraries(load=True)   # the libraries' bars and load reports never reach the terminal
    predictor = Predictor(args.run_dir, plugins=plugins, precision=args.precision, backend=args.backend)
    progress = _progress(total, args.quiet)
    try:
        with _output(args.output) as out:
            stats = predict_stream(predictor, src, name, lambda r: out.write(_json_line(r, name) + "\n"),
                                   batch_size=args.batch_size, skip_bad_rows=args.skip_bad_rows,
                                   progress=progress)
            out.flush()
    finally:
        if progress is not None:
            progress.close()
        if src is not sys.stdin.buffer:
            src.close()
    if stats["skipped"]:
        lines = ", ".join(map(str, stats["skipped_lines"])) + (", ..." if stats["skipped"] > 20 else "")
        print(f"tunesmith: skipped {stats['skipped']} bad row(s) of {name} (line {lines}); "
              f"predicted {stats['rows']}", file=sys.stderr)
    return 0


def _check_model_folder(args) -> None:
    """A wrong run directory (or export) is reported before the input is read."""
    if args.backend == "torch":
        from .rundir import read_manifest

        read_manifest(args.run_dir)
    else:
        from pathlib import Path

        from .predictor import _export_manifest

        _export_manifest(Path(args.run_dir))


@contextmanager
def _output(path: str):
    """Standard output, or a file written beside its target and renamed at the end, so
    that a bad row leaves no partial file."""
    if path == "-":
        yield sys.stdout
        return
    if os.path.isdir(path):
        raise DataError("is a directory; give a file name for --output", file=path)
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise DataError("output folder does not exist", file=path)
    with atomic_file(path) as f:
        yield f


def _progress(total, quiet):
    """A tqdm bar on stderr for long inputs: at once for a file of 1,000+ rows, otherwise
    only once prediction takes over a second (short inputs stay quiet)."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    delay = 0.0 if total is not None and total >= 1000 else 1.0
    return tqdm(total=total, unit="rows", desc="predict", file=sys.stderr, delay=delay, dynamic_ncols=True)


def _open(path: str):
    if os.path.isdir(path):
        raise DataError("is a directory, not an input file", file=path)
    if not os.path.isfile(path):
        raise DataError("file not found", file=path)
    try:
        return open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", file=path) from None


def _json_line(answer, name: str) -> str:
    """One answer as JSON; NaN/inf is not JSON, and only a broken model produces it."""
    try:
        return json.dumps(answer, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise DataError("the model produced a non-finite score (NaN or inf): its weights are broken; "
                        "train the run again", file=name) from None


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
        "model_sources": [{"name": e.name, "description": member(e.obj, "description"),
                           "plugin": e.plugin, "distribution": e.distribution, "version": e.version}
                          for e in reg.model_sources.values()],
    }
    if args.json:
        emit(json.dumps(data, indent=2), args.output)
        return 0
    lines = []
    for section in ("tasks", "strategies", "metrics", "model_sources"):
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
