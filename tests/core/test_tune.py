"""`tunesmith tune`: Optuna search over config keys; real subprocesses, tiny BERT.

Bad spaces fail before anything is written; a real 3-trial tune writes its table, best
config and plots; a tune killed with SIGKILL after its third trial finished continues,
when started again, with those three trials kept and the killed one run again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import run_cli

pytest.importorskip("optuna")

SPACE = ["--space", "training.learning_rate=loguniform(1e-4, 3e-2)", "--space", "strategy.r=choice(2, 4)"]


def _config(tmp_path, tiny_bert, sst2_small, **training) -> dict:
    cfg = {"task": "text-classification", "model": str(tiny_bert), "output_dir": str(tmp_path / "run"),
           "data": {"train": str(sst2_small["train"]), "validation": str(sst2_small["validation"])},
           "strategy": {"name": "lora"},
           "training": {"epochs": 2, "batch_size": 16, "logging_steps": 2, **training}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.mark.parametrize("space,message", [
    ("training.learning_rat=loguniform(1e-5,1e-2)", "unknown key 'training.learning_rat' (did you mean "
                                                    "'learning_rate'?)"),
    ("strategy.rank=choice(4,8)", "unknown key 'strategy.rank'"),
    ("training.learning_rate=loguniform(1e-2,1e-5)", "empty range"),
    ("strategy.r=int(8,4)", "empty range"),
    ("training.learning_rate=lognormal(1e-5,1e-2)", "unknown distribution 'lognormal'"),
    ("training.learning_rate=loguniform(1e-5", "cannot parse"),
    ("strategy.r=choice(0,8)", "strategy.r must be >= 1"),
    ("training.epochs", "expected KEY=DIST"),
], ids=["unknown-key", "unknown-strategy-option", "empty-float", "empty-int", "distribution", "unparsable",
        "bad-value", "no-dist"])
def test_bad_search_space_is_one_line_exit_2_nothing_written(space, message, tmp_path, tiny_bert, sst2_small):
    config = _config(tmp_path, tiny_bert, sst2_small)
    out = tmp_path / "tune"
    proc = run_cli("tune", config, "--space", space, "--output", out)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tunesmith: error: ") and message in lines[0], proc.stderr
    assert proc.stdout == ""
    assert not out.exists() and not (tmp_path / "run").exists()


def test_bad_space_in_the_config_section_too(tmp_path, tiny_bert, sst2_small):
    config = _config(tmp_path, tiny_bert, sst2_small)
    data = yaml.safe_load(config.read_text())
    data["tune"] = {"space": {"training.weight_decay": "uniform(0.1, 0.1)"}, "trials": 3}
    config.write_text(yaml.safe_dump(data))
    proc = run_cli("tune", config)
    assert proc.returncode == 2 and "tune.space.training.weight_decay: empty range" in proc.stderr
    assert not (tmp_path / "run-tune").exists()


def test_tune_runs_real_trials_and_writes_table_best_config_and_plots(tmp_path, tiny_bert, sst2_small):
    config = _config(tmp_path, tiny_bert, sst2_small)
    out = tmp_path / "run-tune"    # the default: output_dir + "-tune"
    proc = run_cli("tune", config, *SPACE, "--trials", "3", "--eval-steps", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "trials.json").read_text())
    trials = result["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2]
    assert result["metric"] == "accuracy" and result["direction"] == "maximize"
    assert result["space"] == {"training.learning_rate": "loguniform(0.0001, 0.03)", "strategy.r": "choice(2, 4)"}
    for t in trials:
        assert t["state"] in ("COMPLETE", "PRUNED")
        lr, r = t["params"]["training.learning_rate"], t["params"]["strategy.r"]
        assert isinstance(lr, float) and 1e-4 <= lr <= 3e-2 and r in (2, 4) and isinstance(r, int)
        assert t["learning_rate"] == pytest.approx(lr)   # what the Trainer really used
        assert t["wall_s"] > 0
        # 64 rows / batch 16 = 4 steps an epoch, evaluated every 2 steps: reported to Optuna
        assert list(t["intermediate"])[:1] == ["2"] and all(0 <= v <= 1 for v in t["intermediate"].values())
        manifest = json.loads((out / "trials" / f"{t['number']:04d}" / "tunesmith.json").read_text())
        if t["state"] == "COMPLETE":
            assert list(t["intermediate"]) == ["2", "4", "6", "8"] and 0 <= t["value"] <= 1
            assert manifest["status"] == "complete"
            assert json.loads((out / "trials" / f"{t['number']:04d}" / "metrics.json").read_text())[
                "eval"]["accuracy"] == t["value"]
        else:
            # Optuna keeps a pruned trial's last reported value as its value
            assert manifest["status"] == "pruned" and t["value"] == list(t["intermediate"].values())[-1]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: t["value"])
    assert result["best"]["number"] == best["number"]
    # best.yaml is a runnable config: the base config with the best parameters
    from tunesmith import load_config, load_plugins

    cfg = load_config(out / "best.yaml", registry=load_plugins().registry)
    assert cfg.training.learning_rate == pytest.approx(best["params"]["training.learning_rate"])
    assert cfg.strategy_options.r == best["params"]["strategy.r"] and cfg.output_dir == str(tmp_path / "run")
    table = (out / "trials.md").read_text()
    assert table.count("\n| ") >= 4 and "(best)" in table
    assert (out / "optimization_history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if len({t["value"] for t in complete}) > 1:   # importance is undefined when every trial scored the same
        assert (out / "param_importances.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "no param_importances.png yet" in proc.stderr
    assert "| trial | state |" in proc.stdout and f"best: trial {best['number']}" in proc.stdout
    # the same command again: the study is complete, nothing more runs
    again = run_cli("tune", config, *SPACE, "--trials", "3", "--eval-steps", "2")
    assert again.returncode == 0 and "3 of 3 trials finished" in again.stderr
    assert len(json.loads((out / "trials.json").read_text())["trials"]) == 3
    # another space over the same folder is refused (it would mix two studies)
    other = run_cli("tune", config, "--space", "strategy.r=choice(2, 8)", "--trials", "3")
    assert other.returncode == 2 and "another search space" in other.stderr


SLOW_STEP = """
import time, transformers
_orig = transformers.Trainer.training_step
def _slow(self, *a, **k):
    time.sleep(0.1)
    return _orig(self, *a, **k)
transformers.Trainer.training_step = _slow
"""


def test_sigkill_after_trial_3_then_restart_continues_at_trial_4(tmp_path, tiny_bert, sst2_small):
    config = _config(tmp_path, tiny_bert, sst2_small, epochs=1)
    out = tmp_path / "tune"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_STEP)   # test only: trials last long enough to be hit
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "tunesmith", "tune", str(config), *SPACE, "--trials", "4", "--pruner", "none",
           "--output", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import optuna
    from optuna.trial import TrialState

    deadline, states, storage = time.time() + 240, {}, None
    # kill once trials 0-2 are finished and trial 3 is running (its process recorded: it has started)
    while not (len(states) == 4 and all(states[n] == TrialState.COMPLETE for n in range(3))
               and states[3] == TrialState.RUNNING):
        if proc.poll() is not None:
            pytest.fail(f"tune ended early: {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"trial 3 did not start in time: {states}")
        if storage is None and (out / "trials.json").is_file():   # the study exists: trial 0 is done
            storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'study.db'}")
        if storage is not None:
            study = optuna.load_study(study_name="tunesmith", storage=storage)
            states = {t.number: t.state for t in study.get_trials(deepcopy=False) if "pid" in t.user_attrs}
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    before = json.loads((out / "trials.json").read_text())["trials"][:3]
    assert [t["number"] for t in before] == [0, 1, 2]

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "continuing the study" in done.stderr and "3 of 4 trials finished" in done.stderr
    trials = json.loads((out / "trials.json").read_text())["trials"]
    assert trials[:3] == before                     # the finished trials are kept, untouched
    states = {t["number"]: t["state"] for t in trials}
    # the killed trial 3: marked failed, then run again with its parameters as trial 4
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE", 3: "FAIL", 4: "COMPLETE"}
    assert "trial(s) 3 were left running by a stopped process: marked failed, queued again" in done.stderr
    assert trials[4]["retry_of"] == 3 and trials[4]["params"] == trials[3]["params"]
    print(f"\n[tune] SIGKILL while trial 3 ran; after the restart: {states}")


def test_plots_of_a_study_with_varied_results(tmp_path):
    """The two PNGs from a real Optuna study (no training: the tiny trials above may all
    score the same, which leaves parameter importance undefined)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from tunesmith.apps.tune import plots

    study = optuna.create_study(direction="maximize")
    dists = {"training.learning_rate": FloatDistribution(1e-4, 3e-2, log=True),
             "strategy.r": CategoricalDistribution([2, 4])}
    for lr, r, value in [(1e-3, 2, 0.70), (1e-2, 4, 0.81), (2e-4, 2, 0.52), (5e-3, 4, 0.80)]:
        study.add_trial(optuna.create_trial(params={"training.learning_rate": lr, "strategy.r": r},
                                            distributions=dists, value=value))
    plots(study, tmp_path)
    for png in ("optimization_history.png", "param_importances.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
