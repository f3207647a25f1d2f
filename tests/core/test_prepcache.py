"""The preprocessing cache (core/prepcache.py): an encoded split is reused across runs,
and its key changes with everything the encoding depends on."""

from __future__ import annotations


def test_preprocessing_is_cached_across_runs(tiny_bert, sst2_small, tmp_path, monkeypatch, plugins):
    from tunesmith import data, prepcache
    from tunesmith.config import load_config
    from tunesmith.runner import load_tokenizer

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    cfg = load_config({"task": "classification", "model": str(tiny_bert), "output_dir": str(tmp_path / "r"),
                       "data": {"train": str(sst2_small["train"]), "validation": str(sst2_small["validation"])}},
                      registry=plugins.registry)
    task, tok = plugins.registry.task("classification"), load_tokenizer(str(tiny_bert), False)
    split = data.load_split(str(sst2_small["train"]), "train")
    state = task.setup(split.dataset, cfg.task_options)
    calls = []
    real = task.encode_batch
    monkeypatch.setattr(task, "encode_batch", lambda *a, **k: calls.append(1) or real(*a, **k))

    def encode(ds, opts):
        key = prepcache.key(task, ds, tok, state, opts, True)
        return data.encode(ds, task, tok, state, opts, train=True, cache_key=key)

    first = encode(split.dataset, cfg.task_options)
    second = encode(split.dataset, cfg.task_options)
    assert len(calls) == 1 and second.to_dict() == first.to_dict()
    assert len(list((tmp_path / "cache" / "preprocessed").glob("*/*.arrow"))) == 1
    again = data.load_split(str(sst2_small["train"]), "train")   # loaded anew: the same fingerprint
    encode(again.dataset, cfg.task_options)
    assert len(calls) == 1
    cfg.task_options.max_length = 8   # a different setting is a different entry
    short = encode(split.dataset, cfg.task_options)
    assert len(calls) == 2 and max(short["length"]) == 8
    encode(split.dataset.select(range(10)), cfg.task_options)   # different data too
    assert len(calls) == 3
    monkeypatch.setenv("TUNESMITH_CACHE", "off")
    encode(split.dataset, cfg.task_options)
    assert len(calls) == 4


class _Data:
    _fingerprint = "0123abcd"


def test_an_edited_task_module_gets_a_new_cache_key(tmp_path, monkeypatch):
    """The plugin version string rarely changes while its encode_batch() does: the key also
    covers the module's source, so a developer never trains on stale features."""
    import importlib

    from tunesmith import prepcache

    module = tmp_path / "edited_task.py"
    module.write_text("class Task:\n    name = 'edited'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = prepcache.key(importlib.import_module("edited_task").Task(), _Data(), "tok", {}, {}, True)
    module.write_text("class Task:\n    name = 'edited'  # encode changed\n")
    second = prepcache.key(importlib.import_module("edited_task").Task(), _Data(), "tok", {}, {}, True)
    assert first is not None and first != second
    again = prepcache.key(importlib.import_module("edited_task").Task(), _Data(), "tok", {}, {}, True)
    assert again == second


def test_tunesmith_cache_has_one_meaning(tmp_path, monkeypatch):
    """TUNESMITH_CACHE is the root of every cache; `off` turns off the optional one (the
    preprocessing cache) while a converted GGUF model still goes under the default root,
    never into a folder named ./off."""
    from tunesmith import prepcache
    from tunesmith.plugins import model_sources
    from tunesmith.util import cache_root

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TUNESMITH_CACHE", raising=False)
    assert cache_root() == cache_root(optional=False) == tmp_path / "xdg" / "tunesmith"
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "mine"))
    assert model_sources._cache_root() == tmp_path / "mine"
    assert prepcache.cache_file("ab" * 32) == tmp_path / "mine" / "preprocessed" / "ab" / f"{'ab' * 32}.arrow"
    monkeypatch.setenv("TUNESMITH_CACHE", "off")
    assert prepcache.cache_file("ab" * 32) is None
    assert model_sources._cache_root() == tmp_path / "xdg" / "tunesmith"
