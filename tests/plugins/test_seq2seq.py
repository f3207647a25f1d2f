"""Translation / summarization on tiny random models of all three families (fast, CPU).

Each model memorises four synthetic pairs, so generation is checked against real text,
then the run directory is reloaded and must generate the same."""

import json

import pytest
import torch

from tests.conftest import run_card_snippet, run_cli, write_jsonl
from tunesmith import ConfigError, RowError, load_config, train
from tunesmith.plugins.seq2seq import (Summarization, SummarizationOptions, Translation,
                                       TranslationOptions, detect_family)
from tunesmith.apps.predict import Predictor

PAIRS = [("the film is good", "good is film the"), ("a funny movie", "movie funny a"),
         ("this is not a story", "story a not is this"), ("love and memory", "memory and love")]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    rows = [{"source": s, "target": t} for s, t in PAIRS]
    return {"train": write_jsonl(d / "train.jsonl", rows * 10), "validation": write_jsonl(d / "val.jsonl", rows)}


def _save(folder, model, vocab, eos=False):
    from transformers import BertTokenizerFast

    model.save_pretrained(folder)
    words = vocab.read_text(encoding="utf-8").split("\n")[:-1]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    if eos:   # a causal LM needs an EOS token to stop
        tok.eos_token = "[SEP]"
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, tiny_vocab, tiny_bert):
    from transformers import (BartConfig, BartForConditionalGeneration, LlamaConfig, LlamaForCausalLM,
                              T5Config, T5ForConditionalGeneration)

    n = len(tiny_vocab.read_text().split("\n")) - 1
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=n, d_model=32, d_kv=16, d_ff=64, num_layers=2,
                                             num_heads=2, pad_token_id=0, eos_token_id=3,
                                             decoder_start_token_id=0))
    bart = BartForConditionalGeneration(BartConfig(
        vocab_size=n, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
        pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=3, forced_eos_token_id=None))
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=n, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                                         pad_token_id=0, bos_token_id=2, eos_token_id=3))
    root = tmp_path_factory.mktemp("gen-models")
    return {"t5": _save(root / "t5", t5, tiny_vocab), "bart": _save(root / "bart", bart, tiny_vocab),
            "bert2bert": tiny_bert, "llama": _save(root / "llama", llama, tiny_vocab, eos=True)}


FAMILY = {"t5": "encoder-decoder", "bart": "encoder-decoder", "bert2bert": "bert2bert", "llama": "decoder-only"}


def _config(model, pairs, out, strategy="full", epochs=12, lr=2e-2):
    return {"task": "translation", "model": str(model), "output_dir": str(out),
            "data": {"train": str(pairs["train"]), "validation": str(pairs["validation"]),
                     "max_target_length": 12},
            "strategy": {"name": strategy}, "generation": {"max_new_tokens": 10},
            "training": {"epochs": epochs, "batch_size": 8, "learning_rate": lr, "logging_steps": 5,
                         "save_total_limit": 1, "group_by_length": False}}


@pytest.mark.parametrize("kind", ["t5", "bart", "bert2bert", "llama"])
def test_train_generate_save_reload(kind, tiny_models, pairs, tmp_path):
    result = train(_config(tiny_models[kind], pairs, tmp_path / "run"), quiet=True)
    manifest = json.loads((tmp_path / "run" / "tunesmith.json").read_text())
    assert manifest["config"]["data"]["model_family"] == FAMILY[kind]
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] / 2, losses
    # memorised: generation reproduces the targets (chrF on the 0-100 scale)
    assert result.metrics["chrf"] > 60, result.metrics
    assert set(result.metrics) >= {"bleu", "chrf", "gen_len", "loss"}
    sources = [s for s, _ in PAIRS]
    task = Translation()
    in_memory = task.generate(result.model, result.tokenizer, sources, Predictor(tmp_path / "run").options, 4)
    predictor = Predictor(tmp_path / "run")
    answers = predictor.predict(sources)
    assert [a["translation_text"] for a in answers] == in_memory
    assert sum(a["translation_text"] == t for a, (_, t) in zip(answers, PAIRS)) >= 2, answers
    # the model alone (plain transformers) carries what generate() needs
    gen = predictor.model.generation_config
    assert gen.max_new_tokens == 10 and gen.eos_token_id is not None
    metrics = predictor.evaluate(pairs["validation"])
    assert metrics["rows"] == 4 and metrics["chrf"] == pytest.approx(result.metrics["chrf"], abs=1e-6)


@pytest.mark.parametrize("kind,strategy", [("bert2bert", "lora"), ("llama", "lora"), ("t5", "lora"),
                                           ("bart", "partial"), ("bert2bert", "frozen")])
def test_strategies_train_and_reload(kind, strategy, tiny_models, pairs, tmp_path):
    lr = {"lora": 2e-2, "partial": 1e-2, "frozen": 2e-2}[strategy]
    result = train(_config(tiny_models[kind], pairs, tmp_path / "run", strategy, epochs=8, lr=lr), quiet=True)
    assert result.trainable_parameters < result.total_parameters
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0], losses
    predictor = Predictor(tmp_path / "run")
    sources = [s for s, _ in PAIRS]
    again = [a["translation_text"] for a in predictor.predict(sources)]
    assert again == Translation().generate(result.model, result.tokenizer, sources, predictor.options, 4)
    # the model card's plain-Hugging-Face snippet loads the generation model; a bert2bert
    # adapter has no on-disk base, so its card has the user export a merged copy first
    card = (tmp_path / "run" / "README.md").read_text()
    if kind == "bert2bert" and strategy == "lora":
        assert "tunesmith export . --format hf --out merged" in card
        proc = run_cli("export", ".", "--format", "hf", "--out", "merged", cwd=tmp_path / "run")
        assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = type(run_card_snippet(tmp_path / "run")["model"]).__name__
    expected = {"lora": "PeftModelFor" + ("CausalLM" if kind == "llama" else "Seq2SeqLM")}.get(strategy)
    if kind == "bert2bert":
        expected = "EncoderDecoderModel"
    assert loaded == (expected or {"bart": "BartForConditionalGeneration",
                                   "bert2bert": "EncoderDecoderModel"}[kind]), loaded


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("strategy", ["full", "partial", "frozen", "lora"])
def test_bert2bert_cross_attention_trains_under_every_strategy(strategy, tiny_bert):
    from transformers import BertTokenizerFast

    from tunesmith import load_plugins

    reg = load_plugins().registry
    task, strat = reg.task("translation"), reg.strategy(strategy)
    opts = TranslationOptions()
    tok = BertTokenizerFast.from_pretrained(str(tiny_bert))
    model = task.build_model(str(tiny_bert), tok, {}, opts, {})
    assert opts.model_family == "bert2bert" and opts.prefix == ""
    assert model.generation_config.decoder_start_token_id == tok.cls_token_id
    assert model.config.eos_token_id == tok.sep_token_id
    model = strat.apply(model, task, strat.options())
    names = _trainable(model)
    cross = [n for n in names if "crossattention" in n]
    assert len(cross) >= 2 * 6, names   # q, k, v, output dense, LayerNorm ... in both layers
    assert any("decoder.cls" in n for n in names)
    if strategy != "full":
        assert not any(n.startswith("encoder.") and "lora_" not in n for n in names), names
    if strategy == "lora":
        assert not any("crossattention" in n and "lora_" in n for n in names)


def test_t5_prefix_and_decoder_template(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_models["t5"]))
    opts = TranslationOptions()
    Translation().build_model(str(tiny_models["t5"]), tok, {}, opts, {})
    assert opts.prefix == "translate English to German: "
    sopts = SummarizationOptions()
    Summarization().build_model(str(tiny_models["t5"]), tok, {}, sopts, {})
    assert sopts.prefix == "summarize: "
    lopts = SummarizationOptions()
    ltok = AutoTokenizer.from_pretrained(str(tiny_models["llama"]))
    Summarization().build_model(str(tiny_models["llama"]), ltok, {}, lopts, {})
    assert lopts.model_family == "decoder-only" and "{source}" in lopts.prompt_template
    enc = Summarization().encode_batch({"document": ["the film is good"], "summary": ["good film"]},
                                       ltok, {}, lopts, True)
    labels, ids = enc["labels"][0], enc["input_ids"][0]
    target = [i for i in labels if i != -100]
    assert labels[:len(ids) - len(target)] == [-100] * (len(ids) - len(target))   # loss on the target only
    assert target[-1] == ltok.eos_token_id and ids[-len(target):] == target


def test_detect_family():
    from transformers import BartConfig, BertConfig, EncoderDecoderConfig, GPT2Config

    assert detect_family(BartConfig()) == "encoder-decoder"
    assert detect_family(BertConfig()) == "bert2bert"
    assert detect_family(GPT2Config()) == "decoder-only"
    assert detect_family(EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(), BertConfig())) \
        == "encoder-decoder"


def test_rows_and_options_are_checked(pairs, tiny_models, plugins):
    task = Translation()
    with pytest.raises(RowError, match="missing column 'target'") as err:
        task.check_row({"source": "x"}, TranslationOptions())
    assert err.value.field == "target"
    with pytest.raises(RowError, match="empty text"):
        Summarization().check_row({"document": " ", "summary": "s"}, SummarizationOptions())
    cfg = _config(tiny_models["t5"], pairs, "/tmp/unused")
    cfg["data"]["model_family"] = "rnn"
    cfg["data"]["prompt_template"] = "no placeholder"
    cfg["generation"] = {"num_beams": 0, "max_new_token": 3}
    with pytest.raises(ConfigError) as err:
        load_config(cfg, registry=plugins.registry)
    text = str(err.value)
    for needle in ("data.model_family must be one of", "data.prompt_template must contain",
                   "generation.num_beams must be >= 1", "unknown key 'generation.max_new_token'"):
        assert needle in text, text


def test_metrics_scale_and_names():
    t = Translation().score(["ein Mann geht die Straße entlang ."], ["Ein Mann geht die Straße entlang ."])
    assert 0 < t["bleu"] < t["bleu_lowercase"] == pytest.approx(100.0) and 0 < t["chrf"] <= 100
    s = Summarization().score(["we propose a new loss. it works."], ["we propose a new loss. it works."])
    assert s == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0, "rougeLsum": 100.0}
    s = Summarization().score(["models learning"], ["the model learns"])   # stemming: model/learn match
    assert s["rouge1"] == pytest.approx(100 * 2 * (1.0 * 2 / 3) / (1.0 + 2 / 3), abs=1e-3)


def test_cli_predict_reads_lines(tiny_models, pairs, tmp_path, cli_here):
    train(_config(tiny_models["bart"], pairs, tmp_path / "run", epochs=2), quiet=True)
    proc = run_cli("predict", tmp_path / "run", "--input", "-", input="the film is good\n{\"source\": \"a funny movie\"}\n")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(lines) == 2 and all(isinstance(x["translation_text"], str) for x in lines)
    bad = cli_here("predict", tmp_path / "run", "--input", "-", input="{\"text\": \"x\"}\n")
    assert bad.returncode == 2 and "source" in bad.stderr


def test_decoder_only_translation_stops_at_stop_strings(tiny_models, pairs, tmp_path):
    """A base LM (e.g. Gemma 3 270M, examples/translation-gemma.yaml) would go on with the
    next example after its translation; data.stop cuts it there, in training's metrics and
    in predict after reload alike."""
    cfg = _config(tiny_models["llama"], pairs, tmp_path / "run", "full", epochs=12)   # memorises (above)
    cfg["data"]["stop"] = [" film"]
    result = train(cfg, quiet=True)
    predictor = Predictor(tmp_path / "run")
    assert predictor.options.stop == [" film"] and predictor.options.model_family == "decoder-only"
    out = {s: a["translation_text"] for s, a in zip([s for s, _ in PAIRS],
                                                    predictor.predict([s for s, _ in PAIRS]))}
    assert all(" film" not in t for t in out.values()), out
    assert out["the film is good"] in ("good is", "good"), out   # memorised "good is film the", cut
    assert result.metrics["chrf"] < 100


def test_stop_cut():
    from tunesmith.plugins.seq2seq import _cut

    assert _cut(" Ein Hund läuft.\nEnglish: A cat", ["\n"]) == "Ein Hund läuft."
    assert _cut("Ein Hund", []) == "Ein Hund"


def test_metric_registered_for_translation_reaches_metrics_json(tiny_models, pairs, tmp_path):
    """register_metrics for translation: the metric (a local evaluate module over generated
    and reference strings) is computed in training's evaluation, written to metrics.json,
    and reproduced by Predictor.evaluate (the task's evaluate receives the modules)."""
    import tunesmith

    module = tmp_path / "same_length"
    module.mkdir()
    (module / "same_length.py").write_text(
        "import datasets\nimport evaluate\n"
        "class SameLength(evaluate.Metric):\n"
        "    def _info(self):\n"
        "        return evaluate.MetricInfo(description='share of outputs as many words long as the reference',\n"
        "            citation='', inputs_description='', features=datasets.Features(\n"
        "            {'predictions': datasets.Value('string'), 'references': datasets.Value('string')}))\n"
        "    def _compute(self, predictions, references):\n"
        "        same = [len(p.split()) == len(r.split()) for p, r in zip(predictions, references)]\n"
        "        return {'same_length': sum(same) / len(same)}\n")

    class Extra:
        @tunesmith.hookimpl
        def register_metrics(self, register):
            register("translation", "same_length", module)

    plugins = tunesmith.load_plugins()
    plugins.add(Extra(), "extra-metric")
    cfg = _config(tiny_models["t5"], pairs, tmp_path / "run", epochs=2)
    result = train(cfg, plugins=plugins, quiet=True)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 <= saved["eval"]["same_length"] <= 1 and "chrf" in saved["eval"]
    assert "same_length" in saved["history"][-1]["eval"]
    again = Predictor(tmp_path / "run", plugins=plugins).evaluate(pairs["validation"])
    assert again["same_length"] == pytest.approx(result.metrics["same_length"])
