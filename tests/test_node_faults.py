"""Faults of the local node manager: each gives one clear line naming the cause and the fix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from osreco.errors import NodeError
from osreco.node import LocalNode, NodeConfig, default_cache_dir


def _run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "osreco.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_no_java_names_cause_and_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on PATH
    node = LocalNode(NodeConfig(cache_dir=tmp_path, jvm_root=tmp_path / "none"))
    with pytest.raises(NodeError) as e:
        node.resolve_runtime()
    assert "no Java found" in str(e.value) and "JAVA_HOME" in e.value.fix


def test_too_old_java_for_requested_3x(tmp_path, monkeypatch):
    """A JDK home whose ``java -version`` answers 17 (the real one where installed, else a
    stand-in script that prints what JDK 17 prints): never skipped."""
    jdk17 = Path("/usr/lib/jvm/java-17-openjdk-amd64")
    if not jdk17.exists():
        jdk17 = tmp_path / "jdk17"
        (jdk17 / "bin").mkdir(parents=True)
        java = jdk17 / "bin" / "java"
        java.write_text('#!/bin/sh\necho \'openjdk version "17.0.12" 2024-07-16\' >&2\n')
        java.chmod(0o755)
    node = LocalNode(NodeConfig(cache_dir=tmp_path, version="3.6.0", java_home=jdk17))
    with pytest.raises(NodeError, match=r"needs Java 21\+"):
        node.resolve_runtime()


def test_prefers_3x_on_java21_plus():
    version, home = LocalNode(NodeConfig()).resolve_runtime()
    assert version.startswith("3.")


def test_no_maven_on_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    node = LocalNode(NodeConfig(cache_dir=tmp_path, plugins=()))
    with pytest.raises(NodeError) as e:
        node.fetch("3.6.0")
    assert "Maven (mvn) is not on PATH" in str(e.value) and "OPENSEARCH_URL" in e.value.fix


def test_failed_download_names_the_artifact(tmp_path):
    node = LocalNode(NodeConfig(cache_dir=tmp_path, plugins=()))
    with pytest.raises(NodeError) as e:
        node.fetch("0.0.1")
    assert "org.opensearch.distribution.integ-test-zip:opensearch:0.0.1:zip" in str(e.value)


def test_corrupt_cached_zip_is_fetched_again(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "opensearch-knn-3.6.0.0.zip").write_bytes(b"not a zip, truncated download")
    node = LocalNode(NodeConfig(cache_dir=tmp_path, plugins=()))
    paths = node.fetch("3.6.0")
    with zipfile.ZipFile(paths["knn"]) as zf:
        assert any(n.endswith(".jar") for n in zf.namelist())


def test_port_in_use_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        node = LocalNode(NodeConfig(cache_dir=tmp_path, port=port, plugins=()))
        with pytest.raises(NodeError, match=f"port {port} is already in use"):
            node.start()


def test_bad_settings_are_refused_when_built():
    with pytest.raises(NodeError, match="heap"):
        NodeConfig(heap="lots")
    with pytest.raises(NodeError, match="unknown plugin"):
        NodeConfig(plugins=("faiss-magic",))


def test_stop_when_not_running_says_so_and_exits_0(tmp_path):
    proc = _run_cli("opensearch", "stop", env={"OSRECO_CACHE": str(tmp_path)})
    assert proc.returncode == 0 and proc.stdout.strip() == "not running"


@pytest.mark.integration
def test_node_dying_during_start_prints_log_tail(opensearch_url):
    # Same cached install as the shared node, its own data dir; a 1 MiB heap kills the JVM.
    node = LocalNode(NodeConfig(cache_dir=default_cache_dir(), name="dies", heap="1m",
                                start_timeout_s=120))
    with pytest.raises(NodeError) as e:
        node.start()
    assert "exited with code" in str(e.value)
    assert "heap" in e.value.log_tail.lower()
    assert node.state() is None


def _cache_with_a_used_node(root: Path, name: str = "node") -> Path:
    """A cache that looks used: downloads, an install, and a node folder with data and logs."""
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / "opensearch-3.6.0.zip").write_bytes(b"zip")
    (root / "opensearch-3.6.0").mkdir()
    (root / "opensearch-3.6.0" / ".osreco-install.json").write_text("{}")
    (root / name / "data" / "nodes" / "0").mkdir(parents=True)
    (root / name / "data" / "nodes" / "0" / "leftover-index").write_text("old state")
    (root / name / "logs").mkdir()
    (root / name / "logs" / "stdout.log").write_text("old log")
    return root / name / "data"


def test_fresh_start_empties_only_the_nodes_data(tmp_path):
    data = _cache_with_a_used_node(tmp_path)
    got_data, logs = LocalNode(NodeConfig(cache_dir=tmp_path, fresh=True)).prepare_dirs()
    assert (got_data, logs) == (data, tmp_path / "node" / "logs")
    assert data.is_dir() and list(data.iterdir()) == []
    assert (tmp_path / "downloads" / "opensearch-3.6.0.zip").read_bytes() == b"zip"
    assert (tmp_path / "opensearch-3.6.0" / ".osreco-install.json").exists()
    assert (logs / "stdout.log").read_text() == "old log"
    assert (tmp_path / "node" / "tmp").is_dir()


def test_fresh_start_of_a_named_node_leaves_the_default_nodes_data(tmp_path):
    default_data = _cache_with_a_used_node(tmp_path)
    (tmp_path / "node-ci" / "data").mkdir(parents=True)
    (tmp_path / "node-ci" / "data" / "old").write_text("x")
    data, _ = LocalNode(NodeConfig(cache_dir=tmp_path, name="ci", fresh=True)).prepare_dirs()
    assert data == tmp_path / "node-ci" / "data" and list(data.iterdir()) == []
    assert (default_data / "nodes" / "0" / "leftover-index").exists()


def test_without_fresh_the_data_is_kept(tmp_path):
    data = _cache_with_a_used_node(tmp_path)
    LocalNode(NodeConfig(cache_dir=tmp_path)).prepare_dirs()
    assert (data / "nodes" / "0" / "leftover-index").read_text() == "old state"


def test_fresh_refuses_to_empty_the_data_of_a_running_node(tmp_path):
    data = _cache_with_a_used_node(tmp_path)
    # This test process stands in for the node: its pid is alive, so the state reads as running.
    (tmp_path / "node" / "state.json").write_text(json.dumps({"pid": os.getpid(), "url": "http://127.0.0.1:1"}))
    with pytest.raises(NodeError, match="still running") as e:
        LocalNode(NodeConfig(cache_dir=tmp_path, fresh=True)).prepare_dirs()
    assert "stop" in e.value.fix
    assert (data / "nodes" / "0" / "leftover-index").exists()


@pytest.mark.parametrize(("value", "fresh"), [("1", True), ("true", True), ("TRUE", True), ("0", False),
                                              ("", False), (None, False)])
def test_fresh_from_the_environment(monkeypatch, tmp_path, value, fresh):
    monkeypatch.setenv("OSRECO_CACHE", str(tmp_path))
    if value is None:
        monkeypatch.delenv("OSRECO_NODE_FRESH", raising=False)
    else:
        monkeypatch.setenv("OSRECO_NODE_FRESH", value)
    assert NodeConfig.from_env().fresh is fresh
    assert LocalNode().with_config(fresh=True).config.fresh is True


def test_start_help_offers_fresh():
    proc = _run_cli("opensearch", "start", "--help")
    assert proc.returncode == 0 and "--fresh" in proc.stdout
