"""`tunesmith compare`: one config, several strategies, one table + chart; real subprocesses."""

from __future__ import annotations

import json

import yaml

from tests.conftest import run_cli


def test_compare_writes_table_json_and_chart_and_survives_a_failure(tiny_config, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    out = tmp_path / "run-compare"   # no --output: the config's output_dir + "-compare"
    proc = run_cli("compare", config, "--strategies", "full,partial,frozen",
                   "--set", "training.logging_steps=1",
                   # per-strategy overrides: one learning rate, and one run that cannot work
                   "--set", "full:training.learning_rate=0.002", "--set", "partial:strategy.layers=5",
                   "--set", "frozen:training.precision=fp32")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "comparison.json").read_text())
    rows = {r["strategy"]: r for r in result["runs"]}
    assert list(rows) == ["full", "partial", "frozen"]
    assert "strategy.layers=5" in rows["partial"]["error"]     # reported, and the others still ran
    full, frozen = rows["full"], rows["frozen"]
    assert full["learning_rate"] == 0.002 and frozen["learning_rate"] == 1e-3   # frozen's own default
    assert full["metric"] == "accuracy" and 0 <= full["value"] <= 1
    assert full["trainable_parameters"] == full["total_parameters"]
    assert frozen["trainable_parameters"] < full["trainable_parameters"] and frozen["trainable_percent"] < 100
    for r in (full, frozen):
        assert r["peak_rss_mb"] > 100 and r["train_runtime_s"] > 0 and r["examples_per_s"] > 0
        assert r["train_examples"] == 64 and r["tokens_per_s"] > r["examples_per_s"]
        assert type(r["train_tokens"]) is int and r["train_tokens"] > 64   # typed JSON, every strategy
        assert (out / "runs" / r["strategy"] / "model").is_dir()
        assert json.loads((out / "runs" / r["strategy"] / "tunesmith.json").read_text())["strategy"] == r["strategy"]
    assert frozen["feature_cache"] is True and full["feature_cache"] is False
    # each run's precision is recorded: frozen forced to fp32, full as auto decided (manifest)
    full_manifest = json.loads((out / "runs" / "full" / "tunesmith.json").read_text())
    assert frozen["precision"] == "fp32" and full["precision"] == full_manifest["precision"]["used"]
    table = (out / "comparison.md").read_text()
    assert "| full | " in table and "| partial | failed:" in table and "| frozen | " in table
    assert "| precision |" in table and " | fp32 | " in table
    assert "| learning rate |" in table and "| full | " in table and " | 0.002 | " in table
    assert result["output"] == str(out) and not (tmp_path / "comparison").exists()
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| full |" in proc.stdout


def test_compare_rejects_bad_input_before_training(tiny_config, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    out = tmp_path / "cmp"
    proc = run_cli("compare", config, "--strategies", "full,lora", "--output", out,
                   "--set", "qlora:training.learning_rate=1")
    assert proc.returncode == 2 and "'qlora' is not one of the compared strategies" in proc.stderr
    proc = run_cli("compare", config, "--strategies", "full,nope", "--output", out)
    assert proc.returncode == 2 and "nope" in proc.stderr
    assert not (out / "runs").exists()
