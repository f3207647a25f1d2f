import json

import pytest

from tunesmith import ConfigError, load_config
from tunesmith.config import parse_override


def test_yaml_with_overrides_and_types(tmp_path, sst2_small):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"task: classification\nmodel: package:x\ndata:\n  train: {sst2_small['train']}\n"
                        f"  validation: {sst2_small['validation']}\n")
    cfg = load_config(cfg_file, ["training.learning_rate=1e-4", "training.epochs=2", "strategy.name=lora",
                                 "strategy.r=4", "training.group_by_length=false"])
    assert cfg.training.learning_rate == pytest.approx(1e-4)   # YAML 1.1 reads 1e-4 as a string
    assert cfg.training.epochs == 2.0 and cfg.training.group_by_length is False
    assert cfg.strategy.name == "lora" and cfg.strategy.options == {"r": 4}
    assert cfg.source == str(cfg_file)


def test_json_config_and_relative_data_paths(tmp_path):
    (tmp_path / "d").mkdir()
    for split in ("train", "validation"):
        (tmp_path / "d" / f"{split}.jsonl").write_text('{"text": "a", "label": 0}\n')
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"task": "classification", "model": "m",
                                    "data": {"train": "d/train.jsonl", "validation": "d/validation.jsonl"}}))
    cfg = load_config(cfg_file)
    assert cfg.data.train == str(tmp_path / "d" / "train.jsonl")


def test_every_problem_is_reported_at_once(tmp_path, sst2_small):
    data = {"task": "classification", "model": "m", "epochs": 3,
            "data": {"train": str(sst2_small["train"]), "validation": str(sst2_small["validation"])},
            "training": {"learning_rate": -1, "epochs": 0}}
    with pytest.raises(ConfigError) as err:
        load_config(data)
    problems = err.value.problems
    assert len(problems) == 3, problems
    assert any("unknown key 'epochs'" in p for p in problems)
    assert any("training.learning_rate must be > 0" in p for p in problems)
    assert any("training.epochs must be > 0" in p for p in problems)


def test_unknown_keys_get_did_you_mean(plugins, sst2_small):
    data = {"task": "classification", "model": "m", "traning": {},
            "data": {"train": str(sst2_small["train"]), "validation": str(sst2_small["validation"]),
                     "text_colum": "text"},
            "strategy": {"name": "lora", "rank": 4}}
    with pytest.raises(ConfigError) as err:
        load_config(data, registry=plugins.registry)
    msg = str(err.value)
    assert "'traning' (did you mean 'training'?)" in msg
    assert "'data.text_colum' (did you mean 'text_column'?)" in msg
    assert "unknown key 'strategy.rank'" in msg


def test_unknown_task_and_strategy_list_what_exists(plugins, sst2_small):
    data = {"task": "clasification", "model": "m", "strategy": "ful",
            "data": {"train": str(sst2_small["train"]), "validation": str(sst2_small["validation"])}}
    with pytest.raises(ConfigError) as err:
        load_config(data, registry=plugins.registry)
    msg = str(err.value)
    assert "unknown task 'clasification' (did you mean 'classification'?)" in msg
    assert "'text-classification'" in msg
    assert "unknown strategy 'ful' (did you mean 'full'?)" in msg and "'lora'" in msg


def test_wrong_types_and_missing_required(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config({"training": {"batch_size": "big", "group_by_length": "maybe"},
                     "data": {"train": str(tmp_path / "nope.jsonl")}})
    msg = str(err.value)
    for text in ("training.batch_size must be an integer, got 'big'", "must be true or false",
                 "'task' is required", "'model' is required", "file not found",
                 "'data.validation' is required"):
        assert text in msg


def test_yaml_syntax_error_names_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("task: x\ndata: [unclosed\nmodel: y\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert str(f) in str(err.value) and "line " in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("text,key,value", [("a.b=1", ["a", "b"], 1), ("x=hello", ["x"], "hello"),
                                            ("l=[q, v]", ["l"], ["q", "v"]), ("e=", ["e"], "")])
def test_parse_override(text, key, value):
    assert parse_override(text) == (key, value)


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1"])
def test_bad_override(bad):
    with pytest.raises(ConfigError):
        parse_override(bad)
