"""The install path is real: each example plugin under examples/plugins is installed with
pip (``pip install --no-deps --target DIR``), ``python -m tunesmith`` runs with DIR on
PYTHONPATH in a subprocess, lists the plugin with its distribution and version, and
trains a few steps with it (tiny model) through the CLI. The plugins' own test suites,
which use the conformance kit, then run against the installed copies."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED_DATA, read_jsonl, run_cli, write_jsonl

EXAMPLES = REPO / "examples" / "plugins"
PLUGINS = {   # folder -> (distribution, entry point, what it registers)
    "tunesmith-ner": ("tunesmith-ner", "ner", ("tasks", "token-classification")),
    "tunesmith-bitfit": ("tunesmith-bitfit", "bitfit", ("strategies", "bitfit")),
    "template": ("tunesmith-myplugin", "myplugin", ("strategies", "head-and-norms")),
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """folder -> the --target directory it was pip-installed into."""
    out = {}
    for folder in PLUGINS:
        target = tmp_path_factory.mktemp(f"site-{folder}")
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                               "--no-build-isolation", "--target", str(target), str(EXAMPLES / folder)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[folder] = target
    return out


@pytest.mark.parametrize("folder", list(PLUGINS))
def test_installed_plugin_is_listed_with_distribution_and_version(installed, folder):
    dist, entry_point, (section, name) = PLUGINS[folder]
    proc = run_cli("plugins", "--json", env={"PYTHONPATH": str(installed[folder])})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    info = next(p for p in data["plugins"] if p["name"] == entry_point)
    assert (info["distribution"], info["version"], info["status"]) == (dist, "0.1.0", "loaded")
    entry = next(e for e in data[section] if e["name"] == name)
    assert (entry["distribution"], entry["version"], entry["plugin"]) == (dist, "0.1.0", entry_point)
    # not installed → not there: the listing comes from the installed distribution
    bare = json.loads(run_cli("plugins", "--json").stdout)
    assert name not in {e["name"] for e in bare[section]}


def test_plugin_adds_a_subcommand(installed, tmp_path):
    """The template registers `tunesmith rows` through register_commands; installed for
    real, the command is in --help and runs; a bad line is one error line, exit 2."""
    env = {"PYTHONPATH": str(installed["template"])}
    assert "rows" in run_cli("--help", env=env).stdout
    assert "rows" not in run_cli("--help").stdout   # not installed: not there
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": 1}, {"text": "b"}])
    proc = run_cli("rows", str(data), env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"rows": 2, "fields": {"text": 2, "label": 1}}
    data.write_text('{"text": "a"}\n{oops\n')
    proc = run_cli("rows", str(data), env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "d.jsonl:2: not JSON" in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def ner_small(tmp_path_factory):
    d = tmp_path_factory.mktemp("ner")
    return {"train": write_jsonl(d / "train.jsonl", read_jsonl(SHARED_DATA / "ner" / "train.jsonl", 48)),
            "validation": write_jsonl(d / "validation.jsonl",
                                      read_jsonl(SHARED_DATA / "ner" / "validation.jsonl", 16))}


def _yaml(path, task, model, data, out, strategy):
    path.write_text(f"task: {task}\nmodel: {model}\noutput_dir: {out}\n"
                    f"data:\n  train: {data['train']}\n  validation: {data['validation']}\n"
                    f"strategy: {strategy}\ntraining:\n  epochs: 1\n  batch_size: 8\n"
                    f"  learning_rate: 1e-3\n", encoding="utf-8")
    return path


def test_ner_trains_and_predicts_through_the_cli(installed, tiny_bert, ner_small, tmp_path):
    env = {"PYTHONPATH": str(installed["tunesmith-ner"])}
    cfg = _yaml(tmp_path / "ner.yaml", "token-classification", tiny_bert, ner_small, tmp_path / "run", "full")
    proc = run_cli("train", cfg, "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"precision", "recall", "f1", "accuracy"} <= set(out["eval"])
    manifest = json.loads((tmp_path / "run" / "tunesmith.json").read_text())
    assert manifest["plugins"]["ner"] == {"distribution": "tunesmith-ner", "version": "0.1.0", "status": "loaded"}
    pred = run_cli("predict", tmp_path / "run", "--input", "-", env=env,
                   input='{"tokens": ["EU", "rejects", "German", "call"]}\nPeter Blackburn flew to London\n')
    assert pred.returncode == 0, pred.stderr[-2000:]
    rows = [json.loads(line) for line in pred.stdout.splitlines()]
    assert [len(r["tags"]) for r in rows] == [4, 5] and all("entities" in r for r in rows)
    bad = run_cli("predict", tmp_path / "run", "--input", "-", env=env, input='{"tokens": "EU rejects"}\n')
    assert bad.returncode == 2 and "expected a non-empty list of words" in bad.stderr
    assert "Traceback" not in bad.stderr
    # without the plugin the run cannot be used, and the error says which task is missing
    gone = run_cli("predict", tmp_path / "run", "--input", "-", input="x\n")
    assert gone.returncode == 2 and "unknown task 'token-classification'" in gone.stderr


@pytest.mark.parametrize("folder, strategy", [("tunesmith-bitfit", "bitfit"), ("template", "head-and-norms")])
def test_strategy_plugin_trains_through_the_cli(installed, tiny_bert, sst2_small, tmp_path, folder, strategy):
    env = {"PYTHONPATH": str(installed[folder])}
    cfg = _yaml(tmp_path / "c.yaml", "text-classification", tiny_bert, sst2_small, tmp_path / "run", strategy)
    proc = run_cli("train", cfg, "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    assert json.loads((tmp_path / "run" / "tunesmith.json").read_text())["strategy"] == strategy


@pytest.mark.parametrize("folder", list(PLUGINS))
def test_plugin_test_suite_passes_on_the_installed_copy(installed, folder):
    """The plugin's own tests (written with tunesmith.testing) against the pip-installed
    plugin, from a pytest run that only has the kit through its pytest11 entry point."""
    env = {**os.environ, "PYTHONPATH": str(installed[folder]),
           "TUNESMITH_NER_DATA": str(SHARED_DATA / "ner")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(EXAMPLES / folder), str(EXAMPLES / folder / "tests")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout
