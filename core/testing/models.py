"""Tiny random models built from configs, and tiny data, for fast plugin tests."""

from __future__ import annotations

import json
import string
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARS = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))

POSITIVE = ["good", "great", "fine", "lovely", "superb", "funny", "warm", "bright"]
NEGATIVE = ["bad", "awful", "dull", "boring", "poor", "weak", "cold", "grim"]
NOUNS = ["film", "movie", "story", "plot", "cast", "show", "book", "song"]


def write_jsonl(path, rows) -> Path:
    """Write rows as JSON Lines (creating folders); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_vocab(path, words=()) -> Path:
    """A WordPiece vocabulary: special tokens, characters (so every lower-cased word can
    be tokenized), ``##`` continuations, then ``words``."""
    vocab = SPECIAL + CHARS + [f"##{c}" for c in CHARS]
    seen = set(vocab)
    for w in words:
        if w not in seen:
            vocab.append(w)
            seen.add(w)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


def _vocab_size(vocab: Path) -> int:
    return len(Path(vocab).read_text(encoding="utf-8").split("\n")) - 1


def _save(folder: Path, config, model_cls, vocab: Path) -> Path:
    import torch
    from transformers import BertTokenizerFast

    torch.manual_seed(0)
    model_cls(config).save_pretrained(folder)
    # transformers 5 ignores ``vocab_file=`` here (the tokenizer would know only the
    # special tokens and map every word to [UNK]); pass the vocabulary itself
    tokens = Path(vocab).read_text(encoding="utf-8").split("\n")[:-1]
    BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}).save_pretrained(folder)
    return Path(folder)


def make_tiny_bert(folder, vocab) -> Path:
    """A 2-layer, hidden-32 BERT backbone + tokenizer in ``folder`` (a stand-in for MiniLM);
    task plugins put their own head on it with ``AutoModelFor...from_pretrained``."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=_vocab_size(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=256)
    return _save(Path(folder), config, BertModel, Path(vocab))


def make_tiny_llama(folder, vocab) -> Path:
    """A 2-layer Llama-style decoder with the same kind of tokenizer."""
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(vocab_size=_vocab_size(vocab), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
                         max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    return _save(Path(folder), config, LlamaModel, Path(vocab))


def tiny_classification_rows(n: int, offset: int = 0) -> list[dict]:
    """``n`` short sentences labelled by sentiment word (1 positive, 0 negative):
    learnable in a few steps, deterministic."""
    rows = []
    for i in range(offset, offset + n):
        good = i % 2 == 0
        adj = (POSITIVE if good else NEGATIVE)[(i // 2) % len(POSITIVE)]
        noun = NOUNS[(i // 3) % len(NOUNS)]
        rows.append({"text": f"the {noun} was {adj} , really {adj}", "label": int(good)})
    return rows


KIT_WORDS = ["the", "was", "really", ","] + POSITIVE + NEGATIVE + NOUNS
