"""Shared fixtures: offline environment, tiny models built from configs, small data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

# no hub, ever: set before transformers / datasets / evaluate are imported
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE = REPO / "examples" / "data" / "sst2"


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if limit and len(rows) >= limit:
                break
    return rows


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


def _save_tiny(folder: Path, config, model_cls, vocab: Path) -> Path:
    import torch
    from transformers import BertTokenizerFast

    torch.manual_seed(0)
    model = model_cls(config)
    model.save_pretrained(folder)
    # transformers 5 ignores vocab_file= here (every word became [UNK]); pass the vocabulary
    words = vocab.read_text(encoding="utf-8").split("\n")[:-1]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, tiny_vocab) -> Path:
    """A 2-layer, hidden-32 BERT with a tokenizer: fast stand-in for MiniLM."""
    from transformers import BertConfig, BertModel

    n = len(tiny_vocab.read_text().split("\n")) - 1
    config = BertConfig(vocab_size=n, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256)
    return _save_tiny(tmp_path_factory.mktemp("tiny-bert"), config, BertModel, tiny_vocab)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tiny_vocab) -> Path:
    """A 2-layer Llama-style decoder with the same vocabulary."""
    from transformers import LlamaConfig, LlamaModel

    n = len(tiny_vocab.read_text().split("\n")) - 1
    config = LlamaConfig(vocab_size=n, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    return _save_tiny(tmp_path_factory.mktemp("tiny-llama"), config, LlamaModel, tiny_vocab)


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


def run_cli(*args, env=None, input=None, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """Run ``python -m tunesmith ...`` in a real subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "tunesmith", *map(str, args)], capture_output=True,
                          text=True, env=full_env, input=input, cwd=cwd, timeout=timeout)
