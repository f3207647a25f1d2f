"""tunesmith-bitfit's tests, through tunesmith's conformance kit (tunesmith.testing)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tunesmith_bitfit  # noqa: E402
from tunesmith import ConfigError  # noqa: E402
from tunesmith.testing import check_strategy, fresh_plugins  # noqa: E402
from tunesmith_bitfit import BitFit, BitFitOptions  # noqa: E402


def _classifier(path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)


def test_only_biases_and_head_train(tiny_bert):
    model = BitFit().apply(_classifier(tiny_bert), None, BitFitOptions())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert trainable and frozen
    assert all(n.endswith(".bias") or n.startswith(("classifier.", "bert.pooler.")) for n in trainable)
    assert "classifier.weight" in trainable and "bert.pooler.dense.weight" in trainable
    assert "bert.encoder.layer.0.attention.self.query.bias" in trainable
    assert all(not n.endswith(".bias") for n in frozen)
    assert "bert.embeddings.word_embeddings.weight" in frozen


def test_without_head(tiny_bert):
    model = BitFit().apply(_classifier(tiny_bert), None, BitFitOptions(train_head=False))
    assert not model.classifier.weight.requires_grad and model.classifier.bias.requires_grad


def test_model_without_biases_is_a_config_error(tiny_llama):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama, num_labels=2)
    with pytest.raises(ConfigError, match="has no bias parameters"):
        BitFit().apply(model, None, BitFitOptions(train_head=False))


def test_conformance_kit(tiny_bert, tiny_classification_data, tmp_path):
    """Registered once under 'bitfit'; train → save → reload → identical predictions;
    resume from a checkpoint reproduces the uninterrupted run."""
    check_strategy("bitfit", model=tiny_bert, train=tiny_classification_data["train"],
                   validation=tiny_classification_data["validation"], tmp_path=tmp_path,
                   plugins=fresh_plugins(tunesmith_bitfit))
