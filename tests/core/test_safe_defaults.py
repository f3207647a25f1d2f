"""Safe defaults: no remote code unless asked, no pickle in model/, checksums in the manifest."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_manifest_checksums_and_no_pickle_in_model(strategy, tiny_config, tiny_bert):
    from tunesmith import train

    tiny_config["strategy"] = {"name": strategy}
    tiny_config["training"]["max_train_samples"] = 16
    result = train(tiny_config, quiet=True)
    manifest = json.loads((result.run_dir / "tunesmith.json").read_text())
    assert manifest["trust_remote_code"] is False
    assert manifest["resumed_from"] is None
    weights = manifest["model"]["weights_sha256"]
    assert weights == {"model.safetensors": _sha(tiny_bert / "model.safetensors")}
    for key in ("train", "validation"):
        entry = manifest["data"][key]
        assert entry["sha256"] == hashlib.sha256(open(entry["path"], "rb").read()).hexdigest()
    files = [p for p in (result.run_dir / "model").rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    for p in files:
        head = p.read_bytes()[:2]
        # a pickle starts with the PROTO opcode 0x80; torch.save writes a zip of pickles
        assert head[:1] != b"\x80" and not zipfile.is_zipfile(p), f"pickle-like file in model/: {p.name}"
        assert p.suffix not in (".bin", ".pt", ".pth", ".pkl", ".ckpt"), p.name


def test_trust_remote_code_is_recorded_when_turned_on(tiny_config):
    from tunesmith.config import load_config

    assert load_config(tiny_config).trust_remote_code is False
    assert load_config({**tiny_config, "trust_remote_code": True}).trust_remote_code is True
