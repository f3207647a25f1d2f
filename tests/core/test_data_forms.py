"""Training on the data users already have: in-memory datasets and DataFrames through the
Python API, save_to_disk folders, arrow files and streams through the CLI; a hub reference
offline is one clear line; a v1 task plugin is refused by name."""

from __future__ import annotations

import json

import pytest
import yaml

import tunesmith
from tests.conftest import read_jsonl, run_cli


def _rows(sst2_small):
    return read_jsonl(sst2_small["train"]), read_jsonl(sst2_small["validation"])


def _config(tiny_config, **data):
    cfg = json.loads(json.dumps(tiny_config))
    cfg["data"] = {k: v for k, v in cfg["data"].items() if k not in data}
    return cfg


def _trained(result) -> None:
    assert 0 <= result.metrics["accuracy"] <= 1 and (result.run_dir / "model").is_dir()
    manifest = json.loads((result.run_dir / "tunesmith.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["data"]["train"].get("fingerprint") or manifest["data"]["train"].get("sha256")


def test_dataset_datasetdict_and_dataframe_train(tiny_config, sst2_small, tmp_path):
    import datasets
    import pandas as pd

    train, validation = _rows(sst2_small)
    dd = datasets.DatasetDict(train=datasets.Dataset.from_list(train),
                              validation=datasets.Dataset.from_list(validation))
    r1 = tunesmith.train(_config(tiny_config, train=1, validation=1), data=dd, quiet=True, overwrite=True)
    _trained(r1)
    cfg = _config(tiny_config, train=1, validation=1)
    cfg["data"].update(train=pd.DataFrame(train), validation=datasets.Dataset.from_list(validation))
    cfg["output_dir"] = str(tmp_path / "run-df")
    r2 = tunesmith.train(cfg, quiet=True)
    _trained(r2)
    assert r2.metrics == r1.metrics   # the same rows, seed and model: the same run
    manifest = json.loads((r2.run_dir / "tunesmith.json").read_text())
    assert manifest["config"]["data"]["train"] == "<DataFrame>"   # described, not dumped
    assert manifest["data"]["train"]["fingerprint"]   # the converted Dataset's


def test_save_to_disk_folder_and_arrow_file_train_through_the_cli(tiny_config, sst2_small, tmp_path):
    import datasets

    train, validation = _rows(sst2_small)
    datasets.DatasetDict(train=datasets.Dataset.from_list(train)).save_to_disk(str(tmp_path / "saved"))
    datasets.Dataset.from_list(validation).save_to_disk(str(tmp_path / "val"))
    arrow = next((tmp_path / "val").glob("*.arrow"))
    cfg = _config(tiny_config, train=1, validation=1)
    cfg["data"].update(train=str(tmp_path / "saved"), validation=str(arrow))
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    done = run_cli("train", path, "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert 0 <= json.loads(done.stdout)["eval"]["accuracy"] <= 1


def test_streaming_trains_for_max_steps(tiny_config, tmp_path):
    cfg = _config(tiny_config)
    cfg["data"]["streaming"] = True
    cfg["training"].update(max_steps=3, batch_size=4, save_steps=2)
    result = tunesmith.train(cfg, quiet=True)
    _trained(result)
    state = json.loads(next((result.run_dir / "checkpoints").glob("checkpoint-3/trainer_state.json")).read_text())
    assert state["global_step"] == 3


def test_streaming_without_max_steps_is_a_config_error(tiny_config):
    cfg = _config(tiny_config)
    cfg["data"]["streaming"] = True
    with pytest.raises(tunesmith.ConfigError, match="data.streaming needs training.max_steps"):
        tunesmith.train(cfg, quiet=True)


def test_a_bad_row_in_a_stream_stops_the_run_with_one_line(tiny_config, sst2_small, tmp_path, monkeypatch):
    from tunesmith import DataError, data, runner

    monkeypatch.setattr(runner, "SETUP_ROWS", 8)   # setup and its check see 8 rows; the rest streams
    monkeypatch.setattr(data, "STREAM_BATCH", 4)   # checked and encoded a training batch at a time
    train, _ = _rows(sst2_small)
    bad = tmp_path / "train.jsonl"
    rows = train[:40] + [{"text": "", "label": 1}] + train[:40]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _config(tiny_config)
    cfg["data"].update(train=str(bad), streaming=True)
    cfg["training"].update(max_steps=30, batch_size=4, save_steps=5, group_by_length=False)
    with pytest.raises(DataError) as err:
        tunesmith.train(cfg, quiet=True)
    assert str(err.value).endswith("train.jsonl:41: field 'text': empty text"), str(err.value)
    run = tmp_path / "run"
    assert json.loads((run / "tunesmith.json").read_text())["status"] == "failed"
    assert list((run / "checkpoints").glob("checkpoint-5/tunesmith-checkpoint.json"))   # kept


def test_hub_reference_offline_is_one_line_exit_2(tiny_config, tmp_path):
    cfg = _config(tiny_config)
    cfg["data"]["train"] = "hub:stanfordnlp/sst2"
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    done = run_cli("train", path, "--quiet", env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "hub:stanfordnlp/sst2" in line and "offline" in line
    assert not (tmp_path / "run").exists()


V1_TASK = '''
from tunesmith import hookimpl

class Old:
    name = "old-task"
    aliases = ()
    main_metric = "accuracy"
    greater_is_better = True
    def check_row(self, row, options, state=None): ...
    def encode(self, rows, tokenizer, state, options, train): ...

@hookimpl
def register_tasks(register):
    register(Old())
'''


def test_a_plugin_api_1_task_is_refused_by_name():
    import types

    from tunesmith import PluginError, load_plugins

    module = types.ModuleType("old_plugin")
    exec(V1_TASK, module.__dict__)
    plugins = load_plugins()
    plugins.add(module, "old")
    with pytest.raises(PluginError) as err:
        plugins.registry
    msg = str(err.value)
    assert "'old'" in msg and "plugin API 1" in msg and "plugin API 2" in msg and "check_batch" in msg
