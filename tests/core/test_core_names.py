"""The core knows no particular task or strategy: no name or alias of a registered task
or strategy appears as a string literal in core/ (docstrings and comments aside).

What a task or strategy needs from the core is a declared member (tunesmith.protocols),
implemented in its plugin. core/testing/ is skipped: the conformance kit is test tooling
a plugin's tests import, never imported by the core, and it must name a concrete built-in
task (text-classification, with its tiny data fixture) to check a strategy on, and the
strategy a tiny run config defaults to.
"""

import ast

import pytest

from tests.test_docs import PENDING, REPO, _outside_pending
from tunesmith import load_plugins

CORE = REPO / "core"
SKIPPED = CORE / "testing"


def _names() -> set[str]:
    reg = load_plugins().registry
    names = set(reg.aliases) | set(reg.strategies)   # every task name and alias, every strategy
    assert {"text-classification", "question-answering", "translation", "lora", "frozen"} <= names
    return names


def _docstrings(tree) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _literals(path, nodes, docs, names) -> list[str]:
    return [f"{path.relative_to(REPO)}:{n.lineno}: {n.value!r}" for n in nodes
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in names
            and id(n) not in docs]


def test_no_task_or_strategy_name_in_core():
    names = _names()
    found = []
    for path in sorted(CORE.rglob("*.py")):
        if SKIPPED in path.parents:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += _literals(path, _outside_pending(path, tree), _docstrings(tree), names)
    assert not found, ("the core names particular tasks/strategies; make it a declared member "
                       "(tunesmith.protocols.MEMBERS) implemented by the plugin:\n" + "\n".join(found))


def test_the_check_sees_a_literal():
    """The scanner itself: a literal in code is found, the same text in a docstring is not."""
    tree = ast.parse('"""About lora."""\nif strategy.name == "lora":\n    pass\n')
    found = _literals(REPO / "core" / "x.py", ast.walk(tree), _docstrings(tree), {"lora"})
    assert found == ["core/x.py:2: 'lora'"]
