"""Every registered task × every registered strategy through the conformance kit
(tunesmith.testing), the same checks a third-party plugin's tests call.

The parameters come from the plugin registry at collection time, so a task or a
strategy added later is checked automatically; a new task only has to add a sample
(a tiny model fixture and small data) to SAMPLES below, and the test says so.
"""

import pytest

from tunesmith import load_plugins
from tunesmith.testing import (check_bad_inputs, check_bad_rows, check_registers, check_resume,
                               check_roundtrip, tiny_run_config)

REGISTRY = load_plugins().registry
TASKS = sorted(REGISTRY.tasks)
STRATEGIES = sorted(REGISTRY.strategies)

# task -> (tiny model fixture, data fixture giving {"train": path, "validation": path},
#          explicit bad rows [(row, field the error must name)])
SAMPLES = {
    "text-classification": ("tiny_bert", "sst2_small",
                            [({"text": 3, "label": 1}, "text"), ({"text": "fine"}, "label"),
                             ({"text": "fine", "label": 1.5}, "label")]),
    "question-answering": ("tiny_bert", "qa_small",
                           [({"id": "x", "question": "who?", "context": "Ann came.",
                              "answers": {"text": ["Bob"], "answer_start": [0]}}, "answers.answer_start"),
                            ({"id": "y", "context": "Ann came.",
                              "answers": {"text": ["Ann"], "answer_start": [0]}}, "question")]),
    # bert2bert: the tiny BERT warm-starts an EncoderDecoderModel
    "translation": ("tiny_bert", "translation_small",
                    [({"source": "a dog runs", "target": ""}, "target"), ({"target": "ein Hund"}, "source")]),
    "summarization": ("tiny_bert", "summarization_small",
                      [({"document": "a long text", "summary": 3}, "summary"), ({"summary": "x"}, "document")]),
    # a tiny random Llama decoder whose tokenizer has a chat template
    "text-generation": ("tiny_chat_lm", "textgen_small",
                        [({"prompt": "the film was good", "completion": 3}, "completion"),
                         ({"completion": "good"}, "prompt"),
                         ({"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "x"}]},
                          "messages[1].role")]),
}


def _sample(request, task):
    if task not in SAMPLES:
        pytest.fail(f"task {task!r} has no conformance sample: add a tiny model fixture and small "
                    f"data for it to SAMPLES in tests/test_contract.py")
    model_fixture, data_fixture, bad = SAMPLES[task]
    return request.getfixturevalue(model_fixture), request.getfixturevalue(data_fixture), bad


@pytest.mark.parametrize("task", TASKS)
def test_task_registers_uniquely(task):
    entry = check_registers("task", task)
    assert entry.distribution == "tunesmith"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_registers_uniquely(strategy):
    entry = check_registers("strategy", strategy)
    assert entry.distribution == "tunesmith"


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("task", TASKS)
def test_train_save_reload_identical(request, task, strategy, tmp_path):
    model, data, _ = _sample(request, task)
    cfg = tiny_run_config(task, model, data["train"], data["validation"], tmp_path / "run", strategy)
    result = check_roundtrip(cfg)
    check_bad_inputs(result.run_dir)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("task", TASKS)
def test_resume_from_checkpoint(request, task, strategy, tmp_path):
    model, data, _ = _sample(request, task)
    cfg = tiny_run_config(task, model, data["train"], data["validation"], tmp_path / "run", strategy)
    full, resumed = check_resume(cfg)
    assert resumed.history[-1]["epoch"] == 2


@pytest.mark.parametrize("task", TASKS)
def test_malformed_rows_give_clear_errors(request, task, tmp_path):
    model, data, bad = _sample(request, task)
    cfg = tiny_run_config(task, model, data["train"], data["validation"], tmp_path / "run")
    messages = check_bad_rows(cfg, bad_rows=bad, tmp_dir=tmp_path / "bad")
    assert len(messages) >= len(bad)


def test_the_kit_checks_every_registered_strategy_by_default():
    """check_task's strategies default to every registered strategy, a third-party one
    included, not to a fixed list."""
    import inspect

    from tunesmith import hookimpl
    from tunesmith.plugins.strategies import Full
    from tunesmith.testing import check_task, fresh_plugins, strategies_to_check

    class Mine(Full):
        name, default = "mine", False

    class Plugin:
        @hookimpl
        def register_strategies(self, register):
            register(Mine())

    plugins = fresh_plugins(Plugin())
    assert inspect.signature(check_task).parameters["strategies"].default is None
    assert strategies_to_check(plugins) == list(plugins.registry.strategies)
    assert {"full", "partial", "frozen", "lora", "mine"} <= set(strategies_to_check(plugins))
    assert strategies_to_check(plugins, ["lora"]) == ["lora"]
