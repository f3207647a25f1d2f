"""Meta-tests (after datasette): every hook is documented with its exact signature,
and every hook is exercised by some test."""

import inspect
import re
from pathlib import Path

import pytest

from tunesmith import hookspecs

REPO = Path(__file__).resolve().parents[1]
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
         if hasattr(fn, "tunesmith_spec")]


def test_there_are_hooks():
    assert {"register_tasks", "register_strategies", "register_metrics", "register_model_sources",
            "configure_trainer", "on_run_end"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_signature(hook):
    fn = getattr(hookspecs, hook)
    assert fn.__doc__ and ":param" in fn.__doc__, f"{hook} needs a docstring with :param: lines"
    signature = f"{hook}({', '.join(inspect.signature(fn).parameters)})"
    assert f"### `{signature}`" in (REPO / "docs" / "plugins.md").read_text(), \
        f"docs/plugins.md has no section '### `{signature}`'"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_tested(hook):
    tests = [p for p in (REPO / "tests").rglob("test_*.py") if p.name != "test_docs.py"]
    pattern = re.compile(rf"\bdef {hook}\(|\"{hook}\"")
    assert any(pattern.search(p.read_text()) for p in tests), f"no test implements or calls hook {hook!r}"


def test_config_reference_lists_every_key():
    import dataclasses

    from tunesmith.config import DataConfig, GenerationConfig, RunConfig, TrainingConfig
    from tunesmith.plugins.classification import ClassificationOptions
    from tunesmith.plugins.extractive_qa import QAOptions
    from tunesmith.plugins.seq2seq import SummarizationOptions, TranslationOptions
    from tunesmith.plugins.strategies import LoraOptions, PartialOptions
    from tunesmith.plugins.text_generation import TextGenerationOptions

    doc = (REPO / "docs" / "configuration.md").read_text()
    sections = [(RunConfig, ""), (DataConfig, "data."), (TrainingConfig, "training."),
                (ClassificationOptions, "data."), (QAOptions, "data."), (GenerationConfig, "generation."),
                (TranslationOptions, "data."), (SummarizationOptions, "data."), (TextGenerationOptions, "data."),
                (PartialOptions, "strategy."), (LoraOptions, "strategy.")]
    for cls, prefix in sections:
        for f in dataclasses.fields(cls):
            if f.init and f.name not in ("data", "strategy", "training", "generation", "source", "options",
                                         "task_options", "strategy_options"):
                assert f"`{prefix}{f.name}`" in doc, f"docs/configuration.md lacks `{prefix}{f.name}`"


def _modules():
    return sorted(p for d in ("core", "apps", "plugins") for p in (REPO / d).rglob("*.py")
                  if "testing" not in p.parts and "metrics" not in p.parts)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_says_its_purpose_first_and_is_in_the_architecture(path):
    """Each module opens with a docstring saying what it is for, and docs/architecture.md's
    layout names it (a package by its folder)."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith('"""') and len(first) > 10, f"{path}: the first line is not a docstring: {first!r}"
    layout = (REPO / "docs" / "architecture.md").read_text().split("## Layout", 1)[1].split("## ", 1)[0]
    name = f"{path.parent.name}/" if path.name == "__init__.py" and path.parent.name != "core" else path.name
    assert name in layout, f"docs/architecture.md's layout does not name {name}"


def _member_rows() -> list[str]:
    """docs/plugins.md's member table as tunesmith.protocols.MEMBERS says it must read."""
    from tunesmith.protocols import MEMBERS, REQUIRED

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    return [f"| {m.kind} | `{m.name}` | {'required' if m.default is REQUIRED else f'`{m.default!r}`'} | "
            f"{cell(m.purpose)} |" for m in MEMBERS]


def test_member_table_matches_the_declared_contract():
    """One table in docs/plugins.md lists every member a plugin may define; it must equal
    tunesmith.protocols.MEMBERS (object, member, default, purpose), row for row."""
    doc = (REPO / "docs" / "plugins.md").read_text()
    header = "| object | member | default | purpose |"
    assert doc.count(header) == 1, "docs/plugins.md needs exactly one member table"
    lines = doc[doc.index(header):].splitlines()[2:]
    rows = [line for line in lines[:next((i for i, l in enumerate(lines) if not l.startswith("|")), len(lines))]]
    expected = _member_rows()
    missing = [r for r in expected if r not in rows]
    extra = [r for r in rows if r not in expected]
    assert not missing and not extra, ("docs/plugins.md's member table differs from tunesmith.protocols.MEMBERS;"
                                       f"\nmissing:\n" + "\n".join(missing) + "\nnot declared:\n" + "\n".join(extra))
    assert rows == expected, "docs/plugins.md's member table is not in the declared order"


# functions the member and literal checks skip: none since the model card moved to plugins/card.py
PENDING: set = set()


def _outside_pending(path, tree):
    """Every AST node of ``tree`` except those inside a PENDING function."""
    import ast

    rel = str(path.relative_to(REPO))
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and (rel, node.name) in PENDING:
            skip |= {id(n) for n in ast.walk(node)}
    return [n for n in ast.walk(tree) if id(n) not in skip]


def test_core_reads_optional_members_only_through_member():
    """No getattr/hasattr of a declared optional member in core/ or plugins/: the core
    reads them with tunesmith.protocols.member, which applies the declared default."""
    import ast

    from tunesmith.protocols import MEMBERS, REQUIRED

    optional = {m.name for m in MEMBERS if m.default is not REQUIRED}
    found = []
    for path in [*(REPO / "core").rglob("*.py"), *(REPO / "plugins").rglob("*.py")]:
        for node in _outside_pending(path, ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in ("getattr", "hasattr") and len(node.args) >= 2 and \
                    isinstance(node.args[1], ast.Constant) and node.args[1].value in optional:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    assert not found, "read these through tunesmith.protocols.member:\n" + "\n".join(found)


def test_protocol_members_are_declared_required():
    from tunesmith.protocols import MEMBERS, REQUIRED, ModelSource, Strategy, Task

    required = {(m.kind, m.name) for m in MEMBERS if m.default is REQUIRED}
    for kind, protocol in (("task", Task), ("strategy", Strategy), ("model source", ModelSource)):
        names = set(getattr(protocol, "__annotations__", {}))
        names |= {n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")}
        assert {(kind, n) for n in names} <= required, f"{protocol.__name__} members missing from MEMBERS"
        assert {n for k, n in required if k == kind} <= names, f"MEMBERS requires more than {protocol.__name__}"
