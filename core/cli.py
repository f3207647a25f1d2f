"""The ``tunesmith`` command: a thin layer over the Python API.

User mistakes (any TunesmithError) print one line and exit 2; ``--debug`` shows the
traceback instead. Heavy libraries are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import DataError, TunesmithError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tunesmith", description="Fine-tune pretrained Transformer models "
                                "with pluggable tasks and strategies.")
    p.add_argument("--version", action="version", version=f"tunesmith {_version()}")
    p.add_argument("--disable-plugins", metavar="A,B", default="",
                   help="plugins not to load (also TUNESMITH_DISABLE_PLUGINS)")
    p.add_argument("--plugins", dest="allow_plugins", metavar="A,B", default="",
                   help="load only these plugins (also TUNESMITH_PLUGINS)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="fine-tune a model from a YAML/JSON config")
    t.add_argument("config", help="YAML or JSON run configuration")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.epochs=1 (repeatable)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing output_dir")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="compute the task's metrics of a run on a labelled file")
    e.add_argument("run_dir")
    e.add_argument("--data", required=True, help="labelled data file")
    e.add_argument("--batch-size", type=int, default=64)

    pr = sub.add_parser("predict", help="predict for JSONL (or plain text) lines; JSONL out")
    pr.add_argument("run_dir")
    pr.add_argument("--input", required=True, help="input file, or - for standard input")
    pr.add_argument("--output", default="-", help="output file (default: standard output)")
    pr.add_argument("--batch-size", type=int, default=32)

    c = sub.add_parser("compare", help="train one config under several strategies; table + chart")
    c.add_argument("config", help="YAML or JSON run configuration")
    c.add_argument("--strategies", default="full,partial,frozen,lora", metavar="A,B",
                   help="strategies to compare (default: full,partial,frozen,lora)")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="[STRATEGY:]KEY=VALUE",
                   help="override a config value for every run, or for one strategy with a prefix, "
                        "e.g. --set lora:training.learning_rate=5e-4 (repeatable)")
    c.add_argument("--output", default="comparison", help="output folder (default: comparison)")
    c.add_argument("--overwrite", action="store_true", help="replace existing runs in the output folder")

    pl = sub.add_parser("plugins", help="list plugins, tasks, strategies and model sources")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("tunesmith")
    except metadata.PackageNotFoundError:
        return "unknown"


def _plugins(args):
    from .manager import load_plugins

    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    return load_plugins(disable=split(args.disable_plugins), allow=split(args.allow_plugins))


def cmd_train(args) -> int:
    from .runner import train

    result = train(args.config, args.overrides, plugins=_plugins(args), overwrite=args.overwrite,
                   quiet=args.quiet)
    print(json.dumps({"run_dir": str(result.run_dir), "eval": result.metrics,
                      "trainable_parameters": result.trainable_parameters,
                      "train_runtime_s": result.train_runtime_s}, indent=2))
    return 0


def cmd_compare(args) -> int:
    from .compare import compare

    strategies = [x.strip() for x in args.strategies.split(",") if x.strip()]
    plugin_args = [f"--disable-plugins={args.disable_plugins}", f"--plugins={args.allow_plugins}"]
    result = compare(args.config, strategies, args.overrides, args.output, plugins=_plugins(args),
                     overwrite=args.overwrite, plugin_args=plugin_args,
                     echo=lambda msg: print(msg, file=sys.stderr, flush=True))
    from .compare import render_markdown

    print(render_markdown(result))
    print(f"\nwritten: {os.path.join(args.output, 'comparison.md')}, comparison.json, comparison.png")
    return 0 if any("error" not in r for r in result["runs"]) else 1


def cmd_evaluate(args) -> int:
    from .predictor import Predictor

    metrics = Predictor(args.run_dir, plugins=_plugins(args)).evaluate(args.data, batch_size=args.batch_size)
    print(json.dumps(metrics, indent=2))
    return 0


def _read_inputs(stream, name: str):
    """Yield inputs: a JSON object or string per line, or the raw line as text."""
    for n, line in enumerate(stream, 1):
        text = line.rstrip("\n")
        if not text.strip():
            continue
        if text.lstrip()[:1] in ("{", '"', "["):
            try:
                yield json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"malformed JSON: {exc.msg}", file=name, line=n) from None
        else:
            yield text


def cmd_predict(args) -> int:
    from .predictor import Predictor

    predictor = Predictor(args.run_dir, plugins=_plugins(args))
    src = sys.stdin if args.input == "-" else _open(args.input)
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    try:
        chunk: list = []
        for item in _read_inputs(src, "<stdin>" if args.input == "-" else args.input):
            chunk.append(item)
            if len(chunk) >= 256:   # bounded memory on large inputs
                _write(out, predictor.predict(chunk, batch_size=args.batch_size))
                chunk = []
        if chunk:
            _write(out, predictor.predict(chunk, batch_size=args.batch_size))
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _open(path: str):
    if not os.path.isfile(path):
        raise DataError("file not found", file=path)
    return open(path, encoding="utf-8")


def _write(out, results) -> None:
    for r in results:
        out.write(json.dumps(r, ensure_ascii=False) + "\n")
    out.flush()


def cmd_plugins(args) -> int:
    plugins = _plugins(args)
    reg = plugins.registry
    data = {
        "plugins": [{"name": i.name, "distribution": i.distribution, "version": i.version,
                     "module": i.module, "status": i.status, **({"error": i.error} if i.error else {})}
                    for i in plugins.infos.values()],
        "tasks": [{"name": e.name, "aliases": list(getattr(e.obj, "aliases", ())), "plugin": e.plugin,
                   "distribution": e.distribution, "version": e.version} for e in reg.tasks.values()],
        "strategies": [{"name": e.name, "description": getattr(e.obj, "description", ""), "plugin": e.plugin,
                        "distribution": e.distribution, "version": e.version} for e in reg.strategies.values()],
        "metrics": [{"task": t, "name": m, "plugin": e.plugin, "distribution": e.distribution,
                     "version": e.version} for (t, m), e in reg.metrics.items()],
        "model_sources": [{"name": e.name, "description": getattr(e.obj, "description", ""),
                           "plugin": e.plugin, "distribution": e.distribution, "version": e.version}
                          for e in reg.model_sources.values()],
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for section in ("tasks", "strategies", "metrics", "model_sources"):
        print(f"{section.replace('_', ' ')}:")
        for item in data[section] or [{"name": "(none)"}]:
            if "plugin" not in item:
                print(f"  {item['name']}")
                continue
            label = f"{item['task']}:{item['name']}" if section == "metrics" else item["name"]
            alias = f" (aliases: {', '.join(item['aliases'])})" if item.get("aliases") else ""
            print(f"  {label}{alias}  — {item['distribution']} {item['version']} [{item['plugin']}]")
    failed = [p for p in data["plugins"] if p["status"] != "loaded"]
    if failed:
        print("not loaded:")
        for p in failed:
            print(f"  {p['name']} ({p['distribution']} {p['version']}): {p['status']}"
                  + (f": {p['error']}" if p.get("error") else ""))
    return 0


COMMANDS = {"train": cmd_train, "compare": cmd_compare, "evaluate": cmd_evaluate, "predict": cmd_predict, "plugins": cmd_plugins}


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except TunesmithError as exc:
        if args.debug:
            raise
        print(f"tunesmith: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tunesmith: interrupted", file=sys.stderr)
        return 130
