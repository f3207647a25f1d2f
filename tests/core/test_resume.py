"""Kill a real ``python -m tunesmith train`` subprocess, resume it, and compare.

Setup: tiny BERT, 64 SST-2 rows, batch 4 → 16 optimizer steps per epoch, 2 epochs
(32 steps), a checkpoint every 4 steps (``training.save_steps``) and each epoch.
A ``sitecustomize`` on PYTHONPATH slows each training step by 40 ms (test only) so
that a kill lands while training, not after it. Kill points: SIGKILL right after
checkpoint-N is complete (the process has moved on by 0-2 steps by then, sometimes into
writing the next checkpoint): N = 12; N = 8 then again 24 (two crashes); N = 4, then
resumed through the run directory; N = 8 plus a hand-made half-written checkpoint that
must be skipped; SIGTERM and SIGINT (LoRA) for the
graceful stop. Comparison: the resumed run's final validation metrics
(metrics.json "eval") and every tensor of model/*.safetensors must be EXACTLY equal
to those of an uninterrupted run with the same seed (CPU, deterministic kernels).
Each test prints its kill step and the checkpoint it resumed from (pytest -s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

SLOW_STEP = """
import time, transformers
_orig = transformers.Trainer.training_step
def _slow(self, *a, **k):
    time.sleep(0.04)
    return _orig(self, *a, **k)
transformers.Trainer.training_step = _slow
"""


def _config(tmp_path, tiny_bert, sst2_small, name, strategy="full") -> Path:
    cfg = {"task": "text-classification", "model": str(tiny_bert), "output_dir": str(tmp_path / name),
           "data": {"train": str(sst2_small["train"]), "validation": str(sst2_small["validation"])},
           "strategy": {"name": strategy},
           "training": {"epochs": 2, "batch_size": 4, "learning_rate": 1e-3, "logging_steps": 2,
                        "save_steps": 4, "save_total_limit": 2, "seed": 7}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _env(tmp_path) -> dict:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SLOW_STEP, encoding="utf-8")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
            "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def _start(config, env, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tunesmith", "train", str(config), "--quiet", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(run_dir: Path, step: int, proc, timeout=240) -> None:
    target = run_dir / "checkpoints" / f"checkpoint-{step}" / "tunesmith-checkpoint.json"   # complete
    deadline = time.time() + timeout
    while not target.exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended before checkpoint-{step}: {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"no checkpoint-{step} within {timeout} s")
        time.sleep(0.01)


def _steps(run_dir: Path) -> list[int]:
    root = run_dir / "checkpoints"
    return sorted(int(p.name.split("-")[1]) for p in root.glob("checkpoint-*")) if root.is_dir() else []


def _weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted((run_dir / "model").glob("*.safetensors")):
        out.update({f"{f.name}:{k}": v for k, v in load_file(f).items()})
    assert out, f"no safetensors in {run_dir / 'model'}"
    return out


def _assert_same(run_dir: Path, ref_dir: Path) -> None:
    import torch

    got = json.loads((run_dir / "metrics.json").read_text())["eval"]
    want = json.loads((ref_dir / "metrics.json").read_text())["eval"]
    assert got == want   # exact, not approximate
    a, b = _weights(run_dir), _weights(ref_dir)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ after resume: {different[:5]}"


def _finish(config, env, run_dir) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "tunesmith", "train", str(config), "--quiet", "--resume"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    manifest = json.loads((run_dir / "tunesmith.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["resumed_from"] and "checkpoint-" in manifest["resumed_from"]
    return done


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_bert, sst2_small):
    """Uninterrupted runs (full and lora) with the same seed."""
    tmp = tmp_path_factory.mktemp("reference")
    out = {}
    for strategy in ("full", "lora"):
        cfg = _config(tmp, tiny_bert, sst2_small, f"ref-{strategy}", strategy)
        done = subprocess.run([sys.executable, "-m", "tunesmith", "train", str(cfg), "--quiet"],
                              env=_env(tmp), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        out[strategy] = tmp / f"ref-{strategy}"
    return out


@pytest.mark.parametrize("kill_after", [[12], [8, 24]], ids=lambda k: "sigkill-after-" + "-".join(map(str, k)))
def test_sigkill_then_resume_equals_uninterrupted(kill_after, reference, tmp_path, tiny_bert, sst2_small):
    config = _config(tmp_path, tiny_bert, sst2_small, "run")
    run_dir, env = tmp_path / "run", _env(tmp_path)
    for i, step in enumerate(kill_after):
        proc = _start(config, env, *(["--resume"] if i else []))
        _wait_for(run_dir, step, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        print(f"\n[resume] SIGKILL after checkpoint-{step} completed; checkpoints on disk: {_steps(run_dir)}")
    assert not (run_dir / "model").exists()
    done = _finish(config, env, run_dir)
    resumed = json.loads((run_dir / "tunesmith.json").read_text())["resumed_from"]
    print(f"[resume] resumed from {Path(resumed).name}; {done.stderr.strip().splitlines()[:1]}")
    _assert_same(run_dir, reference["full"])


def test_half_written_checkpoint_is_skipped(reference, tmp_path, tiny_bert, sst2_small):
    """A checkpoint folder without the completion marker (a crash mid-save) is never loaded."""
    config = _config(tmp_path, tiny_bert, sst2_small, "run")
    run_dir, env = tmp_path / "run", _env(tmp_path)
    proc = _start(config, env)
    _wait_for(run_dir, 8, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    newest = max(_steps(run_dir))
    broken = run_dir / "checkpoints" / f"checkpoint-{newest + 1}"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)   # truncated, no trainer_state, no marker
    done = _finish(config, env, run_dir)
    assert f"skipping incomplete checkpoint(s): checkpoint-{newest + 1}" in done.stderr
    assert not broken.exists()
    _assert_same(run_dir, reference["full"])


@pytest.mark.parametrize("sig,strategy", [(signal.SIGTERM, "full"), (signal.SIGINT, "lora")],
                         ids=["sigterm-full", "sigint-lora"])
def test_graceful_stop_saves_then_resume_finishes(sig, strategy, reference, tmp_path, tiny_bert, sst2_small):
    config = _config(tmp_path, tiny_bert, sst2_small, "run", strategy)
    run_dir, env = tmp_path / "run", _env(tmp_path)
    proc = _start(config, env)
    _wait_for(run_dir, 8, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("tunesmith: stopped:")]
    assert len(lines) == 1 and "--resume" in lines[0] and "Traceback" not in err, err[-3000:]
    stopped_at = int(lines[0].split("step ")[1].split(";")[0])
    ckpt = run_dir / "checkpoints" / f"checkpoint-{stopped_at}"
    assert (ckpt / "tunesmith-checkpoint.json").is_file()
    assert json.loads((run_dir / "tunesmith.json").read_text())["status"] == "interrupted"
    print(f"\n[resume] {sig.name} ({strategy}) stopped at step {stopped_at}")
    _finish(config, env, run_dir)
    _assert_same(run_dir, reference[strategy])


def test_resume_a_run_dir_and_refusals(reference, tmp_path, tiny_bert, sst2_small):
    """``train RUN_DIR --resume`` works; a complete run and a plain re-run are refused."""
    config = _config(tmp_path, tiny_bert, sst2_small, "run")
    run_dir, env = tmp_path / "run", _env(tmp_path)
    proc = _start(config, env)
    _wait_for(run_dir, 4, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    again = subprocess.run([sys.executable, "-m", "tunesmith", "train", str(config)],
                           env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stderr and "--resume" in again.stderr
    _finish(run_dir, env, run_dir)
    _assert_same(run_dir, reference["full"])
    done = subprocess.run([sys.executable, "-m", "tunesmith", "train", str(run_dir), "--resume"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "already complete" in done.stderr
