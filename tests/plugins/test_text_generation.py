"""text-generation on a tiny random Llama decoder (fast, CPU): rows, chat template,
completion-only labels, packing, the four strategies, predict and evaluate after reload."""

import json

import pytest

from tests.conftest import make_tiny_causal_lm, textgen_rows, write_jsonl
from tunesmith import ConfigError, DataError, RowError, load_config, train
from tunesmith.plugins.text_generation import TASK, TextGenerationOptions
from tunesmith.apps.predict import Predictor


@pytest.fixture(scope="module")
def plain_lm(tmp_path_factory, tiny_vocab):
    """The same tiny LM without a chat template."""
    return make_tiny_causal_lm(tmp_path_factory.mktemp("plain-lm"), tiny_vocab, chat_template=None)


def _tok(path):
    from tunesmith.runner import load_tokenizer

    return load_tokenizer(str(path), False)


def _config(model, data, out, strategy="lora", **data_opts):
    return {"task": "text-generation", "model": str(model), "output_dir": str(out),
            "data": {"train": str(data["train"]), "validation": str(data["validation"]),
                     "max_completion_length": 8, **data_opts},
            "strategy": {"name": strategy}, "generation": {"max_new_tokens": 6},
            "training": {"epochs": 10, "batch_size": 8, "learning_rate": 2e-2, "logging_steps": 3,
                         "save_total_limit": 1, "group_by_length": False}}


def test_aliases_and_option_checks(tiny_chat_lm, textgen_small, tmp_path):
    from tunesmith import load_plugins

    registry = load_plugins().registry
    assert registry.task("instruction") is registry.task("sft") is registry.task("text-generation")
    bad = {"metrics": ["chrf", "meteor"], "pass_k": [1, 5], "max_prompt_length": 0}
    with pytest.raises(ConfigError) as err:
        load_config(_config(tiny_chat_lm, textgen_small, tmp_path / "r", **bad), registry=registry)
    msg = str(err.value)
    assert "unknown metric(s) 'meteor'" in msg and "data.pass_k" in msg and "data.max_prompt_length" in msg


def test_rows_are_checked_with_the_field_named():
    opts = TextGenerationOptions()
    TASK.check_row({"prompt": "hi", "completion": "there"}, opts)
    TASK.check_row({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, opts)
    cases = [({"prompt": "hi"}, "completion"), ({"prompt": "", "completion": "x"}, "prompt"),
             ({"completion": "x"}, "prompt"), ({"prompt": 3, "completion": "x"}, "prompt"),
             ({"messages": [{"role": "user", "content": "hi"}]}, "messages"),
             ({"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "x"}]},
              "messages[1].role"),
             ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}, "messages[1].content"),
             ({"prompt": "def f():", "completion": "  pass", "test": "assert f() is None"}, "entry_point")]
    for row, field in cases:
        with pytest.raises(RowError) as err:
            TASK.check_row(row, opts)
        assert err.value.field == field, (row, err.value.field)


def test_labels_cover_the_completion_only(tiny_chat_lm, plain_lm):
    batch = {"prompt": ["the film was good"], "completion": ["good good"]}
    # without a template: prompt ids, then the completion and EOS
    tok = _tok(plain_lm)
    opts = TextGenerationOptions(chat_template=False)
    enc = TASK.encode_batch(batch, tok, {}, opts, True)
    ids, labels = enc["input_ids"][0], enc["labels"][0]
    target = [t for t in labels if t != -100]
    assert labels[:len(ids) - len(target)] == [-100] * (len(ids) - len(target))
    assert target[-1] == tok.eos_token_id and tok.decode(target[:-1]) == "good good"
    # with the chat template: the rendered assistant turn (with its end-of-turn) is the target
    tok = _tok(tiny_chat_lm)
    opts = TextGenerationOptions(chat_template=True)
    enc = TASK.encode_batch(batch, tok, {}, opts, False)
    ids, labels = enc["input_ids"][0], enc["labels"][0]
    prompt = TASK.prompt_ids(tok, "the film was good", opts)
    assert ids[:len(prompt)] == prompt and enc["_prompt_ids"][0] == prompt
    assert tok.decode(prompt).endswith("assistant :")
    target = [t for t in labels if t != -100]
    assert tok.decode(target).startswith("good good") and target[-1] == tok.eos_token_id
    assert enc["_reference"] == ["good good"]
    # a chat row: the loss is on its last (assistant) turn
    chat = {"messages": [[{"role": "user", "content": "the plot was dull"},
                          {"role": "assistant", "content": "dull dull"}]]}
    enc = TASK.encode_batch(chat, tok, {}, opts, True)
    target = [t for t, lab in zip(enc["input_ids"][0], enc["labels"][0]) if lab != -100]
    assert tok.decode(target).startswith("dull dull")


def test_packing_uses_trl_and_keeps_sequences_apart(plain_lm):
    import torch

    tok = _tok(plain_lm)
    opts = TextGenerationOptions(chat_template=False, packing=True, max_prompt_length=16,
                                 max_completion_length=8)
    rows = textgen_rows(12)
    enc = TASK.encode_batch({k: [r[k] for r in rows] for k in rows[0]}, tok, {}, opts, True)
    assert len(enc["input_ids"]) < 12 and sum(map(len, enc["seq_lengths"])) == 12
    assert all(len(x) <= 24 for x in enc["input_ids"])
    batch = TASK.collator(tok, opts)([{k: enc[k][i] for k in enc} for i in range(2)])
    assert set(batch) == {"input_ids", "labels", "position_ids"} and batch["input_ids"].shape[0] == 1
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) == len(enc["seq_lengths"][0]) + len(enc["seq_lengths"][1])
    assert bool((batch["labels"][0][starts] == -100).all())   # no loss across a sequence boundary
    assert isinstance(batch["input_ids"], torch.Tensor)


@pytest.mark.parametrize("strategy", ["lora", "full", "partial", "frozen"])
def test_strategies_learn_and_reload(strategy, tiny_chat_lm, textgen_small, tmp_path):
    lr = {"lora": 2e-2, "full": 5e-3, "partial": 1e-2, "frozen": 2e-2}[strategy]
    cfg = _config(tiny_chat_lm, textgen_small, tmp_path / "run", strategy)
    cfg["training"]["learning_rate"] = lr
    result = train(cfg, quiet=True)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0], losses
    assert {"loss", "chrf", "exact_match", "bleu", "rougeL", "gen_len"} <= set(result.metrics)
    manifest = json.loads((tmp_path / "run" / "tunesmith.json").read_text())
    assert manifest["config"]["data"]["chat_template"] is True   # resolved and recorded
    if strategy != "full":
        assert result.trainable_parameters < result.total_parameters
    predictor = Predictor(tmp_path / "run")
    prompts = [r["prompt"] for r in textgen_rows(8, 24)]
    in_memory = TASK.generate(result.model, result.tokenizer,
                              [TASK.prompt_ids(result.tokenizer, p, predictor.options) for p in prompts],
                              predictor.options, 4)
    answers = predictor.predict(prompts)
    assert [a["generated_text"] for a in answers] == [s[0] for s in in_memory]
    again = predictor.evaluate(textgen_small["validation"])
    assert again["chrf"] == pytest.approx(result.metrics["chrf"], abs=1e-6) and again["rows"] == 8


def test_lora_memorises_plain_prompts_with_packing(plain_lm, tmp_path):
    rows = textgen_rows(8) * 6
    data = {"train": write_jsonl(tmp_path / "t.jsonl", rows), "validation": write_jsonl(tmp_path / "v.jsonl",
                                                                                       textgen_rows(8))}
    cfg = _config(plain_lm, data, tmp_path / "run", "full", packing=True, metrics=["exact_match", "chrf"])
    cfg["training"].update(epochs=20, learning_rate=5e-3)
    result = train(cfg, quiet=True)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0], losses
    # learnt through packed rows (measured: chrF 81.8, exact match 37.5 of 100)
    assert result.metrics["chrf"] > 60 and result.metrics["exact_match"] > 0, result.metrics
    assert "bleu" not in result.metrics


def test_predict_inputs_are_checked(tiny_chat_lm, textgen_small, tmp_path):
    cfg = _config(tiny_chat_lm, textgen_small, tmp_path / "run")
    cfg["training"].update(epochs=1)
    train(cfg, quiet=True)
    predictor = Predictor(tmp_path / "run")
    chat = {"messages": [{"role": "user", "content": "the film was good"}]}
    assert isinstance(predictor.predict([chat])[0]["generated_text"], str)
    for bad in ({"prompt": ""}, {"messages": []}, {"messages": [{"role": "robot", "content": "x"}]}, 42):
        with pytest.raises(DataError):
            predictor.predict([bad])


def test_pass_at_k_rows_reach_the_sandbox_or_say_why(tiny_chat_lm):
    """Rows with tests are scored by execution (tunesmith.plugins.code_exec), never in
    this process; without the sandbox, one clear error instead of a wrong number."""
    opts = TextGenerationOptions()
    rows = [{"reference": "    return a + b\n", "prompt": "def add(a, b):\n", "test": "def check(f):\n"
             "    assert f(1, 2) == 3\n", "entry_point": "add"}]
    samples = [["    return a + b"]]
    try:
        import tunesmith.plugins.code_exec  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="pass@k needs the code sandbox"):
            TASK.score(samples, rows, opts)
        return
    scores = TASK.score(samples, rows, opts)
    assert "pass@1" in scores and scores["chrf"] > 90
