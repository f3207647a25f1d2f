"""The ``tunesmith`` command: a thin layer over the Python API.

User mistakes (any TunesmithError) print one line and exit 2; ``--debug`` shows the
traceback instead. Heavy libraries are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import DataError, TrainingInterrupted, TunesmithError


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
    t.add_argument("config", help="YAML or JSON run configuration (with --resume: or a run directory)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.epochs=1 (repeatable)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing output_dir")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in output_dir from its newest complete checkpoint")

    e = sub.add_parser("evaluate", help="compute the task's metrics of a run on a labelled file")
    e.add_argument("run_dir")
    e.add_argument("--data", required=True, help="labelled data file")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--precision", default="fp32", metavar="auto|fp32|bf16|fp16",
                   help="numeric precision of the model: auto (bf16 where the hardware runs it natively), "
                        "fp32, bf16, fp16 (GPU); default auto")

    pr = sub.add_parser("predict", help="predict for JSONL (or plain text) lines; JSONL out")
    pr.add_argument("run_dir")
    pr.add_argument("--input", required=True, help="input file, or - for standard input")
    pr.add_argument("--output", default="-", help="output file (default: standard output)")
    pr.add_argument("--batch-size", type=int, default=32)
    pr.add_argument("--precision", default="fp32", metavar="auto|fp32|bf16|fp16",
                    help="numeric precision of the model: auto (bf16 where the hardware runs it natively), "
                         "fp32, bf16, fp16 (GPU); default auto")
    pr.add_argument("--skip-bad-rows", action="store_true",
                    help="skip lines the task cannot use (reported on stderr) instead of stopping")
    pr.add_argument("--quiet", action="store_true", help="no progress bars (nothing on stderr unless something is wrong)")
    pr.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                    help="onnx: run an ONNX export (tunesmith export --format onnx) with onnxruntime")

    s = sub.add_parser("serve", help="serve a run over HTTP (JSON API; needs tunesmith[serve])")
    s.add_argument("run_dir")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--precision", default="fp32", metavar="auto|fp32|bf16|fp16",
                   help="numeric precision of the model: auto (bf16 where the hardware runs it natively), "
                        "fp32, bf16, fp16 (GPU); default auto")
    s.add_argument("--max-batch-size", type=int, default=32,
                   help="most inputs the model runs at once when batching requests (default 32)")
    s.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long to collect concurrent requests into one batch (default 5)")
    s.add_argument("--no-micro-batching", dest="micro_batching", action="store_false",
                   help="run each request on its own")
    s.add_argument("--max-body-bytes", type=int, default=1_000_000,
                   help="reject larger request bodies with 413 (default 1,000,000)")
    s.add_argument("--max-inputs", type=int, default=256,
                   help="reject requests with more inputs with 413 (default 256)")
    s.add_argument("--max-batch-tokens", type=int, default=16384,
                   help="most tokens in one model batch; a request needing more gets 413 (default 16384)")
    s.add_argument("--max-queue", type=int, default=1024,
                   help="most inputs waiting for the model; beyond it 503 with Retry-After (default 1024)")
    s.add_argument("--timeout-s", type=float, default=30.0,
                   help="answer 504 and drop the work when a request waits longer (default 30)")
    s.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="onnx: serve an ONNX export (tunesmith export --format onnx) with onnxruntime")

    x = sub.add_parser("export", help="export a run as a plain Hugging Face folder or ONNX")
    x.add_argument("run_dir")
    x.add_argument("--out", required=True, help="folder to write (must not exist unless --overwrite)")
    x.add_argument("--format", choices=("hf", "onnx"), default="hf")
    x.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    x.add_argument("--quantize", choices=("int8",), default=None,
                   help="with --format onnx: int8 weights (onnxruntime dynamic quantization)")
    x.add_argument("--parity-data", default=None, metavar="FILE",
                   help="labelled rows for the parity check (default: the run's validation file)")

    c = sub.add_parser("compare", help="train one config under several strategies; table + chart")
    c.add_argument("config", help="YAML or JSON run configuration")
    c.add_argument("--strategies", default="full,partial,frozen,lora", metavar="A,B",
                   help="strategies to compare (default: full,partial,frozen,lora)")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="[STRATEGY:]KEY=VALUE",
                   help="override a config value for every run, or for one strategy with a prefix, "
                        "e.g. --set lora:training.learning_rate=5e-4 (repeatable)")
    c.add_argument("--output", default="comparison", help="output folder (default: comparison)")
    c.add_argument("--overwrite", action="store_true", help="replace existing runs in the output folder")

    tu = sub.add_parser("tune", help="search hyperparameters with Optuna (needs tunesmith[tune])")
    tu.add_argument("config", help="YAML or JSON run configuration (an optional tune: section holds the space)")
    tu.add_argument("--space", action="append", default=[], metavar="KEY=DIST",
                    help="a searched key: loguniform(a,b), uniform(a,b), int(a,b) or choice(a,b,...), e.g. "
                         "--space training.learning_rate=loguniform(1e-5,1e-2) (repeatable)")
    tu.add_argument("--trials", type=int, help="trials in the study, finished ones included (default 10)")
    tu.add_argument("--sampler", choices=("tpe", "random"), help="default tpe")
    tu.add_argument("--pruner", choices=("median", "halving", "none"),
                    help="stop trials early on the validation metric (default median)")
    tu.add_argument("--eval-steps", type=int, metavar="N",
                    help="evaluate (and report to the pruner) every N steps instead of each epoch")
    tu.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value for every trial (repeatable)")
    tu.add_argument("--output", help="tune folder (default: the config's output_dir + '-tune'); "
                                     "run again with the same folder to continue")
    tu.add_argument("--storage", metavar="URL",
                    help="Optuna RDB storage shared by workers (default: sqlite in the tune folder)")
    tu.add_argument("--study-name", help="study name in the storage (default tunesmith)")

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
                   quiet=args.quiet, resume=args.resume)
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


def cmd_tune(args) -> int:
    from .tune import render_markdown, tune

    result = tune(args.config, args.space, args.overrides, trials=args.trials, sampler=args.sampler,
                  pruner=args.pruner, eval_steps=args.eval_steps, output=args.output, storage=args.storage,
                  study_name=args.study_name, plugins=_plugins(args),
                  echo=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(render_markdown(result))
    best = result["best"]
    if best:
        print(f"\nbest: trial {best['number']}, {result['metric']}={best['value']:.4f}, "
              + ", ".join(f"{k}={v}" for k, v in best["params"].items()))
    return 0 if best else 1


def cmd_evaluate(args) -> int:
    from .predictor import Predictor

    if args.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {args.batch_size}")
    metrics = Predictor(args.run_dir, plugins=_plugins(args), precision=args.precision).evaluate(
        args.data, batch_size=args.batch_size)
    print(_json_line(metrics, args.data))
    return 0


def cmd_predict(args) -> int:
    import tempfile

    from .predictor import Predictor, predict_stream

    if args.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {args.batch_size}")
    from .predictor import check_precision
    from .rundir import read_manifest

    check_precision(args.precision)
    if args.backend == "torch":
        read_manifest(args.run_dir)   # a wrong run dir is reported before the input is read
    else:
        from pathlib import Path

        from .predictor import _export_manifest

        _export_manifest(Path(args.run_dir))
    name = "<stdin>" if args.input == "-" else args.input
    # bytes: predict_stream decodes each line, so a non-UTF-8 byte is an error naming its line
    src = sys.stdin.buffer if args.input == "-" else _open(args.input)
    total = None
    if src is not sys.stdin.buffer:
        with open(args.input, "rb") as f:   # a cheap pass for the progress bar's total
            total = sum(1 for line in f if line.strip())
    if args.quiet:
        from .runner import quiet_libraries

        quiet_libraries()
    predictor = Predictor(args.run_dir, plugins=_plugins(args), precision=args.precision,
                          backend=args.backend)
    tmp = None
    if args.output == "-":
        out = sys.stdout
    else:
        # write beside the target and rename at the end: a bad row leaves no partial file
        folder = os.path.dirname(os.path.abspath(args.output))
        if os.path.isdir(args.output):
            raise DataError("is a directory; give a file name for --output", file=args.output)
        if not os.path.isdir(folder):
            raise DataError("output folder does not exist", file=args.output)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(args.output)}.")
        out = os.fdopen(fd, "w", encoding="utf-8")
    progress = _progress(total, args.quiet)
    try:
        stats = predict_stream(predictor, src, name,
                               lambda r: out.write(_json_line(r, name) + "\n"),
                               batch_size=args.batch_size, skip_bad_rows=args.skip_bad_rows,
                               progress=progress)
        out.flush()
        if tmp:
            out.close()
            os.replace(tmp, args.output)
            tmp = None
    finally:
        if progress is not None:
            progress.close()
        if tmp:
            out.close()
            os.unlink(tmp)
        if src is not sys.stdin.buffer:
            src.close()
    if stats["skipped"]:
        lines = ", ".join(map(str, stats["skipped_lines"])) + (", ..." if stats["skipped"] > 20 else "")
        print(f"tunesmith: skipped {stats['skipped']} bad row(s) of {name} (line {lines}); "
              f"predicted {stats['rows']}", file=sys.stderr)
    return 0


def _progress(total, quiet):
    """A tqdm bar on stderr for long inputs: at once for a file of 1,000+ rows, otherwise
    only once prediction takes over a second (short inputs stay quiet)."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    delay = 0.0 if total is not None and total >= 1000 else 1.0
    return tqdm(total=total, unit="rows", desc="predict", file=sys.stderr, delay=delay, dynamic_ncols=True)


def cmd_serve(args) -> int:
    from .serve import serve

    for name in ("max_batch_size", "max_inputs", "max_batch_tokens", "max_queue", "timeout_s"):
        if getattr(args, name) <= 0:
            raise DataError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")

    serve(args.run_dir, host=args.host, port=args.port, plugins=_plugins(args),
          max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
          micro_batching=args.micro_batching, max_body_bytes=args.max_body_bytes, backend=args.backend,
          precision=args.precision,
          max_inputs=args.max_inputs, max_batch_tokens=args.max_batch_tokens, max_queue=args.max_queue,
          timeout_s=args.timeout_s)
    return 0


def cmd_export(args) -> int:
    from .export import export
    from .runner import quiet_libraries

    quiet_libraries()   # stdout carries the summary, stderr only tunesmith's own lines
    out = export(args.run_dir, args.out, format=args.format, plugins=_plugins(args), overwrite=args.overwrite,
                 quantize=args.quantize, parity_data=args.parity_data)
    print(json.dumps(out, indent=2))
    return 0


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


def cmd_plugins(args) -> int:
    from .protocols import member
    plugins = _plugins(args)
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


COMMANDS = {"train": cmd_train, "compare": cmd_compare, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "serve": cmd_serve, "export": cmd_export, "plugins": cmd_plugins, "tune": cmd_tune}


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except TrainingInterrupted as exc:
        if args.debug:
            raise
        print(f"tunesmith: stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except TunesmithError as exc:
        if args.debug:
            raise
        print(f"tunesmith: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tunesmith: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        if args.debug:
            raise
        print("tunesmith: error: out of memory (try a smaller training.batch_size)", file=sys.stderr)
        return 2
    except Exception as exc:   # a bug, not a user mistake: say so, and keep it visible
        if args.debug:
            raise
        print(f"tunesmith: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(rerun with --debug for the traceback, and please report it)", file=sys.stderr)
        return 1


def _one_line(exc) -> str:
    return " ".join(str(exc).split())
