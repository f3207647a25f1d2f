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
