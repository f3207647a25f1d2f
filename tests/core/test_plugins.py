import json
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest

from tunesmith import PluginError, hookimpl, load_plugins
from tests.conftest import run_cli

BUILTIN_TASKS = {"text-classification"}
BUILTIN_STRATEGIES = {"full", "partial", "frozen", "lora"}


def _dist_plugin(root, dist, module, source, version="1.2.3"):
    """A real importable plugin distribution: module + dist-info with entry points."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[tunesmith]\n{module} = {module}\n")
    return root


def test_builtins_registered_by_tunesmith(plugins):
    reg = plugins.registry
    assert BUILTIN_TASKS <= set(reg.tasks) and BUILTIN_STRATEGIES <= set(reg.strategies)
    for entry in [*reg.tasks.values(), *reg.strategies.values()]:
        assert entry.distribution == "tunesmith" and entry.version == metadata.version("tunesmith")
    assert reg.task("classification") is reg.task("text-classification")
    assert {"package", "local", "hub"} <= set(reg.model_sources)
    assert set(reg.metrics_for("text-classification")) == {"accuracy", "f1"}


def test_plugins_json_cli_and_broken_plugin(tmp_path):
    root = _dist_plugin(tmp_path, "tunesmith-broken", "broken_plugin", "raise RuntimeError('boom at import')\n")
    proc = run_cli("plugins", "--json", env={"PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {t["name"] for t in data["tasks"]} >= BUILTIN_TASKS
    assert {s["name"] for s in data["strategies"]} >= BUILTIN_STRATEGIES
    assert all(s["distribution"] == "tunesmith" for s in data["strategies"])
    broken = next(p for p in data["plugins"] if p["name"] == "broken_plugin")
    assert broken["status"] == "failed" and broken["distribution"] == "tunesmith-broken"
    assert "RuntimeError: boom at import" in broken["error"]
    text = run_cli("plugins", env={"PYTHONPATH": str(root)})
    assert text.returncode == 0 and "broken_plugin" in text.stdout and "boom at import" in text.stdout


def test_third_party_plugin_is_discovered_with_its_version(tmp_path):
    root = _dist_plugin(tmp_path, "tunesmith-echo", "echo_plugin", """
        from dataclasses import dataclass
        from tunesmith import hookimpl

        @dataclass
        class Opts:
            pass

        class Echo:
            name = "echo-strategy"
            options = Opts
            default_learning_rate = 1e-3
            def apply(self, model, task, options):
                return model

        @hookimpl
        def register_strategies(register):
            register(Echo())
        """)
    data = json.loads(run_cli("plugins", "--json", env={"PYTHONPATH": str(root)}).stdout)
    echo = next(s for s in data["strategies"] if s["name"] == "echo-strategy")
    assert echo["distribution"] == "tunesmith-echo" and echo["version"] == "1.2.3"


def test_disable_plugins_by_env_and_flag(tmp_path):
    proc = run_cli("plugins", "--json", env={"TUNESMITH_DISABLE_PLUGINS": "strategies"})
    data = json.loads(proc.stdout)
    assert data["strategies"] == []
    assert next(p for p in data["plugins"] if p["name"] == "strategies")["status"] == "disabled"
    data = json.loads(run_cli("--disable-plugins", "classification", "plugins", "--json").stdout)
    assert "text-classification" not in [t["name"] for t in data["tasks"]] and data["strategies"]
    data = json.loads(run_cli("--plugins", "classification", "plugins", "--json").stdout)
    assert [t["name"] for t in data["tasks"]] == ["text-classification"] and data["strategies"] == []


class _Dup:
    name = "full"


def test_duplicate_names_name_both_plugins():
    plugins = load_plugins()

    class Other:
        @hookimpl
        def register_strategies(self, register):
            register(_Dup())

    plugins.add(Other(), "my-plugin", "tunesmith-mine", "0.1")
    with pytest.raises(PluginError) as err:
        plugins.registry
    assert "'my-plugin'" in str(err.value) and "'strategies'" in str(err.value) and "'full'" in str(err.value)


def test_plugin_raising_in_hook_is_named():
    plugins = load_plugins()

    class Bad:
        @hookimpl
        def register_tasks(self, register):
            raise KeyError("oops")

    plugins.add(Bad(), "bad-plugin")
    with pytest.raises(PluginError, match=r"plugin 'bad-plugin': raised in hook register_tasks: KeyError"):
        plugins.registry


def test_lifecycle_hooks_are_called_and_errors_name_the_plugin(capsys, monkeypatch):
    # the built-in terminal and card plugins implement these hooks too; the stand-in
    # arguments below are not a real Trainer and Run
    plugins = load_plugins(disable=["terminal", "card"])
    seen = []

    class Tracker:
        @hookimpl
        def configure_trainer(self, trainer, run):
            seen.append(("configure_trainer", trainer, run))

        @hookimpl
        def on_run_end(self, run, result):
            raise ValueError("tracker down")

    plugins.add(Tracker(), "tracker")
    monkeypatch.setenv("TUNESMITH_TRACE_PLUGINS", "1")
    plugins.call("configure_trainer", trainer="T", run="R")
    assert seen == [("configure_trainer", "T", "R")]
    assert "configure_trainer -> plugin 'tracker'" in capsys.readouterr().err
    with pytest.raises(PluginError, match="plugin 'tracker': raised in hook on_run_end: ValueError"):
        plugins.call("on_run_end", run="R", result=None)


def test_help_and_plugins_do_not_import_heavy_libraries():
    assert run_cli("--help").returncode == 0
    code = ("import sys, tunesmith.cli as c\n"
            "c.main(['plugins'])\n"
            "print([m for m in ('torch', 'transformers', 'evaluate', 'datasets') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def _api_plugin(root, module, spec):
    return _dist_plugin(root, f"tunesmith-{module}", module, f"""
        from dataclasses import dataclass
        from tunesmith import hookimpl

        TUNESMITH_PLUGIN_API = {spec!r}

        @dataclass
        class Opts:
            pass

        class S:
            name = "{module}-strategy"
            options = Opts
            default_learning_rate = 1e-3
            def apply(self, model, task, options):
                return model

        @hookimpl
        def register_strategies(register):
            register(S())
        """)


def test_plugin_api_version_is_checked(tmp_path):
    import tunesmith

    assert tunesmith.PLUGIN_API_VERSION == 2
    for module, spec in (("api_ok", ">=2,<3"), ("api_future", ">=3"), ("api_exact", 2), ("api_bad", "one")):
        (tmp_path / module).mkdir()
        _api_plugin(tmp_path / module, module, spec)
    path = ":".join(str(tmp_path / m) for m in ("api_ok", "api_future", "api_exact", "api_bad"))
    proc = run_cli("plugins", "--json", env={"PYTHONPATH": path})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    infos = {p["name"]: p for p in data["plugins"]}
    strategies = {s["name"] for s in data["strategies"]}
    assert infos["api_ok"]["status"] == "loaded" and "api_ok-strategy" in strategies
    assert infos["api_exact"]["status"] == "loaded" and "api_exact-strategy" in strategies
    future = infos["api_future"]
    assert future["status"] == "failed" and "api_future-strategy" not in strategies
    assert future["error"] == ("needs tunesmith plugin API >=3, but tunesmith 0.2.0 provides plugin API 2; "
                               "install a tunesmith or a plugin version that match")
    assert infos["api_bad"]["status"] == "failed"
    assert "TUNESMITH_PLUGIN_API = 'one' is not a version specifier" in infos["api_bad"]["error"]
    # everything else still works, and the text listing names the refused plugin
    assert {"full", "lora"} <= strategies
    text = run_cli("plugins", env={"PYTHONPATH": path}).stdout
    assert "api_future (tunesmith-api_future 1.2.3): failed: needs tunesmith plugin API >=3" in text


def test_in_process_plugin_with_incompatible_api_is_refused():
    import types

    plugins = load_plugins()
    old = types.ModuleType("old_plugin")
    old.TUNESMITH_PLUGIN_API = "<1"
    with pytest.raises(PluginError, match=r"plugin 'old_plugin': needs tunesmith plugin API <1, "
                                          r"but tunesmith .* provides plugin API 2"):
        plugins.add(old, "old_plugin")
    assert "old_plugin" not in plugins.infos


# ------------------------------------------------------------------ the explicit contract

def test_misspelt_member_of_a_real_task_fails_at_registration_naming_plugin_and_member():
    """A task that defines `check_inputs` (the old misspelling in question-answering) would
    have its input check silently ignored: registration refuses it with a did-you-mean."""
    from tunesmith.plugins.extractive_qa import QuestionAnswering

    class MyQA(QuestionAnswering):
        name, aliases = "my-qa", ()

        def check_inputs(self, row, options):   # the core reads check_input
            return self.check_input(row, options)

    class Plugin:
        @hookimpl
        def register_tasks(self, register):
            register(MyQA())

    plugins = load_plugins()
    plugins.add(Plugin(), "qa-fork")
    with pytest.raises(PluginError) as err:
        plugins.registry
    assert str(err.value) == ("plugin 'qa-fork': task 'my-qa' defines `check_inputs`; "
                              "did you mean `check_input`?")


def test_misspelt_member_of_strategy_and_options_fail_too():
    from tunesmith.plugins.strategies import Lora, LoraOptions

    class Opts(LoraOptions):
        def checks(self, problems):   # config calls options.check
            pass

    class MyLora(Lora):
        name, options = "my-lora", Opts

        def merge_models(self, model):
            return model

    for obj, expected in ((MyLora(), "strategy 'my-lora' defines `merge_models`; did you mean `merge_model`?"),):
        class Plugin:
            @hookimpl
            def register_strategies(self, register, _obj=obj):
                register(_obj)

        plugins = load_plugins()
        plugins.add(Plugin(), "lora-fork")
        with pytest.raises(PluginError, match="plugin 'lora-fork': ") as err:
            plugins.registry
        assert expected in str(err.value)
    MyLora.merge_models = None
    del MyLora.merge_models

    class Plugin2:
        @hookimpl
        def register_strategies(self, register):
            register(MyLora())

    plugins = load_plugins()
    plugins.add(Plugin2(), "lora-fork")
    with pytest.raises(PluginError) as err:
        plugins.registry
    assert "strategy 'my-lora''s options Opts defines `checks`; did you mean `check`?" in str(err.value)


def test_builtin_plugins_define_no_near_miss():
    from tunesmith.protocols import near_miss

    reg = load_plugins().registry
    for kind, table in (("task", reg.tasks), ("strategy", reg.strategies), ("model source", reg.model_sources)):
        for entry in table.values():
            assert near_miss(entry.obj, kind) is None, entry.name


def test_misspelt_hook_in_process_is_an_error_naming_the_plugin():
    class Typo:
        @hookimpl
        def register_task(self, register):   # the hook is register_tasks
            raise AssertionError("never called")

    plugins = load_plugins()
    with pytest.raises(PluginError) as err:
        plugins.add(Typo(), "typo-plugin")
    assert str(err.value).startswith("plugin 'typo-plugin': implements unknown hook 'register_task' "
                                     "(did you mean 'register_tasks'?)")
    assert not plugins.pm.has_plugin("typo-plugin")
    assert "text-classification" in plugins.registry.tasks   # the others still work


def test_misspelt_hook_of_an_installed_plugin_fails_its_load(tmp_path):
    """Discovered through its entry point: the plugin is reported failed with the reason
    (pm.check_pending), not loaded half-way and silently ignored."""
    root = _dist_plugin(tmp_path, "tunesmith-typo", "typo_plugin", """
        from tunesmith import hookimpl

        @hookimpl
        def register_strategy(register):
            raise AssertionError("never called")
    """)
    proc = run_cli("plugins", "--json", env={"PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
    typo = next(p for p in json.loads(proc.stdout)["plugins"] if p["name"] == "typo_plugin")
    assert typo["status"] == "failed"
    assert "implements unknown hook 'register_strategy' (did you mean 'register_strategies'?)" in typo["error"]


def test_registration_hooks_go_through_pluggy_and_name_each_plugin():
    """Registration is pm.hook-driven (a subset hook caller per plugin); a pluggy
    wrapper (wrapper=True) wraps each plugin's call, and each entry names its own plugin."""
    seen = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def register_strategies(self, register):
            seen.append("before")
            result = yield
            seen.append("after")
            return result

    class A:
        @hookimpl
        def register_strategies(self, register):
            from tunesmith.plugins.strategies import Full

            class Mine(Full):
                name, default = "mine-a", False
            register(Mine())

    plugins = load_plugins()
    plugins.add(Wrapper(), "wrapper")
    plugins.add(A(), "plugin-a")
    reg = plugins.registry
    assert reg.strategies["mine-a"].plugin == "plugin-a" and reg.strategies["full"].plugin == "strategies"
    # the wrapper wrapped each plugin's own call: the built-in strategies and plugin-a
    assert seen == ["before", "after"] * 2


def test_default_strategy_is_declared_by_the_strategy(tmp_path):
    reg = load_plugins().registry
    assert reg.default_strategy() == "full"
    from tunesmith.config import load_config

    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a", "label": 0}\n')
    cfg = load_config({"task": "classification", "model": "m", "output_dir": str(tmp_path / "o"),
                       "data": {"train": str(data), "validation": str(data)}}, registry=reg)
    assert cfg.strategy.name == "full" and cfg.to_dict()["strategy"]["name"] == "full"


def test_api1_trainer_class_signature_is_refused_naming_the_plugin():
    from tunesmith.plugins.classification import TextClassification

    class Old(TextClassification):
        name, aliases = "old-style", ()

        def trainer_class(self):   # API 1: no options, no modules
            import transformers
            return transformers.Trainer

    class Plugin:
        @hookimpl
        def register_tasks(self, register):
            register(Old())

    plugins = load_plugins()
    plugins.add(Plugin(), "old-plugin")
    with pytest.raises(PluginError, match=r"plugin 'old-plugin': task 'old-style': trainer_class must take "
                                          r"\(options, modules\) in tunesmith plugin API 2"):
        plugins.registry
