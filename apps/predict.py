"""The predict and evaluate apps: load a run directory (or an ONNX export) and predict, batched; JSONL streams."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import rundir
from ..config import GenerationConfig, attach_generation, build_dataclass
from ..errors import ConfigError, DataError, RowError, RunDirError
from ..manager import Plugins, hookimpl, load_plugins
from ..progress import Terminal, add_result_options, emit, output_file, silence_libraries, to_numpy
from ..protocols import member


class Predictor:
    """``Predictor(run_dir).predict(inputs)``: the task's answers for a list of inputs
    (rows as in the training data without the label, or plain strings)."""

    def __init__(self, run_dir, plugins: Plugins | None = None, device: str | None = None,
                 precision: str = "fp32", backend: str = "torch", threads: int | None = None):
        check_precision(precision)
        self.run_dir = Path(run_dir)
        self.backend = backend
        if backend not in BACKENDS:
            raise ConfigError([f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}"])
        if backend == "onnx":
            self.manifest = _export_manifest(self.run_dir)
            model_dir = self.run_dir
        else:
            if (self.run_dir / EXPORT_MANIFEST).is_file() and not (self.run_dir / rundir.MANIFEST).is_file():
                raise RunDirError(f"{str(run_dir)!r} is an ONNX export, not a run directory; "
                                  "use it with --backend onnx")
            self.manifest = rundir.read_manifest(self.run_dir)
            model_dir = self.run_dir / rundir.MODEL
            if self.manifest.get("status") == "complete" and not model_dir.is_dir():
                raise RunDirError(f"run {str(run_dir)!r} completed but its {rundir.MODEL}/ folder is missing "
                                  "(deleted?); train it again with --overwrite")
        if self.manifest.get("status") != "complete" or not model_dir.is_dir():
            raise RunDirError(f"run {str(run_dir)!r} did not finish (no saved model); "
                              f"train it again or resume it")
        self.plugins = plugins or load_plugins()
        registry = self.plugins.registry
        self.task = registry.task(self.manifest["task"])
        self.state = self.manifest["task_state"]
        problems: list[str] = []
        data_opts = {k: v for k, v in self.manifest["config"]["data"].items()
                     if k not in ("train", "validation", "test")}
        self.options = build_dataclass(self.task.options, data_opts, "data.", problems)
        attach_generation(self.options, build_dataclass(
            GenerationConfig, self.manifest["config"].get("generation") or {}, "generation.", problems))
        if problems:
            raise ConfigError(problems, source=str(self.run_dir / rundir.MANIFEST))
        self.trust_remote_code = bool(self.manifest.get("trust_remote_code", False))
        if backend == "onnx":
            from ..runner import load_tokenizer

            self.tokenizer = load_tokenizer(str(model_dir), False)
            self.model = OnnxModel(model_dir / "model.onnx", member(self.task, "onnx_output") or "logits",
                                   threads=threads)
            return
        self.model, self.tokenizer = self._load(model_dir, registry)
        if device:
            self.model.to(device)
        self.model.eval()
        self.precision = self._precision(precision)

    def _precision(self, requested: str) -> str:
        """Resolve ``auto | fp32 | bf16 | fp16`` for the model's device and run the model's
        forward under that autocast (outputs cast back to float32, so scores stay float32)."""
        from .. import precision as mp

        device = next(self.model.parameters()).device.type
        try:
            used, _ = mp.choose(requested, device, where="--precision")
        except ValueError as exc:
            raise ConfigError([str(exc)]) from None
        mp.wrap_forward(self.model, used, device)
        return used

    def _load(self, model_dir: Path, registry) -> tuple[Any, Any]:
        from ..runner import load_tokenizer

        tokenizer = load_tokenizer(str(model_dir), self.trust_remote_code)
        kwargs = {"trust_remote_code": self.trust_remote_code}

        def build(path=None):
            """The task's model from ``path``, by default the run's base model (what an
            adapter strategy loads its adapter over)."""
            if path is None:
                ref = self.manifest["model"]["reference"]
                path = registry.model_source_for(ref).resolve(ref)
            return self.task.build_model(str(path), tokenizer, self.state, self.options, kwargs)

        # the strategy that saved the folder reloads it; one no longer installed: the task builds it
        entry = registry.strategies.get(self.manifest.get("strategy"))
        load = member(entry.obj, "load_model") if entry else None
        return (load(model_dir, build) if load else build(model_dir)), tokenizer

    def predict(self, inputs: list, batch_size: int = 32) -> list:
        """Answers in input order. Inputs are sorted by length first so that each batch
        pads to similar lengths (dynamic padding wastes little), whatever the task does."""
        if not isinstance(inputs, list):
            inputs = [inputs]
        order = sorted(range(len(inputs)), key=lambda i: _length_key(inputs[i]))
        try:
            for i, item in enumerate(inputs):
                if isinstance(item, str) and not item.strip():
                    raise RowError(None, f"input {i + 1}: empty text")
            answers = self.task.predict(self.model, self.tokenizer, [inputs[i] for i in order],
                                        self.state, self.options, batch_size)
        except RowError as exc:   # a task's input check: a user mistake, not a crash
            raise DataError(str(exc), file="prediction input", field=exc.field) from None
        results: list = [None] * len(inputs)
        for i, answer in zip(order, answers):
            results[i] = answer
        return results

    def check_input(self, item) -> None:
        """Raise RowError for an input the task cannot use (the task's optional
        ``check_input(item, options)``; without it, errors surface from ``predict``)."""
        if isinstance(item, str) and not item.strip():   # as {"text": ""} is refused
            raise RowError(None, "empty text")
        check = member(self.task, "check_input")
        if check is not None:
            check(item, self.options)

    def truncated(self, inputs: list) -> list | None:
        """Per input, whether it is longer than the model takes and gets cut as in training
        (the task's optional ``truncated(inputs, tokenizer, options)``); None if unknown."""
        fn = member(self.task, "truncated")
        return None if fn is None else list(fn(inputs, self.tokenizer, self.options))

    def metadata(self) -> dict:
        """What a server reports about this run: task, labels, model, strategy, metrics."""
        import dataclasses

        metrics_path = self.run_dir / rundir.METRICS
        metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
        return {"task": self.task.name, "labels": self.state.get("labels"),
                "model": self.manifest["model"]["reference"], "strategy": self.manifest.get("strategy"),
                "metrics": metrics.get("eval", {}), "options": dataclasses.asdict(self.options),
                "tunesmith_version": self.manifest.get("tunesmith_version"),
                "precision": {"inference": self.precision,
                              "training": (self.manifest.get("precision") or {}).get("used", "fp32")},
                "trained_at": self.manifest.get("finished_at")}

    def evaluate(self, path, batch_size: int = 64, limit: int | None = None, terminal=None) -> dict:
        """The task's metrics on a labelled data file (or a loaded ``tunesmith.data.Split``),
        as ``metrics.json`` reports them; ``terminal`` (tunesmith.progress) shows the phases."""
        import torch
        from torch.utils.data import DataLoader

        from .. import data

        term = terminal or Terminal(quiet=True)
        split = path if isinstance(path, data.Split) else \
            data.load_split(path, "evaluation", registry=self.plugins.registry)
        if limit is not None:
            split.dataset = split.dataset.select(range(min(limit, len(split.dataset))))
        data.check(split, self.task, self.options, self.state)
        rows = split.dataset
        modules = self.plugins.registry.metrics_for(self.task.name)
        custom = member(self.task, "evaluate")
        if custom is not None:
            return custom(self.model, self.tokenizer, rows, self.state, self.options, batch_size, modules)
        with term.preprocessing():
            dataset = data.encode(split, self.task, self.tokenizer, self.state, self.options, train=False)
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=self.task.collator(self.tokenizer, self.options))
        acc = self.task.metrics(self.state, self.options, modules)
        device = next(self.model.parameters()).device
        bar = term.bar("evaluate", total=len(loader), unit="batch")
        with torch.inference_mode(), bar:
            for batch in loader:
                labels = batch.pop("labels")
                logits = self.model(**{k: v.to(device) for k, v in batch.items()}).logits
                # numpy, as in training (tunesmith.runner's metrics adapter): one type for add_batch
                acc.add_batch(to_numpy(logits), to_numpy(labels))
                bar.update(1)
        return {**acc.compute(), "rows": len(rows)}


def check_precision(requested) -> None:
    from ..precision import CHOICES

    if requested not in CHOICES:
        raise ConfigError([f"--precision must be one of {', '.join(CHOICES)}, got {requested!r}"])


BACKENDS = ("torch", "onnx")
EXPORT_MANIFEST = "tunesmith-export.json"   # written by `tunesmith export --format onnx`


def _export_manifest(folder: Path) -> dict:
    path = folder / EXPORT_MANIFEST
    if not path.is_file() or not (folder / "model.onnx").is_file():
        hint = (f"export it first: tunesmith export {str(folder)} --format onnx --quantize int8 --out "
                f"{str(folder).rstrip('/')}-onnx" if (folder / rundir.MANIFEST).is_file() else
                "pass a folder written by `tunesmith export --format onnx`")
        raise RunDirError(f"--backend onnx needs an ONNX export (model.onnx and {EXPORT_MANIFEST}) in "
                          f"{str(folder)!r}; {hint}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunDirError(f"{str(path)!r} is not valid JSON ({exc})") from None


class OnnxModel:
    """An onnxruntime session that looks like the transformers model the tasks call:
    ``model(**encoding).<output>`` as a torch tensor, ``parameters()`` on the CPU, ``eval()``.
    So a task's own ``predict`` (length-sorted batches, dynamic padding, truncation) runs
    unchanged on the exported graph."""

    def __init__(self, path: Path, output: str, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RunDirError("--backend onnx needs onnxruntime: pip install 'tunesmith[onnx]'") from None
        import torch

        opts = ort.SessionOptions()
        # all the cores this process may use (os.cpu_count() ignores CPU affinity / cgroups);
        # one inter-op thread: a transformer graph is a chain, parallel inside each op
        opts.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle pool threads sleep rather than spin: where other processes share the cores
        # (a server beside its clients, a shared machine) spinning threads take their time
        # (MiniLM int8, 872 SST-2 sentences, loaded 2-core machine: 6.1 s instead of 10.0 s)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output = output
        self._param = torch.nn.Parameter(torch.zeros(()), requires_grad=False)
        self.training = False

    def parameters(self):
        yield self._param

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def __call__(self, **enc):
        import types

        import numpy as np
        import torch

        feed = {n: enc[n].cpu().numpy().astype(np.int64) for n in self.input_names if n in enc}
        result = self.session.run([self.output], feed)[0]
        return types.SimpleNamespace(**{self.output: torch.from_numpy(result)})


def _length_key(item) -> int:
    """A cheap size estimate of an input (characters of its text fields)."""
    if isinstance(item, str):
        return len(item)
    if isinstance(item, dict):
        return sum(len(v) for v in item.values() if isinstance(v, str))
    return 0


def predict_stream(predictor: Predictor, lines, name: str, write, batch_size: int = 32,
                   chunk_size: int = 1024, skip_bad_rows: bool = False, progress=None) -> dict:
    """Predict for an iterable of text lines (JSONL objects, JSON strings or raw text) and
    call ``write(answer)`` for each in input order.

    Memory stays bounded: at most ``chunk_size`` inputs are held; within a chunk inputs are
    sorted by length into batches. A bad line raises DataError naming it, or is skipped and
    counted with ``skip_bad_rows``. Returns ``{"rows": n, "skipped": k, "skipped_lines": [...]}``.
    """
    stats = {"rows": 0, "skipped": 0, "skipped_lines": []}
    chunk: list = []

    def flush():
        for answer in predictor.predict(chunk, batch_size=batch_size):
            write(answer)
        if progress is not None:
            progress.update(len(chunk))
        stats["rows"] += len(chunk)
        chunk.clear()

    for n, line in enumerate(lines, 1):
        try:
            if isinstance(line, bytes):   # decoded here, so that a bad byte names its line
                line = line.decode("utf-8-sig" if n == 1 else "utf-8")
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            item = _parse_line(text, json)
            predictor.check_input(item)
        except (ValueError, RowError) as exc:   # JSONDecodeError is a ValueError
            field = getattr(exc, "field", None)
            if isinstance(exc, json.JSONDecodeError):
                msg = f"malformed JSON: {exc.msg} (column {exc.colno})"
            elif isinstance(exc, UnicodeDecodeError):
                msg = f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
            else:
                msg = str(exc)
            if not skip_bad_rows:
                raise DataError(msg, file=name, line=n, field=field) from None
            stats["skipped"] += 1
            if len(stats["skipped_lines"]) < 20:
                stats["skipped_lines"].append(n)
            if progress is not None:
                progress.update(1)
            continue
        chunk.append(item)
        if len(chunk) >= chunk_size:
            flush()
    if chunk:
        flush()
    return stats


def _parse_line(text: str, json):
    """A JSON object or string per line; any other line is the raw text."""
    if text.lstrip()[:1] in ("{", '"', "["):
        try:
            item = json.loads(text)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
        if not isinstance(item, (dict, str)):
            raise ValueError(f"expected a JSON object or string, got {type(item).__name__}")
        return item
    return text


# ---------------------------------------------------------------- the `evaluate` and `predict` commands

PRECISION_HELP = ("numeric precision of the model: auto (bf16 where the hardware runs it natively), "
                  "fp32, bf16, fp16 (GPU); default fp32")


def add_precision(parser) -> None:
    """The ``--precision`` option of every command that loads a run (serve and export too)."""
    parser.add_argument("--precision", default="fp32", metavar="auto|fp32|bf16|fp16", help=PRECISION_HELP)


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
    pr.add_argument("--backend", choices=BACKENDS, default="torch",
                    help="onnx: run an ONNX export (tunesmith export --format onnx) with onnxruntime")


def cmd_evaluate(args, plugins) -> int:
    if args.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {args.batch_size}")
    from .. import data

    check_precision(args.precision)
    rundir.read_manifest(args.run_dir)   # a wrong run dir, then a wrong data file, before the model loads
    split = data.load_split(args.data, "evaluation", registry=plugins.registry)
    term = Terminal(args.quiet, load=True)
    term.say("load", f"data: {split.where} ({len(split.dataset):,} rows)")
    with term.phase("load", lambda: f"model: {args.run_dir}"):
        predictor = Predictor(args.run_dir, plugins=plugins, precision=args.precision)
    metrics = predictor.evaluate(split, batch_size=args.batch_size, terminal=term)
    emit(_json_line(metrics, args.data), args.output)
    return 0


def cmd_predict(args, plugins) -> int:
    if args.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_precision(args.precision)
    # a wrong run directory (or export) is reported before the input is read
    if args.backend == "torch":
        rundir.read_manifest(args.run_dir)
    else:
        _export_manifest(Path(args.run_dir))
    name = "<stdin>" if args.input == "-" else args.input
    # bytes: predict_stream decodes each line, so a non-UTF-8 byte is an error naming its line
    src = sys.stdin.buffer if args.input == "-" else _open(args.input)
    total = None
    if src is not sys.stdin.buffer:
        with open(args.input, "rb") as f:   # a cheap pass for the progress bar's total
            total = sum(1 for line in f if line.strip())
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


@contextmanager
def _output(path: str):
    """Standard output, or a file renamed into place at the end (a bad row leaves none)."""
    if path == "-":
        yield sys.stdout
        return
    with output_file(path) as f:
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


@hookimpl
def register_commands(register):
    register("evaluate", help="compute the task's metrics of a run on a labelled file",
             arguments=_evaluate_args, run=cmd_evaluate)
    register("predict", help="predict for JSONL (or plain text) lines; JSONL out", arguments=_predict_args,
             run=cmd_predict)
