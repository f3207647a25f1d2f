"""The user-facing docs stay true: every task has its section in docs/tasks.md, and the
README's follow-up examples can run one after another after setup.sh (CI runs them:
.ci/readme_commands.py)."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".ci"))

import readme_commands  # noqa: E402


def test_every_registered_task_has_a_section_in_tasks_md(plugins):
    text = (REPO / "docs" / "tasks.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## `([^`]+)`(.*)$", text, re.M))
    builtin = {name for name, e in plugins.registry.tasks.items() if e.distribution == "tunesmith"}
    assert builtin, "no built-in task registered"
    missing = sorted(builtin - set(sections))
    assert not missing, f"docs/tasks.md has no '## `NAME`' section for: {', '.join(missing)}"
    for name in builtin:
        body = text.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
        for part in ("### Data", "### Options", "Metrics", "tunesmith train"):
            assert part in body, f"docs/tasks.md, task {name!r}: no {part!r}"
        for alias in getattr(plugins.registry.tasks[name].obj, "aliases", ()):
            assert f"`{alias}`" in sections[name], f"docs/tasks.md: {name!r} heading omits alias {alias!r}"


def test_readme_examples_run_in_order_after_setup():
    """What each command reads exists (in the clone or from an earlier command), and no
    command writes where setup.sh's demo (runs/sentiment) or an earlier command already did."""
    commands, python = readme_commands.blocks()
    written = {"runs/sentiment"}   # setup.sh's demo
    for command in commands:
        words = shlex.split(command.split("|")[-1])
        if words[0] == "torchrun":
            words = words[words.index("-m") + 1:]
        assert words[0] == "tunesmith", command
        sub = words[1]
        sets = dict(w.split("=", 1) for w in (words[i + 1] for i, x in enumerate(words) if x == "--set"))
        if sub in ("train", "compare", "tune"):
            config = REPO / words[2]
            assert config.is_file(), command
            import yaml

            out = sets.get("output_dir") or yaml.safe_load(config.read_text())["output_dir"]
            out += {"train": "", "compare": "-compare", "tune": "-tune"}[sub]
            assert out not in written, f"README: {command!r} writes into {out!r}, which exists by then"
            written.add(out)
        elif sub in ("evaluate", "predict", "serve", "export"):
            assert words[2] in written, f"README: {command!r} reads {words[2]!r} before any command made it"
            for flag in ("--data", "--input"):
                if flag in words and words[words.index(flag) + 1] != "-":
                    assert (REPO / words[words.index(flag) + 1]).is_file(), command
            if "--out" in words:
                assert words[words.index("--out") + 1] not in written
                written.add(words[words.index("--out") + 1])
    match = re.search(r"overrides=\[(.*?)\]", python)
    assert match and "output_dir=" in match.group(1), "README: the Python example must not reuse runs/sentiment"
    out = re.search(r"output_dir=([^\"']+)", match.group(1)).group(1)
    assert out not in written
    assert ".ci/readme_commands.py" in (REPO / ".ci" / "run").read_text()


def test_readme_command_runner_makes_training_cheap_and_nothing_else():
    assert readme_commands.cheap("tunesmith plugins") == "tunesmith plugins"
    cheap = readme_commands.cheap("tunesmith tune x.yaml --trials 12")
    assert "--trials 2" in cheap and "training.max_train_samples=64" in cheap
    assert readme_commands._strip_comment("a 'b # c' # d").strip() == "a 'b # c'"
