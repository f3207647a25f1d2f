"""The pytest side of the conformance kit (loaded through the ``pytest11`` entry point).

Fixture names are kept few and specific; a project's own conftest.py fixture of the
same name overrides these (e.g. a ``tiny_vocab`` from the project's own data).
"""

from __future__ import annotations

import pytest

from .cli import run_cli
from .models import (KIT_WORDS, make_tiny_bert, make_tiny_llama, tiny_classification_rows,
                     write_jsonl, write_vocab)


@pytest.fixture
def tunesmith_plugins():
    """A fresh plugin manager from the installed entry points."""
    from ..manager import load_plugins

    return load_plugins()


@pytest.fixture(scope="session")
def tiny_vocab(tmp_path_factory):
    """A WordPiece vocabulary (characters + a few words): any lower-cased text tokenizes."""
    return write_vocab(tmp_path_factory.mktemp("tunesmith-vocab") / "vocab.txt", KIT_WORDS)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, tiny_vocab):
    """Folder of a 2-layer, hidden-32 random BERT + tokenizer (seconds to train)."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), tiny_vocab)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tiny_vocab):
    """Folder of a 2-layer random Llama-style decoder + tokenizer."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tiny_vocab)


@pytest.fixture(scope="session")
def tiny_classification_data(tmp_path_factory):
    """``{"train": path, "validation": path}``: 48 + 16 labelled sentences."""
    d = tmp_path_factory.mktemp("tiny-classification")
    return {"train": write_jsonl(d / "train.jsonl", tiny_classification_rows(48)),
            "validation": write_jsonl(d / "validation.jsonl", tiny_classification_rows(16, offset=48))}


@pytest.fixture
def tunesmith_cli():
    """``tunesmith_cli("plugins", "--json", env={...})`` runs the CLI in a subprocess."""
    return run_cli
