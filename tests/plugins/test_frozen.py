"""Frozen strategy: pooling the checkpoint was trained for, cached backbone features
(plugins/frozen), also for a task from outside tunesmith. Tiny models built from configs."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass

import pytest

import tunesmith
from tunesmith import hookimpl


@pytest.fixture
def tiny_st_bert(tiny_bert, tmp_path):
    """The tiny BERT dressed as a sentence-transformers checkpoint trained for mean pooling."""
    folder = tmp_path / "tiny-st"
    shutil.copytree(tiny_bert, folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))
    return folder


def frozen_config(cfg, tmp_path, name, **strategy):
    cfg = {**cfg, "output_dir": str(tmp_path / name), "strategy": {"name": "frozen", **strategy}}
    cfg["training"] = {**cfg["training"], "epochs": 2}
    return cfg


def test_trained_pooling_is_read_from_sentence_transformers_config(tiny_st_bert, tiny_bert):
    from tunesmith.plugins.frozen.pooling import trained_pooling

    assert trained_pooling(str(tiny_st_bert)) == "mean"
    assert trained_pooling(str(tiny_bert)) is None


def test_cached_features_train_exactly_like_the_normal_path(tiny_config, tiny_st_bert, tmp_path, caplog):
    tiny_config["model"] = str(tiny_st_bert)
    with caplog.at_level(logging.INFO, logger="tunesmith"):
        cached = tunesmith.train(frozen_config(tiny_config, tmp_path, "cached"), quiet=True)
    assert "feature cache: backbone features" in caplog.text
    assert "pooling 'mean', read from the sentence-transformers config" in caplog.text
    naive = tunesmith.train(frozen_config(tiny_config, tmp_path, "naive", cache_features=False), quiet=True)
    # same data order, same head, same dropout draws: the same training, up to float rounding
    assert cached.metrics["accuracy"] == pytest.approx(naive.metrics["accuracy"], abs=1e-9)
    assert cached.metrics["loss"] == pytest.approx(naive.metrics["loss"], rel=1e-4)
    assert [h["train_loss"] for h in cached.history] == pytest.approx([h["train_loss"] for h in naive.history],
                                                                       rel=1e-4)
    assert cached.trainable_parameters == naive.trainable_parameters < naive.total_parameters


def test_mean_pooled_model_reloads_and_predicts_identically(tiny_config, tiny_st_bert, tmp_path, sst2_small):
    import torch

    tiny_config["model"] = str(tiny_st_bert)
    result = tunesmith.train(frozen_config(tiny_config, tmp_path, "run"), quiet=True)
    saved = json.loads((result.run_dir / "model" / "config.json").read_text())
    assert saved["tunesmith_pooling"] == "mean"
    assert saved["architectures"] == ["BertForSequenceClassification"]   # still a standard architecture
    texts = [json.loads(line)["text"] for line in sst2_small["validation"].read_text().splitlines()]
    predictor = tunesmith.load(result.run_dir)
    assert type(predictor.model.base_model.pooler).__name__ == "Pooler"
    enc = result.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    result.model.eval()
    with torch.inference_mode():
        expected = torch.softmax(result.model(**enc).logits, -1)
        # mean pooling really ignores padding: one text alone gives the same logits as in a padded batch
        alone = torch.softmax(result.model(**result.tokenizer(texts[:1], return_tensors="pt")).logits, -1)
    assert torch.allclose(alone[0], expected[0], atol=1e-5)
    got = predictor.predict(texts)
    names = predictor.state["labels"]
    for row, probs in zip(got, expected):
        assert row["label"] == names[int(probs.argmax())]
        assert row["score"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_cls_pooling_keeps_a_plain_model(tiny_config, tiny_bert, tmp_path):
    result = tunesmith.train(frozen_config(tiny_config, tmp_path, "cls"), quiet=True)
    saved = json.loads((result.run_dir / "model" / "config.json").read_text())
    assert "tunesmith_pooling" not in saved   # no sentence-transformers config: the BERT pooler


def test_feature_cache_falls_back_and_says_why(tiny_config, tiny_llama, tmp_path, caplog):
    tiny_config["model"] = str(tiny_llama)
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        result = tunesmith.train(frozen_config(tiny_config, tmp_path, "llama"), quiet=True)
    assert "feature cache not used (LlamaForSequenceClassification has no BERT-style pooler" in caplog.text
    assert (result.run_dir / "model").is_dir()


def test_bad_pooling_option_is_a_config_error(tiny_config, tmp_path):
    with pytest.raises(tunesmith.ConfigError, match="strategy.pooling must be one of auto, cls, mean"):
        tunesmith.train(frozen_config(tiny_config, tmp_path, "bad", pooling="max"), quiet=True)
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------- a third-party task

@dataclass
class RegressionOptions:
    max_length: int = 64


class Regression:
    """A task from outside tunesmith: a float per text (the SST-2 labels as 0.0/1.0), MSE
    loss. Its collator, like most hand-written ones, reads ``labels`` from every row."""

    name = "text-regression-test"
    aliases = ()
    options = RegressionOptions
    main_metric = "mse"
    greater_is_better = False

    def check_batch(self, batch, options, state=None):
        for i, (text, label) in enumerate(zip(batch["text"], batch["label"])):
            if not isinstance(text, str) or not isinstance(label, (int, float)):
                raise tunesmith.RowError("text", "needs a text and a numeric label", row=i)

    def setup(self, dataset, options):
        return {}

    def build_model(self, model_path, tokenizer, state, options, load_kwargs):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(
            model_path, num_labels=1, problem_type="regression", **load_kwargs)

    def encode_batch(self, batch, tokenizer, state, options, train):
        enc = tokenizer(batch["text"], truncation=True, max_length=options.max_length)
        return {**enc, "labels": [float(x) for x in batch["label"]],
                "length": [len(ids) for ids in enc["input_ids"]]}

    def collator(self, tokenizer, options):
        def collate(rows):
            import torch

            labels = torch.tensor([r["labels"] for r in rows], dtype=torch.float)   # KeyError without labels
            batch = tokenizer.pad([{k: r[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in r}
                                   for r in rows], return_tensors="pt")
            return {**batch, "labels": labels}
        return collate

    def metrics(self, state, options, modules):
        class MSE:
            def __init__(self):
                self.total, self.n = 0.0, 0

            def add_batch(self, logits, labels):
                import numpy as np

                diff = np.asarray(logits).reshape(-1) - np.asarray(labels).reshape(-1)
                self.total, self.n = self.total + float((diff ** 2).sum()), self.n + diff.size

            def compute(self):
                return {"mse": self.total / max(self.n, 1)}
        return MSE()

    def predict(self, model, tokenizer, inputs, state, options, batch_size):
        import torch

        texts = [x if isinstance(x, str) else x["text"] for x in inputs]
        with torch.inference_mode():
            enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            return [{"score": float(v)} for v in model(**enc).logits.reshape(-1)]


class _RegressionPlugin:
    @hookimpl
    def register_tasks(self, register):
        register(Regression())


def test_feature_cache_works_for_a_third_party_regression_task(tiny_config, tmp_path, caplog):
    """The cache runs the backbone over rows that still carry their labels, so a task's own
    collator sees the rows it expects (it used to fail with KeyError: 'labels')."""
    results = {}
    for cache in (True, False):
        plugins = tunesmith.load_plugins()
        plugins.add(_RegressionPlugin(), "regression-test")
        cfg = {**frozen_config(tiny_config, tmp_path, f"reg-{cache}", cache_features=cache),
               "task": "text-regression-test"}
        with caplog.at_level(logging.WARNING, logger="tunesmith"):
            results[cache] = tunesmith.train(cfg, plugins=plugins, quiet=True)
        assert ("feature cache: backbone features" in caplog.text) == cache
        caplog.clear()
    cached, naive = results[True], results[False]
    assert cached.metrics["mse"] == pytest.approx(naive.metrics["mse"], rel=1e-4)
    assert [h["train_loss"] for h in cached.history] == pytest.approx([h["train_loss"] for h in naive.history],
                                                                       rel=1e-4)
    assert (cached.run_dir / "model" / "model.safetensors").is_file()
