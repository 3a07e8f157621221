"""Forget, everywhere, at once: the one forget path (osreco.cf.forget), its tombstone, the saved
model rewrite, pseudonym refusal, the CLI's refusal to half-forget, and every gunicorn worker
obeying before and after a restart (real node, real CF model, real gunicorn)."""

from __future__ import annotations

import csv
import json
import os
import random
import uuid

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest
import requests
from click.testing import CliRunner
from servers import gunicorn_sidecar

from osreco.cf import store as cf_store
from osreco.cf.cli import cf, users
from osreco.cf.events import Event, write_events
from osreco.cf.forget import (
    drop_forgotten,
    forget,
    forgotten_index,
    forgotten_keys,
    user_and_tombstone,
)
from osreco.cf.interactions import Interaction
from osreco.cf.model import CFConfig, CFModel
from osreco.cf.privacy import PrivacyConfig
from osreco.cf.train import train_models
from osreco.ingest.errors import ConfigError
from osreco.plugin import schemas
from osreco.plugin.config import Limits
from osreco.plugin.errors import RequestError

KEY = "forget-test-key-0123456789abcdef0123"
PRIVACY = PrivacyConfig.from_env(KEY)
CF_DIM = 8


def _model(users_items: dict[str, list[str]]) -> CFModel:
    rows = [Interaction(PRIVACY.pseudonymize(u), i, 1.0, float(n)) for u, items in users_items.items()
            for n, i in enumerate(items)]
    return train_models(rows, CFConfig(factors=4, iterations=2, threads=1))


# ---- the saved model: atomic rewrite, metadata -------------------------------------------------

def test_without_user_recounts_users_in_the_metadata():
    model = _model({"a": ["i1", "i2"], "b": ["i2", "i3"], "c": ["i3"]})
    assert model.meta["users"] == 3
    key = PRIVACY.pseudonymize("a")
    smaller = model.without_user(key)
    assert smaller.user_vector(key) is None and smaller.meta["users"] == 2 and smaller.meta["users_forgotten"] == 1
    both = model.without_user(key, PRIVACY.pseudonymize("b"))
    assert both.meta["users"] == 1 and both.meta["users_forgotten"] == 2
    assert model.without_user("u_" + "0" * 64).meta == model.meta  # nobody removed: nothing changes


def test_save_replaces_the_files_atomically(tmp_path, monkeypatch):
    model = _model({"a": ["i1", "i2"], "b": ["i2", "i3"]})
    model.save(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        model.without_user(PRIVACY.pseudonymize("a")).save(tmp_path)
    # the old model is whole and no temporary file is left behind
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    monkeypatch.undo()
    model.without_user(PRIVACY.pseudonymize("a")).save(tmp_path)
    loaded = CFModel.load(tmp_path)
    assert loaded.user_vector(PRIVACY.pseudonymize("a")) is None and loaded.meta["users"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cf_model.json", "cf_model.npz"]


def test_drop_forgotten_counts_what_it_drops():
    a, b = PRIVACY.pseudonymize("a"), PRIVACY.pseudonymize("b")
    rows = [Interaction(a, "i1", 1.0, 0.0), Interaction(b, "i1", 1.0, 0.0), Interaction(a, "i2", 1.0, 1.0)]
    kept, dropped = drop_forgotten(rows, {a})
    assert kept == [rows[1]] and dropped == 2


# ---- pseudonyms are never input ids -----------------------------------------------------------

def test_a_pseudonym_user_id_is_a_400_naming_the_field():
    pseudonym = PRIVACY.pseudonymize("alice")
    limits = Limits()
    cases = [lambda: schemas.parse_search({"q": "shoes", "user_id": pseudonym}, limits),
             lambda: schemas.parse_events({"events": [{"user_id": pseudonym, "item_id": "1", "kind": "click"}]},
                                          limits),
             lambda: schemas.parse_page_args({"user_id": pseudonym}, limits, need_user=True),
             lambda: schemas.parse_user_id(pseudonym, "user_id")]
    for case in cases:
        with pytest.raises(RequestError, match="pseudonym") as err:
            case()
        assert err.value.status == 400 and err.value.field.endswith("user_id")
    assert schemas.parse_user_id("u_alice", "user_id") == "u_alice"  # only the exact shape is refused


def test_the_forget_route_refuses_a_pseudonym():
    from osreco.ingest.connection import OpenSearchConfig
    from osreco.plugin.app import create_app
    from osreco.plugin.config import SidecarConfig

    calls: list[str] = []

    class Services:
        metrics = None

        def forget(self, user_id: str) -> dict:
            calls.append(user_id)
            return {}

    config = SidecarConfig(opensearch=OpenSearchConfig(url="http://127.0.0.1:1"), alias="items", dev_mode=True)
    app = create_app(config, services=Services())
    resp = app.test_client().delete(f"/v1/users/{PRIVACY.pseudonymize('alice')}")
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "user_id" and calls == []


def test_cli_forget_refuses_a_pseudonym_before_touching_anything(monkeypatch):
    monkeypatch.setenv("OSRECO_HMAC_KEY", KEY)
    monkeypatch.setenv("OPENSEARCH_URL", "http://127.0.0.1:1")  # reaching the node would be exit 3
    result = CliRunner().invoke(users, ["forget", PRIVACY.pseudonymize("alice"), "--index", "x"])
    assert result.exit_code == 2 and "pseudonym" in result.output


def test_forget_function_refuses_a_pseudonym(os_client, index_name):
    with pytest.raises(ConfigError, match="pseudonym"):
        forget(os_client, index_name, PRIVACY.pseudonymize("alice"), PRIVACY)
    assert not os_client.indices.exists(index=forgotten_index(index_name))


# ---- the tombstone ---------------------------------------------------------------------------

def _seed(client, prefix: str, raw: str, items: list[str]) -> str:
    key = PRIVACY.pseudonymize(raw)
    write_events(client, prefix, [Event(key, i, "click", "2026-01-01T00:00:00+00:00") for i in items], refresh=True)
    store = cf_store.StoreConfig(prefix=prefix, item_index=prefix)
    cf_store.write_user_vectors(client, store, [key], np.ones((1, 4), np.float32), {key: items})
    return key


def test_forget_writes_a_tombstone_read_in_one_mget(os_client, index_name):
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    key = _seed(os_client, index_name, alice, ["i1", "i2"])
    users_index = f"{index_name}-users"
    doc, gone = user_and_tombstone(os_client, users_index, index_name, key)
    assert doc is not None and doc["history"] == ["i1", "i2"] and gone is False  # no tombstone index yet
    report = forget(os_client, index_name, alice, PRIVACY)
    assert report.tombstone == forgotten_index(index_name)
    assert report.deleted == {f"{index_name}-events": 2, users_index: 1}
    assert user_and_tombstone(os_client, users_index, index_name, key) == (None, True)
    assert forgotten_keys(os_client, index_name) == {key}
    stone = os_client.get(index=forgotten_index(index_name), id=key)["_source"]
    assert set(stone) == {"forgotten_at"}
    # forgetting again is harmless and keeps one tombstone
    assert forget(os_client, index_name, alice, PRIVACY).deleted == {}
    assert forgotten_keys(os_client, index_name) == {key}


def test_forget_rewrites_a_given_model_and_reports_it(os_client, index_name, tmp_path):
    dave = f"dave-{uuid.uuid4().hex[:6]}"
    _seed(os_client, index_name, dave, ["i1"])
    _model({dave: ["i1", "i2"], "x": ["i2", "i3"]}).save(tmp_path)
    report = forget(os_client, index_name, dave, PRIVACY, model_dir=tmp_path).as_dict()
    assert report["model"] == {"model_dir": str(tmp_path), "removed": True, "users_before": 2, "users_after": 1}
    saved = CFModel.load(tmp_path)
    assert saved.user_vector(PRIVACY.pseudonymize(dave)) is None and saved.meta["users"] == 1


def test_forget_keeps_a_longer_prefixs_tombstones(os_client, index_name):
    gil = f"gil-{uuid.uuid4().hex[:6]}"
    longer = f"{index_name}-eu"  # matched by the shorter prefix's `<prefix>-*`
    key = _seed(os_client, longer, gil, ["i1"])
    forget(os_client, longer, gil, PRIVACY)
    assert forgotten_keys(os_client, longer) == {key}
    forget(os_client, index_name, gil, PRIVACY)
    assert forgotten_keys(os_client, longer) == {key}  # the other prefix's tombstone is still there
    assert forgotten_keys(os_client, index_name) == {key}


def test_the_route_reports_a_model_folder_it_cannot_rewrite(os_client, index_name, tmp_path, caplog):
    from osreco.ingest.connection import OpenSearchConfig
    from osreco.plugin.app import create_app
    from osreco.plugin.config import SidecarConfig

    jo = f"jo-{uuid.uuid4().hex[:6]}"
    _seed(os_client, index_name, jo, ["i1"])
    os_client.indices.create(index=index_name, body={"mappings": {"properties": {"popularity": {"type": "float"}}}})
    model_dir = tmp_path / "cf"
    _model({jo: ["i1", "i2"], "k": ["i2"]}).save(model_dir)
    url = os_client.transport.hosts[0]
    config = SidecarConfig(opensearch=OpenSearchConfig(url=f"http://{url['host']}:{url['port']}"), alias=index_name,
                           cf_model_dir=str(model_dir), dev_mode=True, embed_vocabulary=False, bundle_reload_s=0,
                           hmac_key=KEY)
    app = create_app(config)
    (model_dir / "cf_model.npz").unlink()  # the folder changed under the running sidecar
    with caplog.at_level("WARNING", logger="osreco.plugin"):
        resp = app.test_client().delete(f"/v1/users/{jo}")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    out = resp.get_json()
    assert out["model_rewritten"] is False and out["tombstone"] is True
    assert f"--model-dir {model_dir}" in out["model_note"] and f"--index {index_name}" in out["model_note"]
    assert any("not rewritten" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert forgotten_keys(os_client, index_name) == {PRIVACY.pseudonymize(jo)}


# ---- the CLI refuses to half-forget ------------------------------------------------------------

def test_cli_uses_the_recorded_model_folder_or_refuses(os_client, index_name, tmp_path, monkeypatch):
    monkeypatch.setenv("OSRECO_HMAC_KEY", KEY)
    erin = f"erin-{uuid.uuid4().hex[:6]}"
    key = _seed(os_client, index_name, erin, ["i1", "i2"])
    store = cf_store.StoreConfig(prefix=index_name, item_index=index_name)
    gone_dir = tmp_path / "not-here"
    cf_store.write_meta(os_client, store, {"model": "als", "model_dir": str(gone_dir)})

    result = CliRunner().invoke(users, ["forget", erin, "--index", index_name])
    assert result.exit_code == 2, result.output
    assert str(gone_dir) in result.output and "--model-dir PATH" in result.output and "--skip-model" in result.output
    # nothing was forgotten: no half-forget
    assert cf_store.read_user(os_client, store, key) is not None
    assert not os_client.indices.exists(index=forgotten_index(index_name))

    model_dir = tmp_path / "served"
    _model({erin: ["i1", "i2"], "y": ["i2"]}).save(model_dir)
    cf_store.write_meta(os_client, store, {"model": "als", "model_dir": str(model_dir)})
    result = CliRunner().invoke(users, ["forget", erin, "--index", index_name, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["deleted"] == {f"{index_name}-events": 2, f"{index_name}-users": 1} and out["total"] == 3
    assert out["tombstone"] == forgotten_index(index_name)
    assert out["model"]["model_dir"] == str(model_dir) and out["model"]["removed"] is True
    assert CFModel.load(model_dir).user_vector(key) is None


def test_cli_skip_model_relies_on_the_tombstone(os_client, index_name, tmp_path, monkeypatch):
    monkeypatch.setenv("OSRECO_HMAC_KEY", KEY)
    fay = f"fay-{uuid.uuid4().hex[:6]}"
    key = _seed(os_client, index_name, fay, ["i1"])
    store = cf_store.StoreConfig(prefix=index_name, item_index=index_name)
    cf_store.write_meta(os_client, store, {"model": "als", "model_dir": str(tmp_path / "elsewhere")})
    result = CliRunner().invoke(users, ["forget", fay, "--index", index_name, "--skip-model", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["model"] is None and out["total"] == 2 and forgotten_keys(os_client, index_name) == {key}
    both = CliRunner().invoke(users, ["forget", fay, "--index", index_name, "--skip-model", "--model-dir", "m"])
    assert both.exit_code == 2


def test_cli_refuses_when_the_training_recorded_no_model_folder(os_client, index_name, tmp_path, monkeypatch):
    monkeypatch.setenv("OSRECO_HMAC_KEY", KEY)
    monkeypatch.delenv("OSRECO_CF_MODEL", raising=False)
    hal = f"hal-{uuid.uuid4().hex[:6]}"
    key = _seed(os_client, index_name, hal, ["i1"])
    store = cf_store.StoreConfig(prefix=index_name, item_index=index_name)
    cf_store.write_meta(os_client, store, {"model": "als"})  # trained before model_dir was recorded
    result = CliRunner().invoke(users, ["forget", hal, "--index", index_name])
    assert result.exit_code == 2, result.output
    assert "recorded no CF model folder" in result.output
    assert "--model-dir PATH" in result.output and "--skip-model" in result.output
    assert cf_store.read_user(os_client, store, key) is not None  # nothing was forgotten
    assert not os_client.indices.exists(index=forgotten_index(index_name))

    served = tmp_path / "served"  # the sidecar's OSRECO_CF_MODEL is the default folder
    _model({hal: ["i1"], "z": ["i2"]}).save(served)
    monkeypatch.setenv("OSRECO_CF_MODEL", str(served))
    result = CliRunner().invoke(users, ["forget", hal, "--index", index_name, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["model"]["model_dir"] == str(served) and out["model"]["removed"] is True
    assert CFModel.load(served).user_vector(key) is None and forgotten_keys(os_client, index_name) == {key}


def test_cli_without_any_training_forgets_without_a_model(os_client, index_name, monkeypatch):
    monkeypatch.setenv("OSRECO_HMAC_KEY", KEY)
    monkeypatch.delenv("OSRECO_CF_MODEL", raising=False)
    ivy = f"ivy-{uuid.uuid4().hex[:6]}"
    key = _seed(os_client, index_name, ivy, ["i1"])
    result = CliRunner().invoke(users, ["forget", ivy, "--index", index_name, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["model"] is None and forgotten_keys(os_client, index_name) == {key}


# ---- every gunicorn worker obeys, before and after a restart, and retraining ---------------------

@pytest.fixture(scope="module")
def shop_cf(os_client, tiny_bundle, tmp_path_factory):
    """The 50-item e-commerce catalog with a cf_vector field, a small interaction file (a few
    users over those items) and the CLI-trained model (`osreco cf train --model-dir`)."""
    from osreco.exporter.encoder import Encoder
    from osreco.ingest.fixtures import read_ecommerce_items
    from osreco.ingest.index_spec import IndexSpec
    from osreco.ingest.rebuild import ensure_index
    from osreco.ingest.writer import WriteConfig, index_items

    alias = f"t-forget-{uuid.uuid4().hex[:8]}"
    enc = Encoder(tiny_bundle, threads=1)
    spec = IndexSpec.from_encoder(enc, alias, cf_dim=CF_DIM).with_fields(facets=("currency",))
    items = list(read_ecommerce_items())
    assert index_items(os_client, enc, ensure_index(os_client, spec), items, WriteConfig()).ok
    ids = sorted(e.item_id for e in items)
    rng = random.Random(7)
    alice = f"alice-{uuid.uuid4().hex[:6]}"
    people = [alice] + [f"p{n}-{uuid.uuid4().hex[:4]}" for n in range(15)]
    work = tmp_path_factory.mktemp("forget-shop")
    path = work / "interactions.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "value", "timestamp"])
        for n, person in enumerate(people):
            for t, item in enumerate(rng.sample(ids, 8)):
                w.writerow([person, item, 1.0, 1_700_000_000 + 1000 * n + t])
    yield {"alias": alias, "bundle": str(tiny_bundle), "alice": alice, "interactions": path,
           "model_dir": work / "model"}
    os_client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True,
                             expand_wildcards="all")


def _train(env: dict, monkeypatch) -> dict:
    monkeypatch.setenv("OSRECO_HMAC_KEY", KEY)
    result = CliRunner().invoke(cf, ["train", str(env["interactions"]), "--index", env["alias"], "--model-dir",
                                     str(env["model_dir"]), "--factors", str(CF_DIM), "--iterations", "3",
                                     "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _personalized(url: str, user: str, n: int) -> list[bool]:
    out = []
    for i in range(n):
        if i % 2:
            resp = requests.get(f"{url}/v1/recommend", params={"user_id": user, "k": 5}, timeout=30)
        else:
            resp = requests.post(f"{url}/v1/search", json={"q": "shoes", "user_id": user, "k": 5}, timeout=30)
        assert resp.status_code == 200, resp.text
        out.append(resp.json()["personalized"])
    return out


@pytest.mark.integration
def test_every_gunicorn_worker_forgets_before_and_after_restart(shop_cf, opensearch_url, os_client, monkeypatch):
    summary = _train(shop_cf, monkeypatch)
    model_dir = shop_cf["model_dir"]
    assert summary["meta"]["model_dir"] == str(model_dir.resolve())
    alice, key = shop_cf["alice"], PRIVACY.pseudonymize(shop_cf["alice"])
    stale = {p.name: p.read_bytes() for p in model_dir.iterdir() if p.name.startswith("cf_model")}
    env = {"OPENSEARCH_URL": opensearch_url, "OSRECO_INDEX": shop_cf["alias"], "OSRECO_BUNDLE": shop_cf["bundle"],
           "OSRECO_CF_MODEL": str(model_dir), "OSRECO_DEV_MODE": "1", "OSRECO_HMAC_KEY": KEY,
           "OSRECO_FACETS": "brand,color,category,currency", "OSRECO_EMBED_VOCABULARY": "0",
           "OSRECO_BUNDLE_RELOAD_S": "0", "OPENBLAS_NUM_THREADS": "1"}
    with gunicorn_sidecar(env, workers=2, threads=4) as url:
        assert all(_personalized(url, alice, 8)), "alice is personalized before the forget"
        # drop her stored vector so only the in-memory CF model of each worker still knows her
        os_client.delete(index=f"{shop_cf['alias']}-users", id=key, refresh=True)
        assert all(_personalized(url, alice, 8)), "every worker personalizes her from its CF model"
        resp = requests.delete(f"{url}/v1/users/{alice}", timeout=30)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["tombstone"] is True and body["user_deleted"] is True and body["model_rewritten"] is True
        assert not any(_personalized(url, alice, 20)), "no worker personalizes a forgotten user"
        assert CFModel.load(model_dir).user_vector(key) is None
        # new events under her id are dropped, never stored, and never fold her back in
        events = {"events": [{"user_id": alice, "item_id": i, "kind": "click"} for i in ("1", "2", "3")]}
        resp = requests.post(f"{url}/v1/events", json=events, timeout=30)
        assert resp.status_code == 202, resp.text
        assert resp.json()["accepted"] == 0 and resp.json()["forgotten"] == 3
        os_client.indices.refresh(index=f"{shop_cf['alias']}-events", ignore_unavailable=True)
        stored = os_client.count(index=f"{shop_cf['alias']}-events", body={"query": {"term": {"user_key": key}}},
                                 ignore_unavailable=True)
        assert stored.get("count", 0) == 0
        assert not any(_personalized(url, alice, 6)), "her new events do not bring her back"
        # a stale copy of the model (restored backup, another host's file) must not bring her back
        for name, data in stale.items():
            (model_dir / name).write_bytes(data)
        assert CFModel.load(model_dir).user_vector(key) is not None
        url.restart()
        assert not any(_personalized(url, alice, 20)), "a restarted worker never resurrects her"
        other = next(r for r in csv.DictReader(shop_cf["interactions"].open()) if r["user_id"] != alice)["user_id"]
        assert all(_personalized(url, other, 4)), "other users stay personalized"
        # retraining on interactions that still contain her drops them and does not bring her back
        summary = _train(shop_cf, monkeypatch)
        assert summary["meta"]["interactions_forgotten"] == 8
        assert CFModel.load(model_dir).user_vector(key) is None
        assert cf_store.read_user(os_client, cf_store.StoreConfig(shop_cf["alias"], shop_cf["alias"]), key) is None
        url.restart()
        assert not any(_personalized(url, alice, 20)), "a retrain does not bring her back"
        # a pseudonym never addresses her
        resp = requests.post(f"{url}/v1/search", json={"q": "shoes", "user_id": key}, timeout=30)
        assert resp.status_code == 400 and resp.json()["error"]["field"] == "user_id"
