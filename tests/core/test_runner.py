"""The whole pipeline on a tiny BERT built from a config (seconds, not minutes)."""

import json

import pytest
import torch

import tunesmith
from tunesmith import DataError, ModelError, RunDirError
from tests.conftest import SAMPLE, read_jsonl, run_card_snippet, write_jsonl

STRATEGIES = ["full", "partial", "frozen", "lora"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_train_save_load_predict_identical(tiny_config, strategy, sst2_small):
    tiny_config["strategy"] = {"name": strategy, **({"layers": 1} if strategy == "partial" else {})}
    result = tunesmith.train(tiny_config, quiet=True)
    run_dir = result.run_dir
    for name in ("tunesmith.json", "metrics.json", "README.md", "model", "checkpoints"):
        assert (run_dir / name).exists(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) >= {"eval", "history", "trainable_parameters", "total_parameters", "train_runtime_s"}
    assert {"accuracy", "f1", "loss"} <= set(metrics["eval"])
    assert 0 < metrics["trainable_parameters"] <= metrics["total_parameters"]
    if strategy != "full":
        assert metrics["trainable_parameters"] < metrics["total_parameters"]
    assert metrics["history"] and metrics["history"][-1]["epoch"] == 1
    manifest = json.loads((run_dir / "tunesmith.json").read_text())
    assert manifest["status"] == "complete" and manifest["seed"] == 42
    assert manifest["data"]["train"]["sha256"] and manifest["libraries"]["torch"]
    assert manifest["plugins"]["strategies"]["distribution"] == "tunesmith"
    assert not list(run_dir.glob(".model-*")), "temporary folder left behind"
    if strategy == "lora":
        assert (run_dir / "model" / "adapter_config.json").is_file()
    else:
        assert (run_dir / "model" / "model.safetensors").is_file()
    assert not [p for p in (run_dir / "model").iterdir() if p.suffix in (".bin", ".pt", ".pkl")], "pickle in model/"

    texts = [r["text"] for r in read_jsonl(sst2_small["validation"])]
    predictor = tunesmith.load(run_dir)
    loaded = predictor.predict(texts, batch_size=7)
    # reloading must reproduce the validation metrics computed on the in-memory model
    evaluated = predictor.evaluate(sst2_small["validation"])
    assert evaluated["accuracy"] == pytest.approx(metrics["eval"]["accuracy"], abs=1e-9)
    again = tunesmith.load(run_dir).predict(texts, batch_size=32)
    assert [p["label"] for p in loaded] == [p["label"] for p in again]
    assert [p["score"] for p in loaded] == pytest.approx([p["score"] for p in again], abs=1e-5)
    # the model card's plain-Hugging-Face snippet works from inside the run dir
    namespace = run_card_snippet(run_dir)
    if strategy == "lora":
        assert type(namespace["model"]).__name__ == "PeftModelForSequenceClassification"
    else:
        clf = namespace["clf"]
        assert clf(texts[0])[0]["label"] == loaded[0]["label"] in clf.model.config.id2label.values()


def test_in_memory_model_matches_reloaded(tiny_config, sst2_small):
    tiny_config["strategy"] = {"name": "lora"}
    result = tunesmith.train(tiny_config, quiet=True)
    predictor = tunesmith.load(result.run_dir)
    texts = [r["text"] for r in read_jsonl(sst2_small["validation"])]
    batch = predictor.tokenizer(texts, padding=True, return_tensors="pt")
    result.model.eval()
    with torch.inference_mode():
        assert torch.allclose(result.model(**batch).logits, predictor.model(**batch).logits, atol=1e-5)


def test_string_labels_and_label_names(tiny_config, tmp_path):
    rows = read_jsonl(SAMPLE / "train.jsonl", 48)
    names = {0: "neg", 1: "pos"}
    train = write_jsonl(tmp_path / "t.jsonl", [{"sentence": r["text"], "y": names[r["label"]]} for r in rows])
    val = write_jsonl(tmp_path / "v.jsonl", [{"sentence": r["text"], "y": names[r["label"]]} for r in rows[:16]])
    tiny_config["data"] = {"train": str(train), "validation": str(val), "text_column": "sentence",
                           "label_column": "y"}
    result = tunesmith.train(tiny_config, quiet=True)
    config = json.loads((result.run_dir / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    out = tunesmith.load(result.run_dir).predict([{"sentence": "fine"}, "bad"])
    assert {o["label"] for o in out} <= {"neg", "pos"}


def test_multi_label(tiny_config, tmp_path):
    rows = read_jsonl(SAMPLE / "train.jsonl", 64)
    def labels(r):
        out = ["positive" if r["label"] else "negative"]
        return out + (["long"] if len(r["text"]) > 100 else [])
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": r["text"], "label": labels(r)} for r in rows])
    val = write_jsonl(tmp_path / "v.jsonl", [{"text": r["text"], "label": labels(r)} for r in rows[:24]])
    tiny_config["data"] = {"train": str(train), "validation": str(val)}
    result = tunesmith.train(tiny_config, quiet=True)
    assert {"f1_micro", "f1_macro", "accuracy"} <= set(result.metrics)
    out = tunesmith.load(result.run_dir).predict(["a long and winding film"])
    assert set(out[0]["scores"]) == {"long", "negative", "positive"}
    assert all(name in out[0]["scores"] for name in out[0]["labels"])


def test_tiny_llama_classifier_with_lora(tiny_config, tiny_llama):
    tiny_config["model"] = str(tiny_llama)
    tiny_config["strategy"] = {"name": "lora"}
    result = tunesmith.train(tiny_config, quiet=True)
    assert result.trainable_parameters < result.total_parameters
    assert len(tunesmith.load(result.run_dir).predict(["good", "bad film"])) == 2


def test_existing_output_dir_refused_then_overwritten(tiny_config, tmp_path):
    run = tmp_path / "run"
    run.mkdir()   # a (failed) run of tunesmith's own: --overwrite may replace it
    (run / "tunesmith.json").write_text('{"tunesmith_version": "0.2.0", "status": "failed"}')
    (run / "keep.txt").write_text("x")
    with pytest.raises(RunDirError, match="already exists"):
        tunesmith.train(tiny_config)
    assert (run / "keep.txt").exists()
    tunesmith.train(tiny_config, overwrite=True, quiet=True)
    assert not (run / "keep.txt").exists() and (run / "model").is_dir()


def test_bad_inputs_leave_nothing_behind(tiny_config, tmp_path):
    run = tmp_path / "run"
    bad_val = write_jsonl(tmp_path / "v.jsonl", [{"text": "ok", "label": 0}, {"text": "new", "label": 7}])
    tiny_config["data"]["validation"] = str(bad_val)
    with pytest.raises(DataError, match=r"v.jsonl:2: field 'label': label 7 does not occur in the training data"):
        tunesmith.train(tiny_config)
    assert not run.exists()
    tiny_config["data"]["validation"] = tiny_config["data"]["train"]
    tiny_config["model"] = str(tmp_path)   # a folder without config.json
    with pytest.raises(ModelError, match="is not a model folder"):
        tunesmith.train(tiny_config)
    assert not run.exists()


def test_configure_trainer_and_on_run_end_hooks(tiny_config):
    calls = []

    class Watcher:
        @tunesmith.hookimpl
        def configure_trainer(self, trainer, run):
            calls.append(("configure_trainer", type(trainer).__name__, run.task.name))

        @tunesmith.hookimpl
        def on_run_end(self, run, result):
            calls.append(("on_run_end", (result.run_dir / "model").is_dir()))

    plugins = tunesmith.load_plugins()
    plugins.add(Watcher(), "watcher")
    tunesmith.train(tiny_config, plugins=plugins, quiet=True)
    assert calls == [("configure_trainer", "Trainer", "text-classification"), ("on_run_end", True)]


def test_plugin_metric_and_model_source_are_used(tiny_config, tiny_bert, tmp_path):
    """A plugin adds a metric to the built-in task and a model source of its own."""
    module = tmp_path / "neg_rate"
    module.mkdir()
    (module / "neg_rate.py").write_text(
        "import datasets\nimport evaluate\n"
        "class NegRate(evaluate.Metric):\n"
        "    def _info(self):\n"
        "        return evaluate.MetricInfo(description='share of class 0 predictions', citation='',\n"
        "            inputs_description='', features=datasets.Features({'predictions': datasets.Value('int32'),\n"
        "            'references': datasets.Value('int32')}))\n"
        "    def _compute(self, predictions, references):\n"
        "        return {'neg_rate': sum(p == 0 for p in predictions) / len(predictions)}\n")

    class Extra:
        @tunesmith.hookimpl
        def register_metrics(self, register):
            register("text-classification", "neg_rate", module)

        @tunesmith.hookimpl
        def register_model_sources(self, register):
            class Tiny:
                name, description = "tiny", "tiny:NAME — test models"
                def matches(self, ref):
                    return ref.startswith("tiny:")
                def resolve(self, ref):
                    return str(tiny_bert)
            register(Tiny())

    plugins = tunesmith.load_plugins()
    plugins.add(Extra(), "extra")
    tiny_config["model"] = "tiny:bert"
    result = tunesmith.train(tiny_config, plugins=plugins, quiet=True)
    assert 0 <= result.metrics["neg_rate"] <= 1 and "accuracy" in result.metrics
    assert json.loads((result.run_dir / "tunesmith.json").read_text())["model"]["resolved"] == str(tiny_bert)


def test_final_metrics_are_the_best_checkpoints_logged_evaluation():
    """The best checkpoint's evaluation is taken from the log, not computed again."""
    from types import SimpleNamespace

    from tunesmith.runner import _best_evaluation

    log = [{"loss": 0.7, "step": 5}, {"eval_loss": 0.5, "eval_accuracy": 0.8, "eval_runtime": 1.0, "step": 10},
           {"eval_loss": 0.6, "eval_accuracy": 0.7, "eval_runtime": 1.0, "step": 20}]
    trainer = SimpleNamespace(args=SimpleNamespace(load_best_model_at_end=True),
                              state=SimpleNamespace(best_model_checkpoint="/r/checkpoints/checkpoint-10",
                                                    log_history=log))
    assert _best_evaluation(trainer) == {"loss": 0.5, "accuracy": 0.8}
    trainer.state.best_model_checkpoint = None   # nothing kept: the caller evaluates
    assert _best_evaluation(trainer) is None
    trainer.state.best_model_checkpoint = "/r/checkpoints/checkpoint-30"   # no entry at that step
    assert _best_evaluation(trainer) is None
