"""What a user sees: results alone on stdout, labelled phases on stderr (tunesmith.progress)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios

import pytest
import yaml

from tests.conftest import run_cli

PHASES = ("load", "preprocess", "train", "evaluate", "save", "done")


def _run_in_terminal(args, cwd=None, timeout=600) -> tuple[int, str, str]:
    """``python -m tunesmith ARGS`` with stdout and stderr on two pseudo-terminals (as in
    an interactive shell, where libraries draw bars and colours); returns (rc, out, err)."""
    fds = [pty.openpty(), pty.openpty()]
    for _, slave in fds:   # a terminal's size, as a real one reports it
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith", *map(str, args)], cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=fds[0][1], stderr=fds[1][1],
                            env={**os.environ, "COLUMNS": "120"})
    for _, slave in fds:
        os.close(slave)
    chunks = {fds[0][0]: b"", fds[1][0]: b""}
    open_fds = set(chunks)
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [], timeout)
        if not ready:
            proc.kill()
            raise TimeoutError(args)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:   # EIO: the child closed its end
                data = b""
            if not data:
                open_fds.discard(fd)
                os.close(fd)
            chunks[fd] += data
    rc = proc.wait(timeout=60)
    out, err = (chunks[fds[i][0]].decode("utf-8", "replace").replace("\r\n", "\n") for i in (0, 1))
    return rc, out, err


def test_train_in_a_terminal_prints_one_json_document_and_labelled_phases(tiny_config, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({**tiny_config, "training": {**tiny_config["training"], "logging_steps": 1}}))
    rc, out, err = _run_in_terminal(["train", config])
    assert rc == 0, err
    result = json.loads(out)   # the whole of stdout is one JSON document (raises otherwise)
    assert set(result["eval"]) >= {"accuracy", "f1", "loss"}
    lines = [ln.strip() for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    for phase in PHASES:
        assert any(ln.startswith(phase) for ln in lines), (phase, err)
    # the train bar carries the loss and the main metric; the load report is a sentence
    assert any(ln.startswith("train") and "loss=" in ln and "accuracy=" in ln for ln in lines), err
    assert "new head: classifier, 66 parameters, initialised" in err   # 32 hidden x 2 labels + 2
    for noise in ("LOAD REPORT", "MISSING", "Writing model shards", "{'loss'", "'eval_loss'",
                  "Generating train split", "FutureWarning", "Saving the dataset"):
        assert noise not in err and noise not in out, noise
    done = next(ln for ln in lines if ln.startswith("done"))
    assert f"accuracy {result['eval']['accuracy']:.4f}" in done and "32 validation rows" in done
    run_dir = result["run_dir"]

    # evaluate: --output FILE takes the result, --quiet leaves stderr empty
    target = tmp_path / "metrics.json"
    proc = run_cli("evaluate", run_dir, "--data", tiny_config["data"]["validation"], "--output", target, "--quiet")
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stderr
    assert json.loads(target.read_text())["rows"] == 32
    proc = run_cli("evaluate", run_dir, "--data", tiny_config["data"]["validation"])
    assert proc.returncode == 0 and json.loads(proc.stdout)["accuracy"] == result["eval"]["accuracy"]
    assert "evaluate" in proc.stderr and "load" in proc.stderr
    # a wrong data file is named before the model loads (no load line for the model)
    proc = run_cli("evaluate", run_dir, "--data", tmp_path / "nope.jsonl")
    assert proc.returncode == 2 and "nope.jsonl" in proc.stderr and "model:" not in proc.stderr
    proc = run_cli("plugins", "--json", "--output", tmp_path / "plugins.json")
    assert proc.returncode == 0 and proc.stdout == ""
    assert json.loads((tmp_path / "plugins.json").read_text())["tasks"]


def test_quiet_train_writes_the_result_into_output_and_nothing_on_stderr(tiny_config, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    target = tmp_path / "result.json"
    proc = run_cli("train", config, "--quiet", "--output", target)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    assert json.loads(target.read_text())["run_dir"] == tiny_config["output_dir"]


def test_a_main_metric_the_task_does_not_compute_fails_before_training(tiny_config, plugins):
    from tunesmith import PluginError, hookimpl
    from tunesmith.plugins.classification import TextClassification
    from tunesmith.runner import train

    class Misnamed(TextClassification):
        name, aliases = "misnamed-classification", ()

        def main_metric_for(self, state):
            return "acc"   # the metrics report "accuracy"

    class Plugin:
        @hookimpl
        def register_tasks(self, register):
            register(Misnamed())

        @hookimpl
        def register_metrics(self, register):
            from tunesmith.plugins.classification import METRICS_DIR

            for name in ("accuracy", "f1"):
                register("misnamed-classification", name, METRICS_DIR / name)

    plugins.add(Plugin(), "misnamed")
    with pytest.raises(PluginError, match=r"main_metric 'acc' is not one of .*accuracy, f1, loss"):
        train({**tiny_config, "task": "misnamed-classification"}, plugins=plugins)
    assert not os.path.exists(tiny_config["output_dir"])   # nothing written


def test_load_report_names_new_and_unused_weights_in_words():
    from tunesmith.progress import LoadReport

    report = LoadReport()
    report.missing = [f"decoder.bert.encoder.layer.{i}.crossattention.self.query.weight" for i in range(2)]
    report.unexpected = ["cls.predictions.bias"]
    text = report.describe(model=None)
    assert text == ("new head: decoder.bert.encoder.layer.*.crossattention.self.query, 0 parameters, "
                    "initialised; unused from the checkpoint: cls.predictions")


def test_metric_inputs_are_numpy_whatever_the_trainer_hands_over():
    import numpy as np
    import torch

    from tunesmith.progress import to_numpy

    logits, labels = to_numpy((torch.ones(2, 3, dtype=torch.bfloat16), torch.tensor([0, 1])))
    assert isinstance(logits, np.ndarray) and logits.dtype == np.float32
    assert isinstance(labels, np.ndarray) and labels.dtype == np.int64
    assert to_numpy(np.zeros(2)).shape == (2,)
