"""Two CPU processes under torchrun (DDP, gloo): one run dir, both ranks trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml


def test_torchrun_two_processes_train_one_run_dir(tiny_config, tmp_path):
    tiny_config["training"].update({"batch_size": 4, "epochs": 1})
    tiny_config["output_dir"] = str(tmp_path / "run")
    (tmp_path / "run").mkdir()   # an empty existing folder: rank 0 may use it, rank 1 must not object
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    logs = tmp_path / "logs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
         f"--log-dir={logs}", "--redirects=3", "-m", "tunesmith", "train", str(config), "--quiet"],
        capture_output=True, text=True, env=env, timeout=600)
    outputs = {int(p.parent.name): p.read_text() for p in logs.rglob("stdout.log")}
    errors = "\n".join(p.read_text()[-2000:] for p in logs.rglob("stderr.log"))
    assert proc.returncode == 0, proc.stderr[-2000:] + errors
    # both ranks ran the whole training and printed the result
    assert sorted(outputs) == [0, 1]
    for text in outputs.values():
        assert json.loads(text[text.rindex("{\n  \"run_dir\""):])["run_dir"] == str(tmp_path / "run")
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    # 64 rows, batch 4 per process, 2 processes: 8 optimizer steps (one process alone takes 16)
    assert metrics["history"][-1]["step"] == 8
    assert json.loads((run / "tunesmith.json").read_text())["status"] == "complete"
    assert (run / "model" / "model.safetensors").is_file()
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == \
        ["README.md", "checkpoints", "curves.png", "metrics.json", "model", "tunesmith.json"]
    assert not [p for p in run.iterdir() if p.name.startswith(".model-")]   # no stray temp folders
