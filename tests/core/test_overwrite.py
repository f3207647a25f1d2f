"""``--overwrite`` deletes only a run directory tunesmith made, and never one holding the
config, the data or the base model the run reads. Through the CLI: the real ``python -m
tunesmith`` for the replace-a-run round trip, the same CLI in this process (cli_here) for
the refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tests.conftest import SAMPLE, read_jsonl, run_cli, write_jsonl

ROWS = read_jsonl(SAMPLE / "train.jsonl", 16)
SMALL = ["--quiet", "--set", "training.max_train_samples=8"]


def _project(root: Path, model: Path, output_dir: str) -> Path:
    """proj/ with a config, its data and an unrelated file; returns the config path."""
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "train.jsonl", ROWS)
    write_jsonl(root / "validation.jsonl", ROWS[:8])
    (root / "notes.txt").write_text("precious", encoding="utf-8")
    cfg = {"task": "text-classification", "model": str(model), "output_dir": output_dir,
           "data": {"train": "train.jsonl", "validation": "validation.jsonl"},
           "training": {"epochs": 1, "batch_size": 8}}
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(done, *parts) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    for part in parts:
        assert part in line, line
    return line


def test_output_dir_holding_config_and_data_is_never_deleted(tmp_path, tiny_bert, cli_here):
    proj = tmp_path / "proj"
    cfg = _project(proj, tiny_bert, output_dir=str(proj))
    before = _snapshot(proj)
    line = _refused(cli_here("train", cfg, "--overwrite", *SMALL), "not a tunesmith run directory",
                    "nothing was deleted")
    assert "--overwrite" in line   # says what --overwrite replaces
    assert _snapshot(proj) == before


def test_run_dir_that_holds_the_config_is_never_deleted(tmp_path, tiny_bert, cli_here):
    """Even a real run directory is kept when the config or data live inside it."""
    proj = tmp_path / "proj"
    cfg = _project(proj, tiny_bert, output_dir=str(proj))
    (proj / "tunesmith.json").write_text(json.dumps({"tunesmith_version": "0.1.0", "status": "failed"}))
    before = _snapshot(proj)
    _refused(cli_here("train", cfg, "--overwrite", *SMALL), "contains", "which this run reads",
             "nothing was deleted")
    assert _snapshot(proj) == before


def test_output_dir_equal_to_the_base_model_is_never_deleted(tmp_path, tiny_bert, cli_here):
    model = tmp_path / "base-model"
    shutil.copytree(tiny_bert, model)
    cfg = _project(tmp_path / "proj", model, output_dir=str(model))
    before = _snapshot(model)
    _refused(cli_here("train", cfg, "--overwrite", *SMALL), "not a tunesmith run directory")
    assert _snapshot(model) == before


def test_run_dir_whose_model_is_the_base_is_never_deleted(tmp_path, tiny_bert, cli_here):
    """Continue training from a run's own model/ into the same output_dir: refused."""
    cfg = _project(tmp_path / "proj", tiny_bert, output_dir=str(tmp_path / "run"))
    assert cli_here("train", cfg, *SMALL).returncode == 0
    again = _project(tmp_path / "proj2", tmp_path / "run" / "model", output_dir=str(tmp_path / "run"))
    before = _snapshot(tmp_path / "run")
    _refused(cli_here("train", again, "--overwrite", *SMALL), "contains", "model", "nothing was deleted")
    assert _snapshot(tmp_path / "run") == before


def test_root_and_files_are_refused_without_suggesting_overwrite(tmp_path, tiny_bert, cli_here):
    cfg = _project(tmp_path / "proj", tiny_bert, output_dir="/")
    line = _refused(cli_here("train", cfg, *SMALL), "already exists")
    assert "--overwrite" not in line   # / is no run directory: --overwrite would not help
    _refused(cli_here("train", cfg, "--overwrite", *SMALL), "not a tunesmith run directory")
    (tmp_path / "afile").write_text("keep", encoding="utf-8")
    cfg = _project(tmp_path / "proj", tiny_bert, output_dir=str(tmp_path / "afile"))
    _refused(cli_here("train", cfg, "--overwrite", *SMALL), "is not a directory")
    assert (tmp_path / "afile").read_text() == "keep"


def test_overwrite_replaces_a_previous_run(tmp_path, tiny_bert):
    cfg = _project(tmp_path / "proj", tiny_bert, output_dir=str(tmp_path / "run"))
    assert run_cli("train", cfg, *SMALL).returncode == 0
    (tmp_path / "run" / "stale.txt").write_text("old", encoding="utf-8")
    line = _refused(run_cli("train", cfg, *SMALL), "already exists")
    assert "--overwrite" in line   # a run directory: the hint applies
    ok = run_cli("train", cfg, "--overwrite", *SMALL)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert not (tmp_path / "run" / "stale.txt").exists() and (tmp_path / "run" / "model").is_dir()
