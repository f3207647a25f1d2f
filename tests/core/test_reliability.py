"""Issue 16, reliability round 2 (config, CLI, run lifecycle, predict input), through the
REAL ``python -m tunesmith`` (most config cases: the same CLI in this process, see
SUBPROCESS): exit 2, one ``tunesmith: error:`` line, no traceback,
nothing half-written, nothing lost. The messages go into docs/errors.md like those of
test_bad_input.py (same ``TUNESMITH_ERRORS_TABLE`` recorder).

- CONFIG_CASES fail before the run directory exists: none may be left behind.
- The lifecycle tests fail after it exists: the run must say ``failed`` and the same
  command, corrected, must then just work.
- PREDICT_CASES run against one real trained run (module fixture).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import SAMPLE, read_jsonl, run_cli, write_jsonl
from tests.core.test_bad_input import Ctx, _record

ROWS = read_jsonl(SAMPLE / "train.jsonl", 24)
SMALL = ["--quiet", "--set", "training.max_train_samples=8"]


def _one_error_line(done, *parts) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("tunesmith: error: "), lines[0]
    for part in parts:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    return lines[0]


def _nested_yaml(depth: int) -> str:
    return "task: text-classification\nx: " + "[" * depth + "]" * depth + "\n"


ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi"))   # 9**9 = 387M strings once expanded


def _huge_list_config(c) -> list:
    c.cfg["task"] = list(range(90_000))   # 0.6 MB quoted in the message (under the 100,000-value cap)
    c.cfg["training"]["batch_size"] = "x" * 5_000_000   # and a 5 MB value
    path = c.tmp / "huge.json"
    path.write_text(json.dumps(c.cfg), encoding="utf-8")
    return ["train", path]


def _dup_json(c) -> list:
    c.cfg["training"] = {"epochs": 1}
    text = json.dumps(c.cfg, indent=1)
    text = text.replace('"epochs": 1', '"epochs": 1,\n  "epochs": 2')   # a second "epochs" line
    return ["train", c.data("dup.json", text)]


def _not_installed_integration() -> str:
    import importlib.util

    for name in ("wandb", "neptune", "clearml", "dvclive", "swanlab", "comet_ml"):
        if importlib.util.find_spec(name) is None:
            return name
    pytest.skip("every tested integration is installed")


def _long_row_data(c) -> list:
    rows = [dict(r) for r in ROWS]
    rows[3]["text"] = " ".join(["film"] * 700)   # ~700 tokens; the tiny BERT has 512 positions
    c.cfg["data"]["train"] = c.data("long.jsonl", rows)
    c.cfg["data"]["max_length"] = 1024
    return ["train", c.write()]


# (id, build(ctx) -> argv, [substrings of the one stderr line])
CONFIG_CASES = [
    # class 4: non-finite numbers
    ("learning-rate-inf", lambda c: c.set("training.learning_rate=1e400"),
     ["training.learning_rate must be a finite number", "1e400"]),
    ("epochs-inf", lambda c: c.set("training.epochs=.inf"), ["training.epochs must be a finite number"]),
    ("weight-decay-nan", lambda c: c.set("training.weight_decay=.nan"),
     ["training.weight_decay must be a finite number"]),
    ("task-option-inf", lambda c: c.set("data.threshold=-.inf"), ["data.threshold must be a finite number"]),
    ("trainer-args-nan", lambda c: c.set("training.trainer_args.max_grad_norm=.nan"),
     ["training.trainer_args.max_grad_norm must be a finite number"]),
    ("epochs-int-too-big-for-float", lambda c: (c.cfg["training"].update(epochs=10 ** 400), ["train", c.write()])[1],
     ["training.epochs must be a finite number"]),
    # class 3: checks that used to fail after the run directory existed
    ("trainer-args-unknown", lambda c: c.set("training.trainer_args.not_an_arg=1"),
     ["training.trainer_args", "not_an_arg"]),
    ("trainer-args-bad-value", lambda c: c.set("training.trainer_args.lr_scheduler_type=wobbly"),
     ["training.trainer_args", "wobbly"]),
    ("report-to-not-installed", lambda c: c.set(f"training.report_to={_not_installed_integration()}"),
     ["training.report_to=", "requires"]),
    ("report-to-unknown", lambda c: c.set("training.report_to=nonsense"),
     ["training.report_to='nonsense'", "not supported"]),
    ("max-length-beyond-positions", _long_row_data,
     ["data.max_length=1024", "512 positions", "at most 512"]),
    # class 5: user mistakes that were "internal error"
    ("config-nested-10k-deep", lambda c: ["train", c.data("deep.yaml", _nested_yaml(10_000))],
     ["deep.yaml", "nested more than 64 levels"]),
    ("config-json-nested-100k-deep", lambda c: ["train", c.data("deep.json", '{"x": ' + "[" * 100_000
                                                                   + "]" * 100_000 + "}")],
     ["deep.json", "nested more than 64 levels"]),
    ("config-yaml-alias-bomb", lambda c: ["train", c.data("bomb.yaml", ALIAS_BOMB)],
     ["bomb.yaml", "more than 100,000 values"]),
    ("config-unreadable", lambda c: ["train", "/proc/self/mem"], ["cannot read the config file"]),
    ("set-value-nested-too-deep", lambda c: c.set("training.trainer_args.x=" + "[" * 100 + "]" * 100),
     ["--set 'training.trainer_args.x'", "nested more than 64 levels"]),
    ("negative-seed", lambda c: c.set("training.seed=-1"), ["training.seed must be in [0, 2**32)", "-1"]),
    ("seed-too-big", lambda c: c.set(f"training.seed={2 ** 32}"), ["training.seed must be in [0, 2**32)"]),
    ("output-dir-below-a-file", lambda c: (c.data("afile", "x"), c.set(f"output_dir={c.tmp / 'afile' / 'run'}"))[1],
     ["cannot be created", "afile", "is a file"]),
    ("output-dir-nul-byte", lambda c: (c.cfg.update(output_dir=str(c.out) + "\0x"), ["train", c.write()])[1],
     ["output_dir: a path cannot contain a NUL byte"]),
    ("output-dir-name-too-long", lambda c: c.set(f"output_dir={c.tmp / ('x' * 300)}"),
     ["output_dir: a file or folder name is longer than 255 bytes"]),
    ("batch-size-too-big", lambda c: c.set(f"training.batch_size={10 ** 20}"),
     ["training.batch_size must be below 2**63"]),
    # class 8: duplicate keys, long values
    ("config-duplicate-key-yaml", lambda c: ["train", c.data("dup.yaml", c.write().read_text()
                                                              + "training:\n  epochs: 2\n")],
     ["dup.yaml", "duplicate key 'training'", "line "]),
    ("config-duplicate-nested-key-yaml", lambda c: ["train", c.data("dup2.yaml", "task: text-classification\n"
                                                                   "training:\n  epochs: 1\n  epochs: 2\n")],
     ["dup2.yaml", "line 4: duplicate key 'epochs'"]),
    ("config-duplicate-key-json", _dup_json, ["dup.json", "duplicate key 'epochs'", "line "]),
    ("million-item-value-in-message", _huge_list_config, ["huge.json", "3 problems", "task must be a string", "training.batch_size must be an integer",
      "characters cut"]),
]


# parser limits (recursion, alias expansion, huge values) depend on the process: these
# run the real ``python -m tunesmith``; the others the same CLI in this process (cli_here),
# sparing 2-10 s of imports each
SUBPROCESS = {"config-nested-10k-deep", "config-json-nested-100k-deep", "config-yaml-alias-bomb",
              "set-value-nested-too-deep", "million-item-value-in-message"}


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_mistake_before_the_run_dir(case, tmp_path, tiny_bert, cli_here):
    name, build, expected = case
    ctx = Ctx(tmp_path, tiny_bert)
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = build(ctx)
    made = set(p.name for p in tmp_path.iterdir()) - set(before)   # the case's own input files
    if argv[0] == "train":
        argv = [*argv, "--quiet"]
    line = _one_error_line(run_cli(*argv, timeout=300) if name in SUBPROCESS else cli_here(*argv), *expected)
    assert len(line) < 1500, f"{len(line)} characters"
    assert not ctx.out.exists(), f"{ctx.out} was left behind"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, *made])
    _record(name, line)


def test_config_duplicate_key_json_names_the_second_line(tmp_path, tiny_bert):
    """The line is that of the second key of the same object, not a same-named nested key."""
    path = tmp_path / "c.json"
    path.write_text('{"task": "text-classification",\n "training": {"epochs": 1},\n'
                    ' "data": {"training": 1},\n "training": {"epochs": 2}}', encoding="utf-8")
    _one_error_line(run_cli("train", path), "line 4: duplicate key 'training'")


def test_yaml_merge_keys_may_still_be_overridden(tmp_path, tiny_bert):
    """``<<: *defaults`` then a key of its own is YAML's intent, not a duplicate."""
    ctx = Ctx(tmp_path, tiny_bert)
    text = ctx.write().read_text().replace("training:", "defaults: &d\n  epochs: 3\ntraining:\n  <<: *d")
    path = ctx.data("merge.yaml", text)
    # the merge is accepted; the only complaint is the extra top-level key
    _one_error_line(run_cli("train", path, "--quiet"), "unknown key 'defaults'")


# ----------------------------------------------------------------- after the run directory exists

def test_diverged_training_is_an_error_then_the_corrected_rerun_works(tmp_path, tiny_bert):
    """lr 1e30 drives the loss to NaN: one error line, the run says failed (no NaN in any
    file), and the same command with a sane learning rate replaces the failed run."""
    ctx = Ctx(tmp_path, tiny_bert)
    cfg = ctx.write()
    done = run_cli("train", cfg, *SMALL, "--set", "training.learning_rate=1e30")
    line = _one_error_line(done, "training diverged", "is nan", "learning_rate")
    assert done.stdout == ""
    assert json.loads((ctx.out / "tunesmith.json").read_text())["status"] == "failed"
    assert sorted(p.name for p in ctx.out.iterdir()) == ["tunesmith.json"]   # no NaN checkpoint or metrics
    _record("training-diverged-nan-loss", line)
    again = run_cli("train", cfg, "--set", "training.max_train_samples=8")   # progress bars on
    assert again.returncode == 0, again.stderr[-2000:]
    result = json.loads(again.stdout)   # stdout is one JSON document, even with the Trainer's logs
    assert result["run_dir"] == str(ctx.out) and "replacing the failed run" in again.stderr
    metrics = (ctx.out / "metrics.json").read_text()
    assert "NaN" not in metrics and "Infinity" not in metrics
    assert json.loads((ctx.out / "tunesmith.json").read_text())["status"] == "complete"


def _manifest_only_run(out: Path, status: str, pid: int) -> None:
    out.mkdir()
    (out / "tunesmith.json").write_text(json.dumps({"tunesmith_version": "0.1.0", "status": status,
                                                    "pid": pid, "host": socket.gethostname()}))


def test_a_dead_running_run_is_replaced_a_live_one_is_not(tmp_path, tiny_bert):
    """``status: running`` from a process that no longer exists (killed before its first
    checkpoint) is rerunnable; one whose process is alive is never touched."""
    ctx = Ctx(tmp_path, tiny_bert)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _manifest_only_run(ctx.out, "running", os.getpid())   # this test's own process: alive
    line = _one_error_line(run_cli("train", ctx.write(), *SMALL), "already exists", "--resume")
    assert sorted(p.name for p in ctx.out.iterdir()) == ["tunesmith.json"]
    _record("output-dir-of-a-live-run", line)
    (ctx.out / "tunesmith.json").unlink()
    ctx.out.rmdir()
    _manifest_only_run(ctx.out, "running", gone.pid)
    ok = run_cli("train", ctx.write(), *SMALL)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (ctx.out / "model").is_dir()


def test_failed_run_with_user_files_is_not_replaced(tmp_path, tiny_bert):
    ctx = Ctx(tmp_path, tiny_bert)
    _manifest_only_run(ctx.out, "failed", 1)
    (ctx.out / "notes.txt").write_text("mine")
    _one_error_line(run_cli("train", ctx.write(), *SMALL), "already exists")
    assert (ctx.out / "notes.txt").read_text() == "mine"


SLOW_STEP = """
import time, transformers
_orig = transformers.Trainer.training_step
def _slow(self, *a, **k):
    time.sleep(0.05)
    return _orig(self, *a, **k)
transformers.Trainer.training_step = _slow
"""


def test_resume_hint_works_from_another_directory(tmp_path, tiny_bert):
    """SIGTERM a run started with relative paths and --set overrides; the printed
    ``continue with:`` command, run from elsewhere, finishes THAT run (same overrides),
    and the stale ``.model-*`` folder of a killed save is cleaned up on the way."""
    proj = tmp_path / "proj"
    write_jsonl(proj / "train.jsonl", read_jsonl(SAMPLE / "train.jsonl", 48))
    write_jsonl(proj / "validation.jsonl", ROWS[:8])
    cfg = {"task": "text-classification", "model": str(tiny_bert), "output_dir": "run",
           "data": {"train": "train.jsonl", "validation": "validation.jsonl"},
           "training": {"epochs": 2, "batch_size": 4, "save_steps": 2}}
    (proj / "cfg.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_STEP, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith", "train", "cfg.yaml", "--quiet",
                             "--set", "training.seed=7", "--set", "training.learning_rate=2e-3"],
                            cwd=proj, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marker = proj / "run" / "checkpoints" / "checkpoint-2" / "tunesmith-checkpoint.json"
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline, "no checkpoint-2"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    (line,) = [x for x in err.splitlines() if x.startswith("tunesmith: stopped:")]
    command = shlex.split(line.split("continue with: ", 1)[1])
    assert command[0] == "tunesmith" and command[-1] == "--resume"
    manifest = json.loads((proj / "run" / "tunesmith.json").read_text())
    assert all(os.path.isabs(d["path"]) for d in manifest["data"].values())
    stale = proj / "run" / ".model-abc123"   # what a SIGKILL inside rundir.save leaves
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 100)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-m", "tunesmith", *command[1:], "--quiet"], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not stale.exists()
    final = json.loads((proj / "run" / "tunesmith.json").read_text())
    assert final["status"] == "complete" and "checkpoint-" in final["resumed_from"]
    assert final["config"]["training"]["seed"] == 7 and final["config"]["training"]["learning_rate"] == 2e-3
    assert not list(elsewhere.iterdir())   # nothing written where the command was run


# ----------------------------------------------------------------- a trained run: predict, serve, resume

@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert) -> Path:
    tmp = tmp_path_factory.mktemp("trained")
    ctx = Ctx(tmp, tiny_bert)
    done = run_cli("train", ctx.write(), *SMALL)
    assert done.returncode == 0, done.stderr[-2000:]
    return ctx.out


def _nan_copy(trained: Path, tmp: Path) -> Path:
    import shutil

    from safetensors.torch import load_file, save_file

    dst = tmp / "nan-run"
    shutil.copytree(trained, dst)
    weights = load_file(dst / "model" / "model.safetensors")
    for key in weights:
        if "classifier" in key:
            weights[key].fill_(float("nan"))
    save_file(weights, dst / "model" / "model.safetensors", metadata={"format": "pt"})
    return dst


# (id, argv(run, tmp), stdin, [substrings])
PREDICT_CASES = [
    ("predict-non-utf8-input", lambda r, t: ["predict", r, "--input", "-"], b'{"text": "fine"}\n"caf\xe9"\n',
     ["<stdin>:2", "not valid UTF-8", "0xe9"]),
    # "" is refused like {"text": ""} (tests/core/test_predict.py: "<file>:N: field 'text': empty text")
    ("predict-empty-string", lambda r, t: ["predict", r, "--input", "-"], b'{"text": "fine"}\n""\n',
     ["<stdin>:2", "empty text"]),
    ("predict-json-nested-100k-deep", lambda r, t: ["predict", r, "--input", "-"],
     b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", ["<stdin>:1", "nested too deeply"]),
    ("predict-million-item-text", lambda r, t: ["predict", r, "--input", "-"],
     json.dumps({"text": list(range(1_000_000))}).encode(), ["<stdin>:1", "field 'text'", "characters cut"]),
    ("predict-input-is-a-directory", lambda r, t: ["predict", r, "--input", t], b"", ["is a directory"]),
    ("predict-output-is-a-directory", lambda r, t: ["predict", r, "--input", "-", "--output", t],
     b'{"text": "fine"}\n', ["is a directory", "--output"]),
    ("predict-nan-weights", lambda r, t: ["predict", _nan_copy(r, t), "--input", "-"], b'{"text": "fine"}\n',
     ["non-finite score", "train the run again"]),
    ("evaluate-batch-size-zero", lambda r, t: ["evaluate", r, "--data", r / "nope.jsonl", "--batch-size", "0"], b"",
     ["--batch-size must be >= 1"]),
]


# the JSON parser's recursion limit is the process's: a real subprocess; and one plain case
PREDICT_SUBPROCESS = {"predict-json-nested-100k-deep", "predict-non-utf8-input"}


@pytest.mark.parametrize("case", PREDICT_CASES, ids=[c[0] for c in PREDICT_CASES])
def test_predict_mistakes(case, trained, tmp_path, cli_here):
    name, build, stdin, expected = case
    argv = [str(a) for a in build(trained, tmp_path)]
    argv += ["--quiet"] if argv[0] == "predict" else []
    if name in PREDICT_SUBPROCESS:
        done = subprocess.run([sys.executable, "-m", "tunesmith", *argv], input=stdin, capture_output=True, timeout=300)
        done.stderr, done.stdout = done.stderr.decode(), done.stdout.decode()
    else:
        done = cli_here(*argv, input=stdin)
    line = _one_error_line(done, *expected)
    assert len(line) < 1500, f"{len(line)} characters"
    assert "NaN" not in done.stdout
    for out in done.stdout.splitlines():   # whatever was printed before the error is valid JSON
        json.loads(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary output file was left"
    _record(name, line)


def test_a_run_whose_model_was_deleted(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    shutil.rmtree(run / "model")
    line = _one_error_line(run_cli("predict", run, "--input", "-", input="fine\n"),
                           "completed but its model/ folder is missing", "--overwrite")
    _record("predict-model-folder-deleted", line)
    line = _one_error_line(run_cli("train", run, "--resume", "--quiet"), "model/ folder is missing",
                           "nothing to resume")
    _record("resume-model-folder-deleted", line)
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in trained.iterdir() if p.name != "model")


def test_serve_on_a_busy_port_is_one_line(trained):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli("serve", trained, "--port", port, timeout=120)
    line = _one_error_line(done, f"cannot listen on 127.0.0.1:{port}", "in use")
    assert "serving" not in done.stderr
    _record("serve-port-busy", line)
