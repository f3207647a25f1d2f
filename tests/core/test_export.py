"""`tunesmith export`: plain HF folders (LoRA merged) and ONNX, checked for parity."""

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import tunesmith
from tests.conftest import SAMPLE, read_jsonl, run_cli
from tests.core.deploy_runs import train_tiny

# Runs transformers.pipeline in a Python where tunesmith is NOT importable: -I -S skips
# site-packages' .pth files (the editable tunesmith install is one); site-packages itself
# is put back on sys.path so transformers and torch still import.
PIPELINE_SCRIPT = r"""
import importlib.util, json, sys
sys.path.append(sys.argv[1])
if importlib.util.find_spec("tunesmith") is not None:
    sys.exit("tunesmith is importable here")
from transformers import pipeline
pipe = pipeline("text-classification", model=sys.argv[2], device="cpu")
texts = json.load(open(sys.argv[3]))
out = pipe(texts, batch_size=int(sys.argv[5]), truncation=True)
json.dump(out, open(sys.argv[4], "w"))
"""


def pipeline_without_tunesmith(folder, texts, tmp_path, batch_size=1) -> list:
    script, src, dst = tmp_path / "pipe.py", tmp_path / "texts.json", tmp_path / "pipe-out.json"
    script.write_text(PIPELINE_SCRIPT)
    src.write_text(json.dumps(texts))
    proc = subprocess.run([sys.executable, "-I", "-S", str(script), sysconfig.get_paths()["purelib"],
                           str(folder), str(src), str(dst), str(batch_size)], capture_output=True, text=True, timeout=600,
                          env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(dst.read_text())


def assert_same(pipe_out, ours, atol=1e-4):
    assert [p["label"] for p in pipe_out] == [o["label"] for o in ours]
    worst = max(abs(p["score"] - o["score"]) for p, o in zip(pipe_out, ours))
    assert worst <= atol, worst


@pytest.fixture(scope="module")
def runs(tiny_bert, sst2_small, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {s: train_tiny(tiny_bert, sst2_small, root / s, strategy=s) for s in ("full", "lora")}


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_hf_export_pipeline_parity_without_tunesmith(runs, strategy, tmp_path, cli_here):
    run_dir = runs[strategy]
    out = tmp_path / "exported"
    proc = cli_here("export", run_dir, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["format"] == "hf" and "model.safetensors" in summary["files"]
    assert not (out / "adapter_config.json").exists(), "LoRA was not merged"
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "0", "1": "1"}
    card = (out / "README.md").read_text()
    assert 'pipeline("text-classification"' in card and strategy in card
    texts = [r["text"] for r in read_jsonl(SAMPLE / "validation.jsonl", 60)] + ["word " * 80]   # one cut
    ours = tunesmith.load(run_dir).predict(texts, batch_size=16)
    assert_same(pipeline_without_tunesmith(out, texts, tmp_path), ours)


def test_export_refuses_existing_folder_and_leaves_nothing(runs, tmp_path, cli_here):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = cli_here("export", runs["full"], "--out", out)
    assert proc.returncode == 2 and "exists and is not empty" in proc.stderr
    assert (out / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]   # no temporary folder left


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_onnx_export_matches_pytorch_logits(runs, strategy, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    import torch

    from tunesmith.apps.export import export, merged_model

    predictor = tunesmith.load(runs[strategy], precision="fp32")   # the graph is float32
    summary = export(runs[strategy], tmp_path / "onnx", format="onnx", predictor=predictor)
    assert summary["max_abs_diff"] <= 1e-4 and "model.onnx" in summary["files"]
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    texts = [r["text"] for r in read_jsonl(SAMPLE / "validation.jsonl", 32)]
    enc = predictor.tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {n: enc[n].numpy().astype(np.int64) for n in names})[0]
    with torch.no_grad():
        expected = merged_model(predictor.model)(**enc).logits.numpy()
    assert np.abs(got - expected).max() <= 1e-4
    assert json.loads((tmp_path / "onnx" / "config.json").read_text())["id2label"] == {"0": "0", "1": "1"}
