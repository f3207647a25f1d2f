"""Shared fixtures: offline environment, tiny models built from configs, small data."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

# no hub, ever: set before transformers / datasets / evaluate are imported
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tunesmith.testing import run_cli  # noqa: E402,F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE = REPO / "examples" / "data" / "sst2"


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_card_snippet(run_dir: Path) -> dict:
    """Run the model card's "Hugging Face libraries only" snippet from inside the run dir,
    as a user would; returns its namespace (``model`` or ``clf``)."""
    import re

    card = (Path(run_dir) / "README.md").read_text(encoding="utf-8")
    snippet = re.findall(r"```python\n(.*?)```", card, re.S)[-1]
    here = os.getcwd()
    os.chdir(run_dir)
    try:
        namespace: dict = {}
        exec(snippet, namespace)
        return namespace
    finally:
        os.chdir(here)


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if limit and len(rows) >= limit:
                break
    return rows


@pytest.fixture
def cli_here(capfd, monkeypatch):
    """``tunesmith ARGS`` run in this process: ``cli_here(*args, input=None, cwd=None)``
    returns a CompletedProcess like ``run_cli``. For the many error-message cases, where a
    fresh interpreter would cost seconds of imports per case; the real subprocess keeps
    its own tests. stderr is read at the file-descriptor level (library handlers included),
    and warnings, which pytest would swallow, are appended to it as a fresh ``python -m
    tunesmith`` would print them (Python's default filters)."""
    import io
    import subprocess
    import warnings

    from tunesmith import cli

    def run(*args, input=None, cwd=None):
        argv = [str(a) for a in args]
        capfd.readouterr()
        if input is not None:
            data = input.encode() if isinstance(input, str) else input
            monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
        if cwd is not None:
            monkeypatch.chdir(cwd)
        with warnings.catch_warnings(record=True) as seen:
            warnings.resetwarnings()   # what an interpreter without -W starts with
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            warnings.simplefilter("ignore", ImportWarning)
            warnings.simplefilter("ignore", ResourceWarning)
            try:
                code = cli.main(argv)
            except SystemExit as exc:   # argparse
                code = exc.code if isinstance(exc.code, int) else 1
        out, err = capfd.readouterr()
        err += "".join(f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}\n" for w in seen)
        return subprocess.CompletedProcess(["tunesmith", *argv], code, out, err)

    return run


@pytest.fixture(scope="session")
def tiny_vocab(tmp_path_factory) -> Path:
    """A WordPiece vocabulary from the bundled SST-2 sample (words + characters)."""
    words = Counter(w for r in read_jsonl(SAMPLE / "train.jsonl") for w in r["text"].split())
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + [f"##{c}" for c in chars]
    vocab += [w for w, _ in words.most_common(600) if w not in vocab]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


# tiny_bert, tiny_llama, tunesmith_plugins and tunesmith_cli come from the conformance
# kit (tunesmith.testing, a pytest11 plugin); tiny_vocab above overrides the kit's, so
# the tiny models here share the SST-2 sample's words.


@pytest.fixture(scope="session")
def sst2_small(tmp_path_factory) -> dict:
    """64 training and 32 validation SST-2 rows from the bundled sample."""
    d = tmp_path_factory.mktemp("sst2")
    return {"train": write_jsonl(d / "train.jsonl", read_jsonl(SAMPLE / "train.jsonl", 64)),
            "validation": write_jsonl(d / "validation.jsonl", read_jsonl(SAMPLE / "validation.jsonl", 32))}


@pytest.fixture
def plugins():
    """A fresh plugin manager from the installed entry points."""
    from tunesmith import load_plugins

    return load_plugins()


@pytest.fixture
def tiny_config(tiny_bert, sst2_small, tmp_path) -> dict:
    return {"task": "text-classification", "model": str(tiny_bert),
            "output_dir": str(tmp_path / "run"),
            "data": {"train": str(sst2_small["train"]), "validation": str(sst2_small["validation"])},
            "strategy": {"name": "full"},
            "training": {"epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "logging_steps": 2}}



@pytest.fixture(scope="session")
def qa_small(tmp_path_factory) -> dict:
    """24 training and 12 validation SQuAD-style questions from ../shared/data/qa."""
    d = tmp_path_factory.mktemp("qa")
    return {"train": write_jsonl(d / "train.jsonl", read_jsonl(SHARED_DATA / "qa" / "train.jsonl", 24)),
            "validation": write_jsonl(d / "validation.jsonl",
                                      read_jsonl(SHARED_DATA / "qa" / "validation.jsonl", 12))}


@pytest.fixture(scope="session")
def translation_small(tmp_path_factory) -> dict:
    """24 training and 8 validation Multi30k en→de pairs from ../shared/data/translation."""
    d = tmp_path_factory.mktemp("translation")
    src = SHARED_DATA / "translation"
    return {"train": write_jsonl(d / "train.jsonl", read_jsonl(src / "train.jsonl", 24)),
            "validation": write_jsonl(d / "validation.jsonl", read_jsonl(src / "validation.jsonl", 8))}


@pytest.fixture(scope="session")
def summarization_small(tmp_path_factory) -> dict:
    """16 training and 6 validation SciTLDR rows from ../shared/data/summarization."""
    d = tmp_path_factory.mktemp("summarization")
    src = SHARED_DATA / "summarization"
    return {"train": write_jsonl(d / "train.jsonl", read_jsonl(src / "train.jsonl", 16)),
            "validation": write_jsonl(d / "validation.jsonl", read_jsonl(src / "validation.jsonl", 6))}


# a chat template the tiny WordPiece tokenizer can render: "role : content [SEP]" turns
TINY_CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} [SEP] {% endfor %}"
                      "{% if add_generation_prompt %}assistant :{% endif %}")


def make_tiny_causal_lm(folder: Path, vocab: Path, chat_template: str | None = TINY_CHAT_TEMPLATE) -> Path:
    """A 2-layer, hidden-32 random Llama causal LM whose tokenizer has an EOS token
    ([SEP]) and, unless ``chat_template=None``, a chat template. (Llama, not Qwen2: for a
    qwen2 config AutoTokenizer would read the WordPiece files as a Qwen2 BPE tokenizer.)"""
    import torch
    from transformers import BertTokenizerFast, LlamaConfig, LlamaForCausalLM

    words = vocab.read_text(encoding="utf-8").split("\n")[:-1]
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
                                 max_position_embeddings=512, pad_token_id=0, bos_token_id=2,
                                 eos_token_id=3, tie_word_embeddings=False)).save_pretrained(folder)
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    tok.eos_token = "[SEP]"
    if chat_template:
        tok.chat_template = chat_template
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_chat_lm(tmp_path_factory, tiny_vocab) -> Path:
    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-chat-lm"), tiny_vocab)


def textgen_rows(n: int, offset: int = 0) -> list[dict]:
    """Prompt → completion rows a tiny model learns in a few steps: the completion is the
    prompt's adjective, said twice."""
    adjectives = ["good", "bad", "funny", "dull", "warm", "cold"]
    nouns = ["film", "movie", "story", "plot"]
    return [{"prompt": f"the {nouns[i % 4]} was {adjectives[(i // 4) % 6]}",
             "completion": f"{adjectives[(i // 4) % 6]} {adjectives[(i // 4) % 6]}"}
            for i in range(offset, offset + n)]


@pytest.fixture(scope="session")
def textgen_small(tmp_path_factory) -> dict:
    """24 training and 8 validation prompt → completion rows."""
    d = tmp_path_factory.mktemp("textgen")
    return {"train": write_jsonl(d / "train.jsonl", textgen_rows(24)),
            "validation": write_jsonl(d / "validation.jsonl", textgen_rows(8, 24))}
