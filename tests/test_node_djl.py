"""The local node's DJL engine cache: libtorch and its JNI laid out where DJL's LibUtils looks,
so ml-commons deploys a local model without network (no node, no Maven: jars made here)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from osreco.errors import NodeError
from osreco.node import LocalNode, NodeConfig, _engine_cache_dir


def _jar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _home(tmp_path: Path, djl: str = "0.31.1", pytorch: str = "2.5.1") -> Path:
    home = tmp_path / "opensearch"
    _jar(home / "plugins" / "opensearch-ml" / f"pytorch-engine-{djl}.jar",
         {"pytorch-engine.properties": f"djl_version={djl}\npytorch_version={pytorch}\n"})
    return home


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="DJL's libtorch is supplied for x86-64 Linux")
def test_libtorch_and_jni_are_laid_out_for_djl(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    _jar(cache / "downloads" / "pytorch-native-cpu-2.5.1-linux-x86_64.jar",
         {"pytorch/cpu/linux-x86_64/libtorch.so": b"T", "pytorch/cpu/linux-x86_64/libc10.so": b"C",
          "native/lib/pytorch.properties": b"version=2.5.1"})
    _jar(cache / "downloads" / "pytorch-jni-2.5.1-0.32.0.jar",
         {"jnilib/linux-x86_64/cpu/libdjl_torch.so": b"J", "jnilib/linux-x86_64/cpu-precxx11/libdjl_torch.so": b"P"})
    monkeypatch.setattr(LocalNode, "_mvn_copy", staticmethod(lambda *a: pytest.fail("cached jars re-fetched")))
    node = LocalNode(NodeConfig(cache_dir=cache, name="djl"))
    root = node.djl_engine_cache(_home(tmp_path))
    assert root == cache / "djl"
    target = root / "pytorch" / "2.5.1-cpu-precxx11-linux-x86_64"
    assert (target / "libtorch.so").read_bytes() == b"T" and (target / "libc10.so").read_bytes() == b"C"
    assert (target / "0.31.1-libdjl_torch.so").read_bytes() == b"J"  # the cxx11 JNI, matching the libtorch
    assert (root / "pytorch" / "2.5.1-cpu-linux-x86_64").resolve() == target.resolve()
    assert json.loads((target / ".osreco-complete").read_text())["djl"] == "0.31.1"
    (tmp_path / "data").mkdir()
    engine = _engine_cache_dir(tmp_path / "data", root)  # per node, writable, links the shared libtorch
    assert (engine / "pytorch" / "2.5.1-cpu-precxx11-linux-x86_64" / "libtorch.so").read_bytes() == b"T"
    assert _engine_cache_dir(tmp_path / "data", root) == engine  # idempotent across restarts


def test_unknown_djl_version_or_no_ml_plugin_supplies_nothing(tmp_path):
    node = LocalNode(NodeConfig(cache_dir=tmp_path / "cache"))
    assert node.djl_engine_cache(_home(tmp_path, djl="0.99.0")) is None
    assert node.djl_engine_cache(tmp_path / "no-such-home") is None


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="DJL's libtorch is supplied for x86-64 Linux")
def test_a_broken_download_is_one_clear_error(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(LocalNode, "_mvn_copy", staticmethod(lambda coord, out: None))  # leaves nothing
    with pytest.raises(NodeError, match="pytorch-native-cpu") as e:
        LocalNode(NodeConfig(cache_dir=cache)).djl_engine_cache(_home(tmp_path))
    assert "--plugins" in e.value.fix
