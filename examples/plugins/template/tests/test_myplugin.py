"""The plugin's tests, with tunesmith's conformance kit (tunesmith.testing): its
fixtures (tiny_bert, tiny_classification_data, ...) come with tunesmith through
pytest's plugin entry point, nothing to configure."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tunesmith_myplugin  # noqa: E402
from tunesmith.testing import check_strategy, fresh_plugins  # noqa: E402


def test_strategy_contract(tiny_bert, tiny_classification_data, tmp_path):
    check_strategy("head-and-norms", model=tiny_bert, train=tiny_classification_data["train"],
                   validation=tiny_classification_data["validation"], tmp_path=tmp_path,
                   plugins=fresh_plugins(tunesmith_myplugin))


# def test_task_contract(tiny_bert, tmp_path):
#     from tunesmith.testing import check_task
#     check_task("my-task", model=tiny_bert, train="tests/data/train.jsonl",
#                validation="tests/data/validation.jsonl", tmp_path=tmp_path,
#                plugins=fresh_plugins(tunesmith_myplugin), strategies=("full", "lora"),
#                bad_rows=[({"text": 3}, "text")])
