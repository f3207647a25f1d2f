"""Export parity (issue 15): every export is loaded the way a user would, in a Python
without tunesmith, and must reproduce the run's predictions on its validation rows
(``parity.json``); what plain transformers cannot reproduce is refused. The CLI runs as a
real subprocess for the full and int8 exports, in this process (cli_here) for the others;
the parity check itself always runs in its own interpreter."""

import json

import pytest

import tunesmith
from tests.conftest import SAMPLE, read_jsonl, run_cli, write_jsonl
from tests.core.deploy_runs import train_tiny


@pytest.fixture(scope="module")
def runs(tiny_bert, sst2_small, tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    made = {s: train_tiny(tiny_bert, sst2_small, root / s, strategy=s) for s in ("full", "partial", "lora")}
    made["frozen"] = train_tiny(tiny_bert, sst2_small, root / "frozen", strategy="frozen", pooling="cls")
    made["frozen-mean"] = train_tiny(tiny_bert, sst2_small, root / "frozen-mean", strategy="frozen", pooling="mean")
    return made


def _parity(out):
    report = json.loads((out / "parity.json").read_text())
    assert report["passed"] and report["label_agreement"] == 1.0, report
    assert report["tunesmith_importable"] is False   # the check ran without tunesmith
    return report


def test_hf_export_writes_exact_parity_report_cli(runs, sst2_small, tmp_path):
    out = tmp_path / "hf"
    proc = run_cli("export", runs["full"], "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == ""   # no library chatter
    report = _parity(out)
    n_val = len(read_jsonl(sst2_small["validation"]))
    assert report["rows"] == n_val and report["compared"] == n_val + 1   # + one truncated input
    assert report["max_score_diff"] <= 1e-4
    assert "pipeline" in report["loaded_with"]
    assert json.loads(proc.stdout)["parity"]["passed"] is True


@pytest.mark.parametrize("strategy", ["partial", "frozen", "lora"])
def test_hf_export_parity_per_strategy(runs, strategy, tmp_path):
    from tunesmith.apps.export import export

    summary = export(runs[strategy], tmp_path / "hf")
    assert summary["parity"]["passed"] and summary["parity"]["max_score_diff"] <= 1e-4
    _parity(tmp_path / "hf")


def test_mean_pooled_frozen_run_refuses_hf_and_exports_onnx(runs, tmp_path, cli_here):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "hf"
    proc = cli_here("export", runs["frozen-mean"], "--out", out)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert line.startswith("tunesmith: error:") and "\n" not in line
    assert "MEAN of the token vectors" in line and "--format onnx" in line and "strategy.pooling=cls" in line
    assert list(tmp_path.iterdir()) == []   # nothing written, no temporary folder
    # ONNX carries the mean pooling in its graph: exact parity with onnxruntime alone
    proc = cli_here("export", runs["frozen-mean"], "--out", tmp_path / "onnx", "--format", "onnx")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _parity(tmp_path / "onnx")["max_score_diff"] <= 1e-4


def test_failed_parity_leaves_nothing(runs, tmp_path):
    """A model whose saved weights do not give the run's predictions: refused, nothing left."""
    from tunesmith.apps.export import export

    predictor = tunesmith.load(runs["full"])
    import torch

    with torch.no_grad():   # what plain transformers loads now differs from what predict used
        predictor.model.classifier.bias += torch.tensor([5.0, -5.0])
    original = predictor.predict

    def stale_predict(inputs, batch_size=32):
        with torch.no_grad():
            predictor.model.classifier.bias -= torch.tensor([5.0, -5.0])
            try:
                return original(inputs, batch_size)
            finally:
                predictor.model.classifier.bias += torch.tensor([5.0, -5.0])

    predictor.predict = stale_predict
    with pytest.raises(tunesmith.TunesmithError, match="does not reproduce the run"):
        export(runs["full"], tmp_path / "bad", predictor=predictor)
    assert list(tmp_path.iterdir()) == []


def test_int8_onnx_export_and_onnx_backend(runs, tmp_path, cli_here):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "int8"
    proc = run_cli("export", runs["full"], "--out", out, "--format", "onnx", "--quantize", "int8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["quantize"] == "int8" and summary["int8_bytes"] < summary["float_bytes"]
    report = json.loads((out / "parity.json").read_text())
    assert report["passed"] and report["label_agreement"] >= 0.98 and report["quantize"] == "int8"
    import onnx

    # attention fused and quantized (eager attention at export makes the pattern the
    # optimizer knows); only the first block's FFN output projection stays a float MatMul
    graph = onnx.load(str(out / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert "QAttention" in ops and "QEmbedLayerNormalization" in ops, sorted(set(ops))
    assert [n.name for n in graph.node if n.op_type == "MatMul"] == ["/inner/bert/encoder/layer.0/output/dense/MatMul"]
    # predict with onnxruntime from the export folder alone, through the CLI
    texts = [r["text"] for r in read_jsonl(SAMPLE / "validation.jsonl", 20)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    pred = run_cli("predict", out, "--backend", "onnx", "--input", src, "--quiet")
    assert pred.returncode == 0, pred.stderr[-2000:]
    onnx_answers = [json.loads(x) for x in pred.stdout.splitlines()]
    torch_answers = tunesmith.load(runs["full"]).predict(texts)
    agree = sum(a["label"] == b["label"] for a, b in zip(onnx_answers, torch_answers))
    assert len(onnx_answers) == 20 and agree >= 19
    # a run directory is not an ONNX export: one clear line
    bad = cli_here("predict", runs["full"], "--backend", "onnx", "--input", src)
    assert bad.returncode == 2 and "tunesmith export" in bad.stderr and "--format onnx" in bad.stderr


def test_onnx_refused_for_qa(qa_run, tmp_path, cli_here):
    proc = cli_here("export", qa_run, "--out", tmp_path / "x", "--format", "onnx")
    assert proc.returncode == 2 and "does not support ONNX export" in proc.stderr
    assert not (tmp_path / "x").exists()


FACTS = [("Who wrote the letter?", "The letter was written by Ada Lovelace in 1843.", "Ada Lovelace"),
         ("When was the bridge built?", "The old bridge was built in 1790 by local masons.", "1790"),
         ("What colour is the door?", "Behind the garden stands a house whose door is green.", "green"),
         ("Where does the river end?", "The river runs north for miles and ends in the sea.", "the sea"),
         ("Who owns the boat?", "Nobody knew that the small boat belonged to Peter.", "Peter"),
         ("How many cats live here?", "Three cats live here with an old dog.", "Three")]


def _qa_rows(times):
    rows = []
    for k in range(times):
        for q, c, a in FACTS:
            rows.append({"id": f"{k}-{len(rows)}", "question": q, "context": c,
                         "answers": {"text": [a], "answer_start": [c.index(a)]}})
    return rows


@pytest.fixture(scope="module")
def qa_run(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("qa")
    cfg = {"task": "question-answering", "model": str(tiny_bert), "output_dir": str(root / "run"),
           "data": {"train": str(write_jsonl(root / "train.jsonl", _qa_rows(4))),
                    "validation": str(write_jsonl(root / "val.jsonl", _qa_rows(2))),
                    "max_length": 32, "doc_stride": 8},   # short windows: contexts span several
           "training": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3}}
    return tunesmith.train(cfg, quiet=True).run_dir


def test_qa_hf_export_parity(qa_run, tmp_path, cli_here):
    proc = cli_here("export", qa_run, "--out", tmp_path / "hf")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = _parity(tmp_path / "hf")
    assert report["rows"] == 12 and "AutoModelForQuestionAnswering" in report["loaded_with"]
    assert "AutoModelForQuestionAnswering" in (tmp_path / "hf" / "README.md").read_text()


PAIRS = [("the film is good", "good is film the"), ("a funny movie", "movie funny a"),
         ("the plot is dull", "dull is plot the"), ("a great cast", "cast great a")]


def test_generation_hf_export_parity(tiny_bert, tmp_path, cli_here):
    rows = [{"source": s, "target": t} for s, t in PAIRS]
    cfg = {"task": "translation", "model": str(tiny_bert), "output_dir": str(tmp_path / "run"),   # bert2bert
           "data": {"train": str(write_jsonl(tmp_path / "train.jsonl", rows * 4)),
                    "validation": str(write_jsonl(tmp_path / "val.jsonl", rows * 2)), "max_target_length": 8},
           "strategy": {"name": "full"}, "generation": {"max_new_tokens": 6},
           "training": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3}}
    run_dir = tunesmith.train(cfg, quiet=True).run_dir
    proc = cli_here("export", run_dir, "--out", tmp_path / "hf")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = _parity(tmp_path / "hf")
    assert report["rows"] == 8 and "generate()" in report["loaded_with"]


def test_sensitive_nodes_keeps_first_ffn_output_or_whole_first_block():
    from onnx import helper

    from tunesmith.apps.export import sensitive_nodes

    def graph(names):
        return helper.make_model(helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], [f"o{i}"], name=n) for i, n in enumerate(names)], "g", [], []))

    bert = [f"/inner/bert/encoder/layer.{i}/{part}/MatMul" for i in (1, 0)
            for part in ("attention/output/dense", "intermediate/dense", "output/dense")]
    assert sensitive_nodes(graph(bert)) == ["/inner/bert/encoder/layer.0/output/dense/MatMul"]
    other = ["/model/layers.0/attn/proj/MatMul", "/model/layers.0/ff/w2/MatMul", "/model/layers.1/ff/w2/MatMul"]
    assert sensitive_nodes(graph(other)) == other[:2]   # projection not recognised: the whole block
    assert sensitive_nodes(graph(["/head/MatMul"])) == []
