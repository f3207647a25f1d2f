"""What a command shows on the terminal: one labelled line or bar per phase on stderr, results on stdout.

The libraries' own bars, load reports and developer warnings are replaced, not mixed in;
``quiet`` keeps only warnings and errors. (The Trainer's bars: the terminal plugin.)
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import warnings

from .errors import DataError
from .util import atomic_file, is_main_process

LIBRARIES = r"(tunesmith|transformers|torch|datasets|peft|accelerate|evaluate|huggingface_hub|pyarrow)(\..*)?"
WIDTH = 10   # the phase label column


class Terminal:
    """The stderr side of one command. ``quiet``: no phases, no bars, no summary."""

    def __init__(self, quiet: bool = False, stream=None, load: bool = False):
        self.quiet = quiet or not is_main_process()
        self.stream = stream
        silence_libraries(load)

    @property
    def out(self):
        return self.stream or sys.stderr

    def say(self, phase: str, text: str) -> None:
        if not self.quiet:
            print(f"{phase:<{WIDTH}} {text}", file=self.out, flush=True)

    def bar(self, phase: str, total=None, unit: str = "it", leave: bool = True, position=None):
        from tqdm.auto import tqdm

        # a terminal that reports no size (0 columns: a fresh pty, some CI runners) would get
        # an empty bar from dynamic_ncols; a fixed width then
        width = _columns(self.out)
        return tqdm(total=total, desc=phase, unit=unit, leave=leave, file=self.out,
                    dynamic_ncols=bool(width), ncols=None if width else 100, disable=self.quiet,
                    position=position)

    @contextlib.contextmanager
    def phase(self, phase: str, done=None):
        """Time a block; afterwards say ``done()`` (a callable, so it can read what the
        block made) with the seconds it took."""
        started = time.time()
        yield
        if done is not None and not self.quiet:
            self.say(phase, f"{done()} ({time.time() - started:.1f} s)")

    @contextlib.contextmanager
    def preprocessing(self):
        """datasets' own bar for ``Dataset.map`` (labelled ``preprocess SPLIT`` by
        tunesmith.data.encode) is the preprocess phase's bar; off again afterwards."""
        import datasets

        if not self.quiet:
            datasets.enable_progress_bars()
        try:
            yield
        finally:
            datasets.disable_progress_bars()


def _columns(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def silence_libraries(load: bool = False) -> None:
    """No progress bars, load reports or developer warnings from the libraries
    (``load``: import transformers for it, for a command that loads a model next)."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=LIBRARIES)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=LIBRARIES)
    # datasets and transformers only once something imported them, so a config error stays
    # fast (importing datasets costs a second); data.load_split and the runner call this
    # again right after their imports
    ds = sys.modules.get("datasets")
    if ds is not None:
        ds.disable_progress_bars()
    if load:
        import importlib

        importlib.import_module("transformers")
    hf = sys.modules.get("transformers")
    if hf is not None:
        hf.utils.logging.set_verbosity_error()
        hf.utils.logging.disable_progress_bar()


# ------------------------------------------------------------------ the weight-loading report

class LoadReport:
    """What ``from_pretrained`` did not find in the checkpoint (newly initialised) or did
    not use from it, collected while a model loads (see :func:`load_report`)."""

    def __init__(self):
        self.missing: list[str] = []
        self.unexpected: list[str] = []
        self.mismatched: list[str] = []

    def describe(self, model) -> str:
        """``new head: classifier, 770 parameters, initialised`` (empty when all loaded)."""
        sizes = {}
        try:
            sizes = {k: v.numel() for k, v in model.state_dict().items()}
        except Exception:   # noqa: BLE001 - a description only; never fail a run over it
            pass

        def size(key):
            if key in sizes:
                return sizes[key]
            return next((n for k, n in sizes.items() if k.endswith("." + key) or key.endswith("." + k)), 0)

        parts = []
        if self.missing:
            n = sum(size(k) for k in self.missing)
            parts.append(f"new {'head' if len(_modules(self.missing)) == 1 else 'weights'}: "
                         f"{_names(self.missing)}, {n:,} parameters, initialised")
        if self.mismatched:
            parts.append(f"re-initialised (shape differs from the checkpoint): {_names(self.mismatched)}")
        if self.unexpected:
            parts.append(f"unused from the checkpoint: {_names(self.unexpected)}")
        return "; ".join(parts)


def _modules(keys) -> list[str]:
    """Parameter names → their modules, layer numbers folded (``layer.*.crossattention``)."""
    out = []
    for key in keys:
        mod = re.sub(r"\.\d+(?=\.|$)", ".*", key.rsplit(".", 1)[0] if "." in key else key)
        if mod not in out:
            out.append(mod)
    return out


def _names(keys, most: int = 3) -> str:
    mods = _modules(keys)
    return ", ".join(mods[:most]) + (f" and {len(mods) - most} more" if len(mods) > most else "")


@contextlib.contextmanager
def load_report():
    """Collect transformers' weight-loading report instead of printing its table.

    transformers 5 builds the report from ``LoadStateDictInfo`` in
    ``modeling_utils.log_state_dict_report``; the wrapper keeps its checks (it still
    raises on size mismatches and conversion errors) and records the keys. Without that
    function (another transformers) nothing is collected and the report stays silent."""
    report = LoadReport()
    try:
        from transformers import modeling_utils
    except ImportError:
        yield report
        return
    original = getattr(modeling_utils, "log_state_dict_report", None)
    if original is None:
        yield report
        return
    import logging

    silent = logging.getLogger("tunesmith.load_report")
    silent.propagate, silent.disabled = False, True

    def collect(model, pretrained_model_name_or_path, ignore_mismatched_sizes, loading_info, logger=None):
        report.missing += sorted(getattr(loading_info, "missing_keys", ()) or ())
        report.unexpected += sorted(getattr(loading_info, "unexpected_keys", ()) or ())
        report.mismatched += [m[0] for m in getattr(loading_info, "mismatched_keys", ()) or ()]
        return original(model, pretrained_model_name_or_path, ignore_mismatched_sizes, loading_info,
                        logger=silent)

    modeling_utils.log_state_dict_report = collect
    try:
        yield report
    finally:
        modeling_utils.log_state_dict_report = original


def format_metrics(metrics: dict, most: int = 6) -> str:
    items = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in items[:most])


# ------------------------------------------------------------------ a run's lines

def say_data(terminal: Terminal, splits: dict) -> None:
    rows = []
    for name, split in splits.items():
        n = len(split.dataset) if hasattr(split.dataset, "__len__") else None
        rows.append(f"{name} {n:,} rows" if n is not None else f"{name} (streamed)")
    terminal.say("load", "data: " + ", ".join(rows))


def say_model(terminal: Terminal, run, model, report: LoadReport, seconds: float) -> None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    text = (f"model: {run.config.model} ({type(base).__name__}, {total:,} parameters, "
            f"{trainable:,} trained by strategy {run.strategy.name})")
    new = report.describe(base)
    terminal.say("load", text + (f"; {new}" if new else "") + f" ({seconds:.1f} s)")


def encoded_text(encoded: dict) -> str:
    parts = [f"{name} {len(ds):,} examples" if hasattr(ds, "__len__") else f"{name} (streamed)"
             for name, ds in encoded.items() if ds is not None]
    return ", ".join(parts)


def summary(terminal: Terminal, run, result, seconds: float) -> None:
    """One line: the validation result, how much trained, where it is."""
    from .runner import main_metric

    metric = main_metric(run.task, run.state)
    value = result.metrics.get(metric)
    rows = len(run.splits["validation"].dataset) if "validation" in run.splits else None
    head = f"{metric} {value:.4f}" if isinstance(value, float) else f"{metric} {value}"
    others = format_metrics({k: v for k, v in result.metrics.items() if k != metric})
    pct = 100 * result.trainable_parameters / max(result.total_parameters, 1)
    terminal.say("done", f"{head}{' (' + others + ')' if others else ''} on {rows:,} validation rows; "
                 f"{result.trainable_parameters:,} parameters trained ({pct:.2f}%) in "
                 f"{result.train_runtime_s:.1f} s; {seconds:.0f} s in all; run directory {str(run.run_dir)!r}")


# ------------------------------------------------------------------ results

def add_result_options(parser, output: bool = True) -> None:
    """``--quiet`` (no progress on stderr) and ``--output FILE`` (the result into a file
    instead of stdout) for a command that prints a result."""
    parser.add_argument("--quiet", action="store_true",
                        help="no progress on stderr (only warnings and errors)")
    if output:
        parser.add_argument("--output", default=None, metavar="FILE",
                            help="write the result to FILE instead of standard output")


@contextlib.contextmanager
def output_file(path: str):
    """``--output FILE``, written atomically (a failed command leaves no partial file);
    a folder, or a file in a folder that does not exist, is one clear error first."""
    if os.path.isdir(path):
        raise DataError("is a directory; give a file name for --output", file=path)
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise DataError("output folder does not exist", file=path)
    with atomic_file(path) as f:
        yield f


def emit(text: str, output=None) -> None:
    """A command's result: on stdout, or written atomically into ``output``."""
    if not output or output == "-":
        print(text, flush=True)
        return
    with output_file(output) as f:
        f.write(text if text.endswith("\n") else text + "\n")


def to_numpy(value):
    """Model outputs as numpy for a metric's ``add_batch``: torch tensors (any device,
    any float type) become float32 / integer arrays; tuples and lists element-wise."""
    if isinstance(value, (tuple, list)):
        return type(value)(to_numpy(v) for v in value)
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        return value.numpy()
    return value
