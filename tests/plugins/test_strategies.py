import pytest
import torch

from tunesmith import ConfigError
from tunesmith.plugins.strategies import (Frozen, Full, LoraOptions, Lora, Partial, PartialOptions,
                                          NoOptions, head_module_names, layer_stack)


def _tiny(kind: str, num_labels: int = 3):
    from transformers import (AutoModelForSequenceClassification, BertConfig, DistilBertConfig,
                              LlamaConfig, RobertaConfig)

    torch.manual_seed(0)
    common = dict(vocab_size=100, num_labels=num_labels)
    config = {
        "bert": BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                           intermediate_size=64, **common),
        "roberta": RobertaConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                 intermediate_size=64, **common),
        "distilbert": DistilBertConfig(dim=32, n_layers=3, n_heads=2, hidden_dim=64, **common),
        "llama": LlamaConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2,
                             intermediate_size=64, pad_token_id=0, **common),
    }[kind]
    return AutoModelForSequenceClassification.from_config(config)


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


ARCHS = ["bert", "roberta", "distilbert", "llama"]


@pytest.mark.parametrize("arch", ARCHS)
def test_layer_stack_found_generically(arch):
    name, stack = layer_stack(_tiny(arch))
    assert len(stack) == 3, name


@pytest.mark.parametrize("arch", ARCHS)
def test_partial_trains_last_layers_and_head(arch):
    model = _tiny(arch)
    stack_name, _ = layer_stack(model)
    Partial().apply(model, None, PartialOptions(layers=1))
    trainable = _trainable(model)
    assert any(n.startswith(f"{stack_name}.2.") for n in trainable)
    assert not any(n.startswith((f"{stack_name}.0.", f"{stack_name}.1.")) for n in trainable)
    assert not any("embed" in n for n in trainable)
    for head in head_module_names(model):
        assert any(n.startswith(head + ".") for n in trainable), head


def test_partial_with_too_many_layers_is_a_config_error():
    with pytest.raises(ConfigError, match="strategy.layers=7 but BertForSequenceClassification has only 3 layers"):
        Partial().apply(_tiny("bert"), None, PartialOptions(layers=7))


@pytest.mark.parametrize("arch", ARCHS)
def test_frozen_trains_only_head_and_keeps_backbone_in_eval(arch):
    model = _tiny(arch)
    Frozen().apply(model, None, Frozen.options())
    heads = head_module_names(model)
    assert all(any(n.startswith(h + ".") for h in heads) for n in _trainable(model))
    model.train()   # what the Trainer does every step
    stack_name, stack = layer_stack(model)
    assert not stack.training and not any(m.training for m in stack.modules())
    assert model.training


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_adapts_attention_and_saves_head(arch, tmp_path):
    model = Lora().apply(_tiny(arch), None, LoraOptions(r=4))
    trainable = _trainable(model)
    assert any("lora_A" in n for n in trainable)
    heads = head_module_names(model.get_base_model())
    assert all(any(h in n and "modules_to_save" in n for n in trainable) for h in heads)
    ids = torch.randint(1, 100, (2, 7))
    model.eval()
    before = model(input_ids=ids).logits
    model.save_pretrained(tmp_path)
    from peft import PeftModel
    torch.manual_seed(123)   # a different random head: the saved head must overwrite it
    reloaded = PeftModel.from_pretrained(_tiny_seeded(arch, 123), tmp_path).eval()
    assert torch.allclose(before, reloaded(input_ids=ids).logits, atol=1e-6)


def _tiny_seeded(arch, seed):
    torch.manual_seed(seed)
    return _tiny(arch)


def test_full_trains_everything():
    model = _tiny("bert")
    for p in model.parameters():
        p.requires_grad = False
    Full().apply(model, None, NoOptions())
    assert _trainable(model) == {n for n, _ in model.named_parameters()}


def test_lora_option_checks():
    problems = []
    LoraOptions(r=0, alpha=0, dropout=1.5).check(problems)
    assert len(problems) == 3


def test_lora_run_model_folder_is_portable_with_label_names(tiny_bert, sst2_small, tmp_path):
    """A LoRA run's model/ loads with peft alone (AutoPeftModelForSequenceClassification,
    from the run directory, as the model card says) after the run directory was moved:
    the base it refers to is model/base (relative, inside the run), and its config has
    the label names, so the labels are the ones `tunesmith predict` gives."""
    import json
    import os
    import shutil

    import tunesmith
    from tests.conftest import read_jsonl, run_cli

    cfg = {"task": "text-classification", "model": str(tiny_bert), "output_dir": str(tmp_path / "run"),
           "data": {"train": str(sst2_small["train"]), "validation": str(sst2_small["validation"])},
           "strategy": {"name": "lora"},
           "training": {"epochs": 2, "batch_size": 8, "learning_rate": 5e-3, "logging_steps": 4}}
    tunesmith.train(cfg, quiet=True)
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(tmp_path / "run", moved)
    shutil.rmtree(tmp_path / "run")
    adapter = json.loads((moved / "model" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "model/base"
    assert str(tmp_path) not in (moved / "model" / "adapter_config.json").read_text()
    labels = json.loads((moved / "tunesmith.json").read_text())["task_state"]["labels"]
    base_config = json.loads((moved / "model" / "base" / "config.json").read_text())
    assert list(base_config["id2label"].values()) == labels and not labels[0].startswith("LABEL_")

    texts = [r["text"] for r in read_jsonl(sst2_small["validation"], 12)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    proc = run_cli("predict", moved, "--input", src)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours = [json.loads(line)["label"] for line in proc.stdout.splitlines()]

    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer

    here = os.getcwd()
    os.chdir(moved)
    try:
        model = AutoPeftModelForSequenceClassification.from_pretrained("model").eval()
        tok = AutoTokenizer.from_pretrained("model")
        with torch.no_grad():
            logits = model(**tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")).logits
    finally:
        os.chdir(here)
    theirs = [model.config.id2label[int(i)] for i in logits.argmax(-1)]
    assert theirs == ours
