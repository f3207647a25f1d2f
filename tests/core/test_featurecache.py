"""Frozen strategy: pooling the checkpoint was trained for, cached backbone features,
and the preprocessing cache. Tiny models built from configs (seconds)."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

import tunesmith


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
    from tunesmith.pooling import trained_pooling

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


def test_preprocessing_is_cached_across_runs(tiny_bert, sst2_small, tmp_path, monkeypatch, plugins):
    from tunesmith import data, prepcache
    from tunesmith.config import load_config
    from tunesmith.runner import load_tokenizer

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    cfg = load_config({"task": "classification", "model": str(tiny_bert), "output_dir": str(tmp_path / "r"),
                       "data": {"train": str(sst2_small["train"]), "validation": str(sst2_small["validation"])}},
                      registry=plugins.registry)
    task, tok = plugins.registry.task("classification"), load_tokenizer(str(tiny_bert), False)
    split = data.load_split(str(sst2_small["train"]), "train")
    state = task.setup(split.dataset, cfg.task_options)
    calls = []
    real = task.encode_batch
    monkeypatch.setattr(task, "encode_batch", lambda *a, **k: calls.append(1) or real(*a, **k))

    def encode(ds, opts):
        key = prepcache.key(task, ds, tok, state, opts, True)
        return data.encode(ds, task, tok, state, opts, train=True, cache_key=key)

    first = encode(split.dataset, cfg.task_options)
    second = encode(split.dataset, cfg.task_options)
    assert len(calls) == 1 and second.to_dict() == first.to_dict()
    assert len(list((tmp_path / "cache" / "preprocessed").glob("*/*.arrow"))) == 1
    again = data.load_split(str(sst2_small["train"]), "train")   # loaded anew: the same fingerprint
    encode(again.dataset, cfg.task_options)
    assert len(calls) == 1
    cfg.task_options.max_length = 8   # a different setting is a different entry
    short = encode(split.dataset, cfg.task_options)
    assert len(calls) == 2 and max(short["length"]) == 8
    encode(split.dataset.select(range(10)), cfg.task_options)   # different data too
    assert len(calls) == 3
    monkeypatch.setenv("TUNESMITH_CACHE", "off")
    encode(split.dataset, cfg.task_options)
    assert len(calls) == 4


class _Data:
    _fingerprint = "0123abcd"


def test_an_edited_task_module_gets_a_new_cache_key(tmp_path, monkeypatch):
    """The plugin version string rarely changes while its encode_batch() does: the key also
    covers the module's source, so a developer never trains on stale features."""
    import importlib

    from tunesmith import prepcache

    module = tmp_path / "edited_task.py"
    module.write_text("class Task:\n    name = 'edited'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = prepcache.key(importlib.import_module("edited_task").Task(), _Data(), "tok", {}, {}, True)
    module.write_text("class Task:\n    name = 'edited'  # encode changed\n")
    second = prepcache.key(importlib.import_module("edited_task").Task(), _Data(), "tok", {}, {}, True)
    assert first is not None and first != second
    again = prepcache.key(importlib.import_module("edited_task").Task(), _Data(), "tok", {}, {}, True)
    assert again == second
