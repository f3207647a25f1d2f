"""training.precision / --precision: detection, the fallback line, bf16 end to end, bad values."""

from __future__ import annotations

import json

import pytest
import yaml

import tunesmith
from tunesmith import hookimpl, load_plugins, precision
from tests.conftest import read_jsonl


def test_detection_reads_the_cpu_flags(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n\n")
    assert precision.cpu_flags(str(info)) == {"fpu", "sse2", "avx2", "avx512f", "avx512_vnni"}
    assert precision.cpu_flags(str(tmp_path / "missing")) is None
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_flags", lambda path="/proc/cpuinfo": {"avx2", "avx512_bf16"})
    assert precision.detect() == ("bf16", "this CPU has avx512_bf16")
    monkeypatch.setattr(precision, "cpu_flags", lambda path="/proc/cpuinfo": {"avx2", "amx_tile", "amx_bf16"})
    assert precision.detect()[0] == "bf16"
    monkeypatch.setattr(precision, "cpu_flags", lambda path="/proc/cpuinfo": None)
    assert precision.detect()[0] == "fp32"
    # an explicit choice is taken as given; fp16 on a CPU would silently stay float32, so it is refused
    assert precision.choose("bf16", "cpu") == ("bf16", "requested")
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        precision.choose("fp16", "cpu")


def test_auto_without_native_bf16_trains_float32_and_says_why_once(tiny_config, monkeypatch, capfd):
    # a machine without bf16 support: no GPU, CPU flags without avx512_bf16 / amx_bf16
    import torch

    from tunesmith import runner

    monkeypatch.setattr(runner, "_has_accelerator", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_flags", lambda path="/proc/cpuinfo": {"sse2", "avx2", "avx512f"})
    seen = {}

    class Capture:
        @hookimpl
        def configure_trainer(self, trainer, run):
            seen["bf16"], seen["fp16"] = trainer.args.bf16, trainer.args.fp16

    plugins = load_plugins()
    plugins.add(Capture(), "capture")
    tiny_config["training"]["precision"] = "auto"
    result = tunesmith.train(tiny_config, plugins=plugins, quiet=True)
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if "precision" in ln]
    assert lines == ["tunesmith: precision auto: float32 (this CPU has no native bfloat16 "
                     "(no avx512_bf16 or amx_bf16))"], err
    assert seen == {"bf16": False, "fp16": False}
    manifest = json.loads((result.run_dir / "tunesmith.json").read_text())
    assert manifest["precision"]["requested"] == "auto" and manifest["precision"]["used"] == "fp32"
    assert "**Precision:** float32; chosen by `precision: auto`" in (result.run_dir / "README.md").read_text()


def test_bf16_training_end_to_end_weights_stay_float32(tiny_config, sst2_small):
    import torch
    from safetensors import safe_open

    tiny_config["training"]["precision"] = "bf16"
    seen = {"dtypes": set()}

    class Capture:   # the dtype the classifier's matmul produced while the Trainer trained
        @hookimpl
        def configure_trainer(self, trainer, run):
            seen["bf16"] = trainer.args.bf16
            classifier = trainer.model.classifier
            classifier.register_forward_hook(lambda m, i, out: seen["dtypes"].add(out.dtype))

    plugins = load_plugins()
    plugins.add(Capture(), "capture")
    result = tunesmith.train(tiny_config, plugins=plugins, quiet=True)
    assert seen["bf16"] is True and seen["dtypes"] == {torch.bfloat16}
    run_dir = result.run_dir
    manifest = json.loads((run_dir / "tunesmith.json").read_text())
    assert manifest["precision"] == {"requested": "bf16", "used": "bf16", "why": "requested"}
    assert manifest["config"]["training"]["precision"] == "bf16"
    assert "bfloat16 mixed precision" in (run_dir / "README.md").read_text()
    with safe_open(str(run_dir / "model" / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"F32"}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["eval"]["accuracy"] <= 1

    # inference in bf16: answers stay float32 where they leave the model (JSON numbers)
    texts = [r["text"] for r in read_jsonl(sst2_small["validation"])]
    bf16 = tunesmith.load(run_dir, precision="bf16")
    fp32 = tunesmith.load(run_dir, precision="fp32")
    assert bf16.precision == "bf16" and fp32.precision == "fp32"
    enc = bf16.tokenizer(texts[:4], padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert bf16.model(**enc).logits.dtype == torch.float32
    answers = bf16.predict(texts)
    json.dumps(answers)
    assert all(isinstance(a["score"], float) for a in answers)
    same = sum(a["label"] == b["label"] for a, b in zip(answers, fp32.predict(texts)))
    assert same >= len(texts) - 2   # bf16 rounding may flip a near-tie of the tiny random model
    assert bf16.metadata()["precision"] == {"inference": "bf16", "training": "bf16"}
    assert set(bf16.evaluate(sst2_small["validation"])) >= {"accuracy", "rows"}


def test_bad_precision_values_one_line_exit_2(tiny_config, tmp_path, cli_here):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    proc = cli_here("train", config, "--set", "training.precision=fp8")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"tunesmith: error: {config}: training.precision must be one of auto, fp32, bf16, fp16, got 'fp8'"]
    assert not (tmp_path / "run").exists()
    import torch

    if not torch.cuda.is_available():   # fp16 autocast needs a GPU: refused before the run dir exists
        proc = cli_here("train", config, "--set", "training.precision=fp16")
        assert proc.returncode == 2 and not (tmp_path / "run").exists()
        assert proc.stderr.strip().splitlines() == [
            f"tunesmith: error: {config}: training.precision: fp16 needs a CUDA GPU; on CPU use bf16 or auto"]
    proc = cli_here("predict", tmp_path / "no-run", "--input", "-", "--precision", "half", input="hi\n")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "tunesmith: error: --precision must be one of auto, fp32, bf16, fp16, got 'half'"]


def test_bf16_on_cpu_uses_eager_attention_and_the_same_arithmetic(tiny_bert):
    """bf16 on a CPU switches SDPA attention to eager (faster there, see cpu_attention);
    float32 and other devices keep what the model has; eager computes what SDPA did."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2,
                                                               attn_implementation="sdpa").eval()
    batch = {"input_ids": torch.tensor([[2, 7, 9, 3, 0], [2, 8, 3, 0, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])}
    with torch.no_grad():
        before = model(**batch).logits
    for used, device in (("fp32", "cpu"), ("bf16", "cuda")):
        precision.cpu_attention(model, used, device)
        assert model.config._attn_implementation == "sdpa"
    precision.cpu_attention(model, "bf16", "cpu")
    assert model.config._attn_implementation == "eager"
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, before, atol=1e-5)
