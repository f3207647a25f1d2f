"""BIO tags → entities, the way seqeval's default (conlleval-compatible) mode reads them.

An entity starts at ``B-X``, or at ``I-X`` when the previous tag is ``O`` or of
another type (IOB1-style input is read leniently, as conlleval does); it ends
before the next ``O``, ``B-*`` or tag of another type. Pure Python, no imports.
"""

from __future__ import annotations


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER"`` → ``("B", "PER")``; ``"O"`` → ``("O", "")``."""
    if tag == "O" or not tag:
        return "O", ""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def get_entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """``(type, first, last)`` word indices (inclusive) of every entity in a tag sequence."""
    entities = []
    kind, start = None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, this = split_tag(tag)
        ends = kind is not None and (prefix in ("O", "B") or this != kind)
        if ends:
            entities.append((kind, start, i - 1))
            kind = None
        if prefix in ("B", "I") and (kind is None or prefix == "B" or this != kind):
            kind, start = this, i
    return entities
