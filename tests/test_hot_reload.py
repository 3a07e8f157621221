"""BundleReloader by value: where it looks, what each check decides, when it wakes.

The promotion itself (real node, real sidecar, a loop of searches) is in tests/test_promote.py.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from osreco.exporter.bundles import bundle_path, switch_current
from osreco.plugin.reload import BundleReloader, bundle_artifact_id


def _bundle(path: Path, artifact_id: str) -> Path:
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"artifact_id": artifact_id}))
    return path


class Served:
    """What the reloader drives: an alias state, the served id, a loader and a swap."""

    def __init__(self, served: str | None, alias: tuple[str, str | None] = ("items-v1", "sha256:aa")):
        self.served, self.alias, self.loaded, self.fail = served, alias, [], None

    def read_alias(self):
        return self.alias

    def load(self, path: Path):
        if self.fail:
            raise RuntimeError(self.fail)
        return ("encoder", bundle_artifact_id(path))

    def swap(self, encoder, path: Path) -> None:
        self.served = encoder[1]
        self.loaded.append(path)

    def reloader(self, bundle_dir=None, root=None, interval_s=60.0, outcomes=None) -> BundleReloader:
        return BundleReloader(self.read_alias, lambda: self.served, self.load, self.swap,
                              str(bundle_dir) if bundle_dir else None, str(root) if root else None, interval_s,
                              on_result=(outcomes.append if outcomes is not None else lambda _: None))


def test_bundle_artifact_id_reads_the_manifest_or_none(tmp_path):
    assert bundle_artifact_id(_bundle(tmp_path / "b", "sha256:ab")) == "sha256:ab"
    assert bundle_artifact_id(tmp_path / "nothing") is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    assert bundle_artifact_id(tmp_path / "bad") is None


def test_same_artifact_is_current_and_loads_nothing(tmp_path):
    s, outcomes = Served("sha256:aa"), []
    r = s.reloader(bundle_dir=_bundle(tmp_path / "a", "sha256:aa"), outcomes=outcomes)
    assert r.check() == "current" and r.index == "items-v1" and r.pending is None
    assert s.loaded == [] and outcomes == []


def test_promoted_bundle_is_found_under_the_root_and_swapped(tmp_path):
    root = tmp_path / "bundles"
    old = _bundle(bundle_path(root, "sha256:0000000000000000aa"), "sha256:0000000000000000aa")
    switch_current(root, old)
    new = _bundle(bundle_path(root, "sha256:1111111111111111bb"), "sha256:1111111111111111bb")
    s, outcomes = Served("sha256:0000000000000000aa", ("items-v2", "sha256:1111111111111111bb")), []
    r = s.reloader(bundle_dir=root / "current", root=root, outcomes=outcomes)
    assert r.check() == "loaded"
    assert s.loaded == [new.resolve()] and s.served == "sha256:1111111111111111bb"
    assert r.pending is None and r.last_error is None and outcomes == ["loaded"]
    assert r.check() == "current"


def test_a_moved_current_link_is_found_without_a_root(tmp_path):
    a, b = _bundle(tmp_path / "a", "sha256:aa"), _bundle(tmp_path / "b", "sha256:bb")
    link = tmp_path / "current"
    link.symlink_to(a)
    s = Served("sha256:aa", ("items-v2", "sha256:bb"))
    r = s.reloader(bundle_dir=link)
    link.unlink()
    link.symlink_to(b)
    assert r.check() == "loaded" and s.loaded == [b.resolve()]


def test_missing_bundle_keeps_the_old_encoder_pending_and_logs_once(tmp_path, caplog):
    s, outcomes = Served("sha256:aa", ("items-v2", "sha256:cc")), []
    r = s.reloader(bundle_dir=_bundle(tmp_path / "a", "sha256:aa"), root=tmp_path, outcomes=outcomes)
    with caplog.at_level(logging.ERROR, logger="osreco.plugin.reload"):
        assert r.check() == "missing" and r.check() == "missing"
    assert s.served == "sha256:aa" and s.loaded == [] and r.pending == "sha256:cc"
    assert "sha256:cc" in r.last_error and str(tmp_path) in r.last_error and "osreco promote" in r.last_error
    assert outcomes == ["missing", "missing"] and len(caplog.records) == 1


def test_a_bundle_that_fails_to_load_is_reported_and_retried(tmp_path):
    _bundle(bundle_path(tmp_path, "sha256:cc"), "sha256:cc")
    s, outcomes = Served("sha256:aa", ("items-v2", "sha256:cc")), []
    s.fail = "onnxruntime: invalid graph"
    r = s.reloader(root=tmp_path, outcomes=outcomes)
    assert r.check() == "failed" and "invalid graph" in r.last_error and r.pending == "sha256:cc"
    s.fail = None
    assert r.check() == "loaded" and s.served == "sha256:cc" and outcomes == ["failed", "loaded"]


def test_hits_from_another_index_wake_the_background_check(tmp_path):
    _bundle(bundle_path(tmp_path, "sha256:bb"), "sha256:bb")
    s = Served("sha256:aa", ("items-v1", "sha256:aa"))
    loaded = threading.Event()
    swap = s.swap

    def swap_and_signal(encoder, path):
        swap(encoder, path)
        loaded.set()

    s.swap = swap_and_signal
    r = s.reloader(root=tmp_path, interval_s=3600).start()   # only a wake can make it check again
    try:
        for _ in range(100):
            if r.index == "items-v1":
                break
            threading.Event().wait(0.02)
        r.saw_indexes({"items-v1"})                     # same index: nothing to do
        assert not loaded.wait(0.3)
        s.alias = ("items-v2", "sha256:bb")             # the alias moved to a rebuilt index
        r.saw_indexes({"items-v1", "items-v2"})
        assert loaded.wait(10) and s.served == "sha256:bb"
    finally:
        r.stop()


def test_unreadable_alias_is_retried_by_the_thread():
    calls = []

    def down():
        calls.append(1)
        raise ConnectionError("node down")

    r = BundleReloader(down, lambda: "sha256:aa", lambda p: None, lambda e, p: None, None, None, 0.05).start()
    try:
        for _ in range(200):
            if len(calls) >= 3:
                break
            threading.Event().wait(0.02)
        assert len(calls) >= 3
    finally:
        r.stop()
    with pytest.raises(ConnectionError):
        r.check()
