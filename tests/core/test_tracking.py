"""training.report_to passes through to the Trainer: TensorBoard works offline."""

from __future__ import annotations

import tunesmith


def test_tensorboard_event_files_in_run_dir(tiny_config):
    tiny_config["training"]["report_to"] = "tensorboard"
    result = tunesmith.train(tiny_config, quiet=True)
    events = list(result.run_dir.rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"]
    assert (result.run_dir / "curves.png").is_file()
