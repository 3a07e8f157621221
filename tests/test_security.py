"""API keys: `osreco apikey list|revoke`, the atomic keys file, the reload of a changed file,
and the dev-mode warning. Pure units (no node): the app runs over a fake service."""

from __future__ import annotations

import json
import logging
import os
import threading

import pytest
from click.testing import CliRunner

from osreco.ingest.connection import OpenSearchConfig
from osreco.plugin import security
from osreco.plugin.app import create_app
from osreco.plugin.cli import apikey
from osreco.plugin.config import DEV_HMAC_KEY, SidecarConfig
from osreco.plugin.errors import AuthError, ConfigError, NotFoundError
from osreco.plugin.security import KeyChecker, append_key, create_key, load_keys, revoke_key

OS = OpenSearchConfig(url="http://127.0.0.1:9")


class NoServices:
    """Routes are never reached with a valid search body in these tests (400 before the service)."""

    def readiness(self) -> dict[str, object]:
        return {}

    def search(self, req: object) -> dict[str, object]:
        raise AssertionError("an empty search body is refused before the service")


def _create(runner: CliRunner, path, name: str) -> dict[str, str]:
    res = runner.invoke(apikey, ["create", "--file", str(path), "--name", name, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def _status(client, key: str) -> int:
    """400 = authenticated (the empty body is refused after the key check), 401 = refused key."""
    return client.post("/v1/search", json={}, headers={"X-API-Key": key}).status_code


def test_list_shows_ids_names_and_state_never_secrets(tmp_path):
    runner, path = CliRunner(), tmp_path / "keys.json"
    web, app = _create(runner, path, "web"), _create(runner, path, "app")
    res = runner.invoke(apikey, ["list", "--file", str(path), "--json"])
    assert res.exit_code == 0, res.output
    listed = json.loads(res.output)["keys"]
    assert [(k["key_id"], k["name"], k["revoked"]) for k in listed] == [
        (web["key_id"], "web", False), (app["key_id"], "app", False)]
    assert all(isinstance(k["created_at"], float) for k in listed)
    records = load_keys(path)
    for out in (res.output, runner.invoke(apikey, ["list", "--file", str(path)]).output):
        for key in (web["key"], app["key"]):
            assert key.split("_", 2)[2] not in out
        for r in records.values():
            assert r.digest not in out and r.salt not in out
    plain = runner.invoke(apikey, ["list", "--file", str(path)])
    assert plain.exit_code == 0 and web["key_id"] in plain.output and "active" in plain.output


def test_revoke_by_id_or_name_marks_the_key_and_refuses_it(tmp_path):
    runner, path = CliRunner(), tmp_path / "keys.json"
    web, app = _create(runner, path, "web"), _create(runner, path, "app")
    res = runner.invoke(apikey, ["revoke", "--file", str(path), "web", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert (out["key_id"], out["revoked"], out["changed"]) == (web["key_id"], True, True)
    res = runner.invoke(apikey, ["revoke", "--file", str(path), app["key_id"]])
    assert res.exit_code == 0 and app["key_id"] in res.output
    again = json.loads(runner.invoke(apikey, ["revoke", "--file", str(path), web["key_id"], "--json"]).output)
    assert (again["revoked"], again["changed"]) == (True, False)
    listed = json.loads(runner.invoke(apikey, ["list", "--file", str(path), "--json"]).output)["keys"]
    assert [k["revoked"] for k in listed] == [True, True]
    checker = KeyChecker(load_keys(path))
    with pytest.raises(AuthError, match="revoked"):
        checker.check(web["key"])
    assert (path.stat().st_mode & 0o777) == 0o600


def test_revoke_unknown_key_exits_2_naming_it_and_leaves_the_file(tmp_path):
    runner, path = CliRunner(), tmp_path / "keys.json"
    _create(runner, path, "web")
    before = path.read_bytes()
    res = runner.invoke(apikey, ["revoke", "--file", str(path), "nobody"])
    assert res.exit_code == 2
    assert "'nobody'" in res.output and "osreco apikey list" in res.output
    res = runner.invoke(apikey, ["revoke", "--file", str(path), "nobody", "--json"])
    assert res.exit_code == 2 and json.loads(res.output)["type"] == "NotFoundError"
    assert path.read_bytes() == before
    missing = runner.invoke(apikey, ["list", "--file", str(tmp_path / "none.json")])
    assert missing.exit_code == 2 and "none.json" in missing.output


def test_revoke_a_shared_name_asks_for_the_id(tmp_path):
    path = tmp_path / "keys.json"
    for _ in range(2):
        append_key(path, create_key("web")[1])
    with pytest.raises(ConfigError, match="named 'web'"):
        revoke_key(path, "web")
    with pytest.raises(NotFoundError):
        revoke_key(path, "app")


def test_rewrites_are_atomic_and_concurrent_creates_all_land(tmp_path, monkeypatch):
    path = tmp_path / "keys.json"
    key, record = create_key("web")
    append_key(path, record)
    before = path.read_bytes()

    def fail_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(security.os, "replace", fail_replace)
    with pytest.raises(OSError):
        revoke_key(path, "web")
    monkeypatch.undo()
    assert path.read_bytes() == before                       # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json", "keys.json.lock"]  # no temp left

    threads = [threading.Thread(target=append_key, args=(path, create_key(f"t{i}")[1])) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(load_keys(path)) == 9


@pytest.mark.parametrize("content", ['{"keys": [', '{"keys": {}}', '[]', '{"keys": [{"key_id": "x"}]}',
                                     '{"keys": [{"key_id": "a", "name": "n", "salt": "zz", '
                                     '"digest": "00", "created_at": 1}]}'])
def test_malformed_file_names_the_file(tmp_path, content):
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as e:
        load_keys(path)
    assert str(path) in str(e.value) and e.value.context["field"] == "OSRECO_API_KEYS_FILE"


def test_checker_reloads_a_changed_file_and_keeps_old_keys_when_malformed(tmp_path, caplog):
    path = tmp_path / "keys.json"
    web, record = create_key("web")
    append_key(path, record)
    checker = KeyChecker.from_file(str(path), check_every_s=0.0)
    assert checker.check(web).name == "web"
    app, app_record = create_key("app")
    append_key(path, app_record)
    assert checker.check(app).name == "app"                  # a new key works without a restart
    revoke_key(path, "web")
    with pytest.raises(AuthError, match="revoked"):
        checker.check(web)
    path.write_text('{"keys": [')                             # an operator's broken edit
    with caplog.at_level(logging.ERROR, logger="osreco.plugin"):
        assert checker.check(app).name == "app"
        assert checker.check(app).name == "app"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(path) in errors[0].getMessage()   # once per change, not per request
    os.remove(path)
    assert checker.check(app).name == "app"                  # a removed file keeps the keys too


def test_checker_stats_the_file_at_most_once_per_interval(tmp_path, monkeypatch):
    path = tmp_path / "keys.json"
    append_key(path, create_key("web")[1])
    checker = KeyChecker.from_file(str(path), check_every_s=3600.0)
    calls = []
    real = security._signature
    monkeypatch.setattr(security, "_signature", lambda p: calls.append(p) or real(p))
    key, _ = create_key("x")
    for _ in range(50):
        with pytest.raises(AuthError):
            checker.check(key)
    assert calls == []
    checker.refresh(force=True)
    assert calls == [str(path)]


def test_app_reloads_keys_and_never_500s_on_a_bad_file(tmp_path, monkeypatch):
    monkeypatch.setattr(security, "RELOAD_EVERY_S", 0.0)     # every request re-stats the file
    path = tmp_path / "keys.json"
    web, record = create_key("web")
    append_key(path, record)
    config = SidecarConfig(opensearch=OS, alias="items", api_keys_file=str(path), hmac_key="k" * 32)
    client = create_app(config, services=NoServices()).test_client()
    assert _status(client, web) == 400
    revoke_key(path, "web")
    assert _status(client, web) == 401
    path.write_text("not json")
    assert _status(client, web) == 401                       # old (revoked) keys kept, no 500


def test_dev_mode_warning_names_the_fixed_key_once_per_process(caplog, monkeypatch):
    monkeypatch.setattr(security, "_warned_pids", set())
    with caplog.at_level(logging.WARNING, logger="osreco.plugin"):
        for _ in range(3):
            create_app(SidecarConfig(opensearch=OS, alias="items", dev_mode=True), services=NoServices())
    warnings = [r.getMessage() for r in caplog.records if "DEV MODE" in r.getMessage()]
    assert len(warnings) == 1
    assert DEV_HMAC_KEY in warnings[0] and "not secret" in warnings[0] and "production" in warnings[0]
    own = security.dev_mode_warning("s" * 32, DEV_HMAC_KEY)
    assert "API keys are OFF" in own and DEV_HMAC_KEY not in own
