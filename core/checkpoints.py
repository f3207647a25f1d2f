"""Checkpoints that survive a crash (a completion marker written after the Trainer's save), --resume, SIGINT/SIGTERM.

Only folders carrying the marker are resumed from (docs/architecture.md, "Resume after a crash").
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from .util import atomic_file, is_main_process, sha256_file

MARKER = "tunesmith-checkpoint.json"
CHECKPOINTS = "checkpoints"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")
_DIR = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dirs(run_dir) -> list[Path]:
    """``checkpoints/checkpoint-N`` folders, oldest (smallest N) first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def is_valid(ckpt: Path) -> bool:
    """Complete = our marker (written after the save returned) + the Trainer's state."""
    if not (ckpt / MARKER).is_file() or not (ckpt / "trainer_state.json").is_file():
        return False
    try:
        json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(f.name.endswith(".safetensors") for f in ckpt.iterdir())


def latest_valid(run_dir) -> tuple[Path | None, list[Path]]:
    """The newest complete checkpoint and the incomplete ones found (newest first)."""
    bad: list[Path] = []
    for ckpt in reversed(checkpoint_dirs(run_dir)):
        if is_valid(ckpt):
            return ckpt, bad
        bad.append(ckpt)
    return None, bad


def discard(paths) -> None:
    """Remove half-written checkpoints so that the Trainer's rotation never sees them."""
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)


def make_callback(save_steps: int | None, stop: dict):
    """A TrainerCallback: extra saves every ``save_steps``, the completion marker, and
    a save-then-stop when ``stop['signal']`` has been set by a signal handler."""
    from transformers import TrainerCallback

    class TunesmithCheckpoints(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if save_steps and state.global_step % save_steps == 0:
                control.should_save = True
            if stop.get("signal"):
                stop["step"] = state.global_step
                control.should_save = True          # saved right after this hook returns
                control.should_training_stop = True
            return control

        def on_epoch_end(self, args, state, control, **kwargs):
            if stop.get("signal"):
                # the stop-step checkpoint is already saved; an extra evaluation here would
                # add a log entry the uninterrupted run never has
                control.should_evaluate = control.should_save = False
            return control

        def on_save(self, args, state, control, **kwargs):
            if is_main_process():
                ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if ckpt.is_dir():
                    with atomic_file(ckpt / MARKER) as f:
                        f.write(json.dumps({"global_step": state.global_step, "epoch": state.epoch}) + "\n")
            return control

    return TunesmithCheckpoints()


@contextmanager
def graceful_stop(stop: dict):
    """While training, SIGINT/SIGTERM ask for a checkpoint and a clean stop; a second
    signal falls back to the default behaviour (immediate exit)."""
    names = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
    previous = {}

    def handler(signum, frame):
        stop["signal"] = names.get(signum, str(signum))
        print(f"tunesmith: {stop['signal']} received; saving a checkpoint and stopping "
              "(send it again to stop at once)", file=sys.stderr, flush=True)
        for sig, old in previous.items():
            signal.signal(sig, old)

    try:
        for sig in names:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:   # not the main thread (e.g. inside a server): no handlers
        previous.clear()
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


_HASHES: dict = {}


def weights_sha256(model_path: str) -> dict:
    """sha256 of each weight file in a resolved model folder (cached per process)."""
    root = Path(model_path)
    if not root.is_dir():
        return {}
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key not in _HASHES:
        _HASHES[key] = {str(p.relative_to(root)): sha256_file(p) for p in files}
    return _HASHES[key]
