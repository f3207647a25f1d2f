"""Table-driven bad input: each case runs the tunesmith CLI and must give exit code 2,
exactly one line on stderr naming what and where, no traceback, and no run directory
left behind. docs/errors.md lists every case with its message. A few cases (SUBPROCESS)
run the REAL ``python -m tunesmith``; the others run the same ``tunesmith.cli.main`` in
this process, stderr read at the file descriptor (``cli_here``).

Two cases need to fail in the middle of a run (disk full while saving): they run the
same CLI entry point in-process (``tunesmith.cli.main``) with ``save_pretrained``
patched to raise ENOSPC, since a subprocess cannot be patched.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import SAMPLE, read_jsonl, run_cli, write_jsonl

ROWS = read_jsonl(SAMPLE / "train.jsonl", 24)


def _installed_tasks() -> set:
    from tunesmith import load_plugins

    reg = load_plugins().registry
    return {n for e in reg.tasks.values() for n in (e.name, *getattr(e.obj, "aliases", ()))}


TASKS = _installed_tasks()


class Ctx:
    """Builds a config + data in a temp folder; a case mutates what it needs."""

    def __init__(self, tmp: Path, model: Path):
        self.tmp, self.model = tmp, model
        self.train = write_jsonl(tmp / "train.jsonl", ROWS)
        self.validation = write_jsonl(tmp / "validation.jsonl", ROWS[:8])
        self.out = tmp / "run"
        self.cfg = {"task": "text-classification", "model": str(model), "output_dir": str(self.out),
                    "data": {"train": str(self.train), "validation": str(self.validation)},
                    "training": {"epochs": 1, "batch_size": 8}}
        self.config_path = tmp / "config.yaml"

    def write(self, cfg=None, name="config.yaml") -> Path:
        path = self.tmp / name
        path.write_text(yaml.safe_dump(cfg if cfg is not None else self.cfg), encoding="utf-8")
        return path

    def data(self, name: str, content) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, list):
            write_jsonl(path, content)
        else:
            path.write_text(content, encoding="utf-8")
        return str(path)

    def train_with(self, content, name="bad.jsonl"):
        self.cfg["data"]["train"] = self.data(name, content)
        return ["train", self.write()]

    def validation_with(self, content, name="bad-val.jsonl"):
        self.cfg["data"]["validation"] = self.data(name, content)
        return ["train", self.write()]

    def set(self, *pairs):
        return ["train", self.write(), *[a for p in pairs for a in ("--set", p)]]


def _truncated_copy(c) -> Path:
    """The tiny model with its weights cut off after 3000 bytes (an interrupted download)."""
    import shutil

    dst = c.tmp / "trunc"
    shutil.copytree(c.model, dst)
    data = (c.model / "model.safetensors").read_bytes()
    (dst / "model.safetensors").write_bytes(data[:3000])
    return dst


def row(**kw):
    return {"text": "a fine film", "label": 1, **kw}


def _good_rows():
    return [json.dumps(r) for r in ROWS[:6]]


# (id, build(ctx) -> argv, [substrings of the one stderr line], required task or None)
CASES = [
    # ------------------------------------------------------------------ data rows
    ("malformed-json-line", lambda c: c.train_with("\n".join(_good_rows()[:2] + ['{"text": "x", "label": ']) + "\n"),
     ["bad.jsonl:3", "malformed JSON"], None),
    ("json-line-not-object", lambda c: c.train_with("\n".join(_good_rows()[:1] + ['["a", 1]']) + "\n"),
     ["bad.jsonl:2", "expected a JSON object"], None),
    ("missing-text-column", lambda c: c.train_with(ROWS[:3] + [{"sentence": "x", "label": 0}]),
     ["bad.jsonl:4", "field 'text'", "missing column 'text'"], None),
    ("missing-label-column", lambda c: c.train_with(ROWS[:2] + [{"text": "x"}]),
     ["bad.jsonl:3", "field 'label'", "missing column"], None),
    ("text-wrong-type", lambda c: c.train_with(ROWS[:2] + [row(text=42)]),
     ["bad.jsonl:3", "field 'text'", "expected text"], None),
    ("label-float", lambda c: c.train_with(ROWS[:2] + [row(label=1.5)]),
     ["bad.jsonl:3", "field 'label'", "label must be an int or a string"], None),
    ("label-object", lambda c: c.train_with(ROWS[:2] + [row(label={"a": 1})]),
     ["bad.jsonl:3", "field 'label'"], None),
    ("label-list-single-label-task", lambda c: c.train_with(ROWS[:2] + [row(label=[0, 1])]),
     ["bad.jsonl", "field 'label'", "mixes single labels and lists of labels"], None),
    ("empty-file", lambda c: c.train_with(""), ["bad.jsonl", "no rows"], None),
    ("whitespace-only-file", lambda c: c.train_with("\n  \n\n"), ["bad.jsonl", "no rows"], None),
    ("empty-text", lambda c: c.train_with(ROWS[:4] + [row(text="")]),
     ["bad.jsonl:5", "field 'text'", "empty text"], None),
    ("blank-text", lambda c: c.train_with(ROWS[:4] + [row(text="   ")]),
     ["bad.jsonl:5", "field 'text'", "empty text"], None),
    ("unseen-label-in-validation", lambda c: c.validation_with(ROWS[:3] + [row(label=7)]),
     ["bad-val.jsonl:4", "field 'label'", "does not occur in the training data"], None),
    ("non-utf8-bytes", lambda c: c.train_with(b'{"text": "ok", "label": 0}\n{"text": "caf\xe9", "label": 1}\n'),
     ["bad.jsonl:2", "not valid UTF-8"], None),
    ("one-megabyte-text", lambda c: c.train_with(ROWS[:2] + [row(text="word " * 210_000)]),
     ["bad.jsonl:3", "field 'text'", "exceeds the limit"], None),
    ("one-class-only", lambda c: c.train_with([row(label="pos")] * 5),
     ["bad.jsonl", "field 'label'", "at least 2 classes"], None),
    ("mixed-int-and-string-labels", lambda c: c.train_with([row(label=1), row(label="pos"), row(label=0)]),
     ["bad.jsonl", "field 'label'", "mixes integer and string labels"], None),
    ("negative-label", lambda c: c.train_with([row(label=-1), row(label=0), row(label=1)]),
     ["bad.jsonl", "field 'label'", ">= 0"], None),
    ("csv-ragged-rows", lambda c: c.train_with("text,label\na fine film,1\na bad film,0,extra\n", "bad.csv"),
     ["bad.csv:3", "row has 3 fields, the header has 2"], None),
    ("csv-missing-column", lambda c: c.train_with("sentence,label\na fine film,1\n", "bad.csv"),
     ["bad.csv:2", "field 'text'", "missing column"], None),
    ("json-array-non-object", lambda c: c.train_with('[{"text": "a", "label": 0}, 3]', "bad.json"),
     ["bad.json", "item 2 is not a JSON object"], None),
    ("json-array-invalid", lambda c: c.train_with('[{"text": "a", "label": 0},\n  oops]', "bad.json"),
     ["bad.json:2", "invalid JSON"], None),
    ("unsupported-file-type", lambda c: c.train_with("text label\n", "bad.txt"),
     ["bad.txt", "unsupported file type '.txt'"], None),
    ("tsv-header-only", lambda c: c.train_with("text\tlabel\n", "bad.tsv"), ["bad.tsv", "no rows"], None),
    ("data-file-not-found", lambda c: c.set("data.train=" + str(c.tmp / "nope.jsonl")),
     ["data.train", "file not found", "nope.jsonl"], None),
    ("qa-answer-start-mismatch", lambda c: (c.cfg.update(task="question-answering"), c.train_with([
        {"id": "1", "question": "Who?", "context": "Alice met Bob.",
         "answers": {"text": ["Bob"], "answer_start": [0]}}]))[1],
     ["bad.jsonl:1", "answer_start", "does not point at the answer"], "question-answering"),
    ("translation-empty-target", lambda c: (c.cfg.update(task="translation"), c.train_with([
        {"source": "A girl.", "target": "Ein Mädchen."}, {"source": "A boy.", "target": ""}]))[1],
     ["bad.jsonl:2", "field 'target'", "empty text"], "translation"),
    # ------------------------------------------------------------------ configuration
    ("config-not-found", lambda c: ["train", c.tmp / "missing.yaml"], ["config file not found"], None),
    ("config-invalid-yaml", lambda c: ["train", c.data("bad.yaml", "task: [unclosed\nmodel: x\n")],
     ["bad.yaml", "invalid YAML"], None),
    ("config-invalid-json", lambda c: ["train", c.data("bad-config.json", '{"task": "x",}')],
     ["bad-config.json", "line 1", "invalid JSON"], None),
    ("config-top-level-list", lambda c: ["train", c.data("list.yaml", "- a\n- b\n")],
     ["list.yaml", "the top level must be a mapping"], None),
    ("unknown-config-key", lambda c: (c.cfg.update(epochs=3), ["train", c.write()])[1],
     ["config.yaml", "unknown key 'epochs'"], None),
    ("unknown-training-key", lambda c: c.set("training.learning_rat=1e-4"),
     ["unknown key 'training.learning_rat'", "did you mean 'learning_rate'"], None),
    ("unknown-data-option", lambda c: c.set("data.text_colum=sentence"),
     ["unknown key 'data.text_colum'", "text_column"], None),
    ("unknown-strategy-option", lambda c: c.set("strategy.name=lora", "strategy.rank=8"),
     ["unknown key 'strategy.rank'"], None),
    ("wrong-value-type", lambda c: c.set("training.batch_size=sixteen"),
     ["training.batch_size must be an integer", "sixteen"], None),
    ("wrong-bool-type", lambda c: c.set("trust_remote_code=maybe"),
     ["trust_remote_code must be true or false"], None),
    ("negative-learning-rate", lambda c: c.set("training.learning_rate=-0.001"),
     ["training.learning_rate must be > 0"], None),
    ("zero-epochs", lambda c: c.set("training.epochs=0"), ["training.epochs must be > 0"], None),
    ("warmup-ratio-out-of-range", lambda c: c.set("training.warmup_ratio=1.5"),
     ["training.warmup_ratio must be in [0, 1)"], None),
    ("negative-save-steps", lambda c: c.set("training.save_steps=-5"), ["training.save_steps must be > 0"], None),
    ("set-without-equals", lambda c: c.set("training.epochs"), ["--set 'training.epochs'", "dotted.key=value"], None),
    ("missing-model", lambda c: (c.cfg.pop("model"), ["train", c.write()])[1], ["'model' is required"], None),
    ("missing-validation", lambda c: (c.cfg["data"].pop("validation"), ["train", c.write()])[1],
     ["'data.validation' is required"], None),
    ("unknown-task", lambda c: c.set("task=classifcation"),
     ["unknown task 'classifcation'", "did you mean", "available:", "'text-classification'"], None),
    ("unknown-strategy", lambda c: c.set("strategy.name=qlora"),
     ["unknown strategy 'qlora'", "available:", "'full'", "'lora'"], None),
    # ------------------------------------------------------------------ models and strategies
    ("model-path-missing", lambda c: c.set(f"model={c.tmp / 'no-such-model'}"),
     ["model folder", "does not exist"], None),
    ("model-path-not-a-model", lambda c: c.set(f"model={c.tmp}"), ["is not a model folder", "config.json"], None),
    ("model-config-corrupt", lambda c: (c.data("junk/config.json", "{not json"), c.set(f"model={c.tmp / 'junk'}"))[1],
     ["junk", "cannot load"], None),
    ("model-weights-truncated", lambda c: c.set(f"model={_truncated_copy(c)}"),
     ["cannot load model", "trunc", "SafetensorError"], None),
    ("model-package-missing", lambda c: c.set("model=package:no-such-model-pkg"),
     ["no installed Python package 'no-such-model-pkg'"], None),
    ("partial-more-layers-than-model", lambda c: c.set("strategy.name=partial", "strategy.layers=5"),
     ["strategy.layers=5", "has only 2 layers"], None),
    # ------------------------------------------------------------------ run directory
    ("output-dir-is-a-file", lambda c: (c.data("run", "x"), ["train", c.write()])[1],
     ["output_dir", "already exists", "choose another"], None),
    ("overwrite-foreign-dir", lambda c: (c.out.mkdir(), (c.out / "notes.txt").write_text("mine"),
                                         ["train", c.write(), "--overwrite"])[2],
     ["not a tunesmith run directory", "nothing was deleted"], None),
    ("overwrite-a-file", lambda c: (c.data("run", "x"), ["train", c.write(), "--overwrite"])[1],
     ["is not a directory"], None),
    ("run-dir-without-resume", lambda c: (c.out.mkdir(), (c.out / "tunesmith.json").write_text("{}"),
                                          ["train", c.out])[2], ["is a directory", "--resume"], None),
    ("resume-foreign-dir", lambda c: (c.out.mkdir(), (c.out / "notes.txt").write_text("mine"),
                                      ["train", c.write(), "--resume"])[2],
     ["is not a tunesmith run directory"], None),
    ("resume-corrupt-manifest", lambda c: (c.out.mkdir(), (c.out / "tunesmith.json").write_text("{oops"),
                                           ["train", c.out, "--resume"])[2], ["corrupt manifest"], None),
    # ------------------------------------------------------------------ other commands
    ("evaluate-not-a-run-dir", lambda c: ["evaluate", c.tmp, "--data", c.validation],
     ["is not a tunesmith run directory"], None),
    ("predict-run-dir-missing", lambda c: (c.out.mkdir(), ["predict", c.tmp / "nope", "--input", c.tmp / "x.jsonl"])[1],
     ["not a tunesmith run directory"], None),
]

# cases whose setup creates the output path on purpose: it must be left exactly as it was
KEEPS_OUTPUT = {"output-dir-is-a-file", "overwrite-foreign-dir", "overwrite-a-file", "run-dir-without-resume", "resume-foreign-dir",
                "resume-corrupt-manifest", "predict-run-dir-missing"}


# these go through a real ``python -m tunesmith`` subprocess, one per kind of mistake
# (data row, config, model, run directory); the rest run the same CLI in this process
# (cli_here), which spares ~2 s of imports per case
SUBPROCESS = {"malformed-json-line", "non-utf8-bytes", "unknown-config-key", "model-weights-truncated",
              "predict-run-dir-missing"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_cli(case, tmp_path, tiny_bert, cli_here):
    name, build, expected, task = case
    if task and task not in TASKS:
        pytest.skip(f"task {task!r} is not installed in this checkout")
    ctx = Ctx(tmp_path, tiny_bert)
    argv = build(ctx)
    before = sorted(p.name for p in ctx.out.iterdir()) if ctx.out.is_dir() else ctx.out.exists()
    if argv[0] == "train":
        argv = [*argv, "--quiet"]   # --quiet: no progress bars or library load reports on stderr
    done = run_cli(*argv, timeout=300) if name in SUBPROCESS else cli_here(*argv)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("tunesmith: error: ")
    for part in expected:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    if name in KEEPS_OUTPUT:
        after = sorted(p.name for p in ctx.out.iterdir()) if ctx.out.is_dir() else ctx.out.exists()
        assert after == before
    else:
        assert not ctx.out.exists(), f"{ctx.out} was left behind"
    _record(name, lines[0])


def test_output_dir_exists_refused_then_overwrite(tmp_path, tiny_bert, cli_here):
    ctx = Ctx(tmp_path, tiny_bert)
    ctx.out.mkdir()   # a run directory tunesmith made (its manifest says so) with a stale file
    (ctx.out / "tunesmith.json").write_text('{"tunesmith_version": "0.1.0", "status": "failed"}')
    (ctx.out / "keep.txt").write_text("precious")
    done = cli_here("train", ctx.write(), "--quiet", "--set", "training.max_train_samples=8")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "already exists" in line and "--overwrite" in line
    assert (ctx.out / "keep.txt").read_text() == "precious"
    _record("output-dir-exists", line)
    ok = cli_here("train", ctx.write(), "--quiet", "--overwrite", "--set", "training.max_train_samples=8")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert not (ctx.out / "keep.txt").exists() and (ctx.out / "model").is_dir()
    # --quiet: stdout is the one JSON result (no Trainer log dicts), fit for a pipe into jq
    assert json.loads(ok.stdout)["run_dir"] == str(ctx.out), ok.stdout[:500]
    assert "Saving the dataset" not in ok.stderr and "Training" not in ok.stderr, ok.stderr[-2000:]


def _patch_save(monkeypatch, only_final: bool):
    """save_pretrained writes a partial file, then the disk is 'full'."""
    from transformers import PreTrainedModel

    real = PreTrainedModel.save_pretrained

    def full(self, save_directory, *a, **k):
        if only_final and not Path(save_directory).name.startswith(".model-"):
            return real(self, save_directory, *a, **k)
        Path(save_directory, "model.safetensors").write_bytes(b"\x00" * 64)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)


@pytest.mark.parametrize("where", ["final-model", "checkpoint"])
def test_disk_full_while_saving(where, tmp_path, tiny_bert, monkeypatch, capsys):
    from tunesmith import cli

    _patch_save(monkeypatch, only_final=where == "final-model")
    ctx = Ctx(tmp_path, tiny_bert)
    code = cli.main(["train", str(ctx.write()), "--quiet", "--set", "training.max_train_samples=8"])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("tunesmith:")]
    assert code == 2 and "Traceback" not in err
    assert len(lines) == 1 and "No space left on device" in lines[0]
    assert str(ctx.out) in lines[0]
    assert not (ctx.out / "model").exists()
    assert not list(ctx.out.glob(".model-*")), "a half-written model folder was left"
    status = json.loads((ctx.out / "tunesmith.json").read_text())["status"]
    assert status == "failed"   # any error after the run directory exists (issue 16)
    _record(f"disk-full-{where}", lines[0])


PLUGIN = '''
from tunesmith import hookimpl

@hookimpl
def configure_trainer(trainer, run):
    raise RuntimeError("boom from the plugin")
'''


def test_plugin_raising_in_hook_is_named(tmp_path, tiny_bert):
    """A real installed plugin (a dist-info on PYTHONPATH with an entry point) that raises."""
    site = tmp_path / "site"
    (site / "broken_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "broken_plugin.py").write_text(PLUGIN)
    (site / "broken_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (site / "broken_plugin-0.1.dist-info" / "entry_points.txt").write_text("[tunesmith]\nbroken = broken_plugin\n")
    ctx = Ctx(tmp_path, tiny_bert)
    done = run_cli("train", ctx.write(), "--quiet", "--set", "training.max_train_samples=8",
                   env={"PYTHONPATH": str(site)})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(lines) == 1 and "plugin 'broken'" in lines[0] and "configure_trainer" in lines[0]
    assert "boom from the plugin" in lines[0]
    _record("plugin-raises-in-hook", lines[0])


def test_debug_shows_traceback(tmp_path, tiny_bert):
    ctx = Ctx(tmp_path, tiny_bert)
    done = run_cli("--debug", *ctx.set("training.epochs=0"))
    assert done.returncode != 0 and "Traceback" in done.stderr and "ConfigError" in done.stderr


def test_unexpected_error_is_one_line_unless_debug(tmp_path, monkeypatch, capsys):
    """A genuine bug is not dressed up as a user error: exit 1, says 'internal error'."""
    from tunesmith import cli

    def bug(args, plugins):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "cmd_plugins", bug)
    assert cli.main(["plugins"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("tunesmith: internal error: ZeroDivisionError") and "--debug" in line
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "plugins"])


# messages seen, written for docs/errors.md when TUNESMITH_ERRORS_TABLE is set
def _record(name: str, line: str) -> None:
    import os

    out = os.environ.get("TUNESMITH_ERRORS_TABLE")
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps({"case": name, "message": line}) + "\n")


def test_at_least_40_cases():
    assert len(CASES) + 4 >= 40   # + exists/overwrite, 2 x disk full, plugin hook
    assert len({c[0] for c in CASES}) == len(CASES)
