"""Shared by the bench scripts: paths and the docs/benchmarks.md section writer."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the shared data beside the checkout (TUNESMITH_SHARED_DATA: elsewhere, e.g. from a worktree)
DATA = Path(os.environ.get("TUNESMITH_SHARED_DATA", REPO.parent / "shared" / "data")) / "classification"
DOC = REPO / "docs" / "benchmarks.md"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}


def replace_section(doc: Path, name: str, body: str) -> None:
    """Rewrite the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = doc.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{doc}: markers {begin} ... {end} not found")
    head, rest = text.split(begin, 1)
    doc.write_text(head + begin + "\n" + body + "\n" + end + rest.split(end, 1)[1])


def env() -> dict:
    return {**os.environ, **OFFLINE}
