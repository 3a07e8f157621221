"""The quality gate `osreco promote`: the decision, the refusal of a degraded model, the index swap."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from osreco.evaluation.gate import PromoteConfig, decide, promote
from osreco.exporter.bundles import bundle_path, switch_current
from osreco.exporter.errors import ConfigError


def test_decide_promotes_equal_or_better_and_refuses_worse():
    assert decide({"ndcg": 0.31}, {"ndcg": 0.30}).promote
    assert decide({"ndcg": 0.30}, {"ndcg": 0.30}).promote
    refused = decide({"ndcg": 0.25, "recall": 0.4}, {"ndcg": 0.30, "recall": 0.5})
    assert not refused.promote and refused.delta == pytest.approx(-0.05)
    assert refused.summary() == ("refuse: candidate ndcg 0.2500 vs current 0.3000 "
                                 "(delta -0.0500, needs >= +0.0000)")
    assert refused.table().splitlines() == [
        "| metric | current | candidate | delta |", "|---|---|---|---|",
        "| ndcg (gate) | 0.3000 | 0.2500 | -0.0500 |", "| recall | 0.5000 | 0.4000 | -0.1000 |"]
    assert not decide({"ndcg": 0.305}, {"ndcg": 0.30}, min_delta=0.01).promote


def test_decide_needs_the_metric():
    with pytest.raises(ConfigError, match="candidate"):
        decide({"recall": 1.0}, {"ndcg": 0.3})
    with pytest.raises(ConfigError, match="current"):
        decide({"ndcg": 0.3}, {"ndcg": float("nan")})


def test_switch_current_is_a_relative_symlink(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    link = switch_current(tmp_path, tmp_path / "a")
    switch_current(tmp_path, tmp_path / "b")
    assert link.is_symlink() and os.readlink(link) == "b" and link.resolve() == (tmp_path / "b").resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "current"]


def test_promote_config_checks_inputs(tmp_path):
    with pytest.raises(ConfigError, match="not a bundle"):
        PromoteConfig(tmp_path, tmp_path, tmp_path / "root")


def degrade(bundle: Path, out: Path, noise: float = 0.2) -> Path:
    """A copy of ``bundle`` with noise added to its word embeddings (a deliberately worse model)."""
    import onnx
    from onnx import numpy_helper

    from osreco.exporter.manifest import load_manifest, write_manifest

    shutil.copytree(bundle, out)
    model = onnx.load(str(out / "model.onnx"))
    for init in model.graph.initializer:
        if "word_embeddings" in init.name:
            w = numpy_helper.to_array(init)
            noisy = w + np.random.default_rng(0).normal(0, noise, w.shape).astype(w.dtype)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
            break
    else:
        raise AssertionError("no word embedding initializer in the bundle")
    onnx.save(model, str(out / "model.onnx"))
    import dataclasses

    write_manifest(out, dataclasses.replace(load_manifest(out, verify=False), model_name="degraded"))
    return out


@pytest.mark.slow
def test_a_degraded_model_is_refused_with_both_numbers(minilm_bundle, tmp_path):
    from osreco.evaluation.gate import offline_evaluator

    candidate = degrade(minilm_bundle, tmp_path / "degraded")
    lines: list[str] = []
    config = PromoteConfig(candidate, minilm_bundle, tmp_path / "bundles")
    evaluator = offline_evaluator(max_queries=12, users_per_query=2, threads=1, max_items=250)
    result = promote(config, evaluator, report=lines.append)
    assert not result.promoted
    cur, cand = result.decision.current["ndcg"], result.decision.candidate["ndcg"]
    assert cand < cur
    assert any(line.startswith("refuse:") and f"{cand:.4f}" in line and f"{cur:.4f}" in line for line in lines)
    assert not (tmp_path / "bundles" / "current").exists()
    assert list((tmp_path / "bundles").iterdir()) == []
    assert candidate.is_dir()   # a bundle the caller passed is never deleted


CATALOG_ROWS = [{"item_id": f"m{i}", "title": f"Movie {i}", "text": f"a {g} film number {i}"}
                for i, g in enumerate(["comedy", "horror", "drama", "western"] * 5)]


def _search_loop(os_client, alias: str, dim: int, stop: threading.Event, errors: list, counts: list) -> None:
    """kNN searches through the alias until stopped; every failure is recorded."""
    vector = [0.1] * dim
    while not stop.is_set():
        try:
            resp = os_client.search(index=alias, body={"size": 5, "timeout": "5s", "query": {"knn": {
                "embedding": {"vector": vector, "k": 5}}}})
            if resp["_shards"].get("failed") or not resp["hits"]["hits"]:
                errors.append(resp["_shards"])
            counts.append(1)
        except Exception as e:  # the test counts every kind of failure
            errors.append(repr(e))




def _sidecar_loop(app, stop: threading.Event, statuses: list, kinds: list) -> None:
    """Searches through the real sidecar until stopped; every status and degradation is kept."""
    client = app.test_client()
    while not stop.is_set():
        resp = client.post("/v1/search", json={"q": "a comedy film", "k": 5})
        statuses.append(resp.status_code)
        if resp.status_code == 200:
            kinds.extend(d["kind"] for d in resp.get_json()["degradations"])


@pytest.mark.integration
def test_promotion_reindexes_swaps_alias_and_hot_reloads_the_sidecar(os_client, opensearch_url, index_name,
                                                                     tiny_bundle, tmp_path):
    from osreco.exporter import Encoder, load_manifest
    from osreco.ingest.catalog import FieldMap, read_catalog
    from osreco.ingest.connection import OpenSearchConfig
    from osreco.ingest.index_spec import IndexSpec
    from osreco.ingest.rebuild import alias_indexes, rebuild_index
    from osreco.ingest.writer import WriteConfig, index_items
    from osreco.plugin.app import create_app
    from osreco.plugin.config import SidecarConfig
    from osreco.training.data import write_jsonl

    catalog = tmp_path / "items.jsonl"
    write_jsonl(CATALOG_ROWS, catalog)
    root = tmp_path / "bundles"
    degraded = degrade(tiny_bundle, tmp_path / "degraded", noise=0.5)
    current = bundle_path(root, load_manifest(degraded).artifact_id)
    shutil.copytree(degraded, current)          # the serving bundle, installed as promote installs
    switch_current(root, current)
    enc = Encoder(current, threads=1)
    spec = IndexSpec.from_encoder(enc, alias=index_name, cf_dim=8)
    rebuild_index(os_client, spec, lambda name: index_items(os_client, enc, name,
                                                             read_catalog(catalog, FieldMap()), WriteConfig()))
    old_index = alias_indexes(os_client, index_name)
    # the sidecar serves <root>/current and checks the alias every 30 s: only a search seeing the
    # rebuilt index (or /readyz) can make it switch within this test
    app = create_app(SidecarConfig(opensearch=OpenSearchConfig(url=opensearch_url), alias=index_name,
                                   bundle_dir=str(root / "current"), dev_mode=True, embed_vocabulary=False,
                                   bundle_reload_s=30))
    service = app.extensions["osreco.services"]
    assert service.encoder.artifact_id == enc.artifact_id and service.reloader.bundles_root == root
    scores = {current.resolve(): 0.40, tiny_bundle.resolve(): 0.45}
    stop, errors, counts, statuses, kinds = threading.Event(), [], [], [], []
    loops = [threading.Thread(target=_search_loop, args=(os_client, index_name, enc.dim, stop, errors, counts)),
             threading.Thread(target=_sidecar_loop, args=(app, stop, statuses, kinds))]
    for t in loops:
        t.start()
    try:
        result = promote(PromoteConfig(tiny_bundle, root / "current", root, alias=index_name,
                                       catalog=str(catalog)),
                         lambda b: {"ndcg": scores[Path(b).resolve()]}, client=os_client, report=lambda _: None)
        for _ in range(300):      # the sidecar loop's next searches hit the new index and wake the reload
            if service.encoder.artifact_id == result.artifact_id:
                break
            threading.Event().wait(0.05)
        served_before_readyz = service.encoder.artifact_id
        n_after = len(statuses)
        threading.Event().wait(0.5)
    finally:
        stop.set()
        for t in loops:
            t.join(timeout=30)
    assert result.promoted and errors == [] and counts
    # no request through the sidecar failed, before, during or after the swap
    assert statuses and set(statuses) == {200} and len(statuses) > n_after
    assert set(kinds) <= {"encoder", "shard_failures"}   # only the short, reported mismatch window
    assert served_before_readyz == result.artifact_id == load_manifest(tiny_bundle).artifact_id
    new_index = alias_indexes(os_client, index_name)
    assert new_index != old_index and new_index == [result.index["index"]]
    meta = os_client.indices.get_mapping(index=new_index[0])[new_index[0]]["mappings"]["_meta"]
    assert meta["artifact_id"] == result.artifact_id
    assert result.index["indexed"] == len(CATALOG_ROWS)
    served = (root / "current").resolve()
    assert served == bundle_path(root, result.artifact_id).resolve()
    assert json.loads((served / "manifest.json").read_text())["artifact_id"] == result.artifact_id
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["artifact_id"] == result.artifact_id
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'osreco_bundle_reloads_total{result="loaded"} 1.0' in metrics
    assert f'osreco_bundle_info{{artifact_id="{result.artifact_id}"}} 1.0' in metrics
    assert enc.artifact_id not in metrics
    service.reloader.stop()


@pytest.mark.integration
def test_readyz_reloads_a_mismatched_bundle_or_says_where_it_looked(os_client, opensearch_url, index_name,
                                                                   tiny_bundle, tmp_path):
    from osreco.exporter import Encoder, load_manifest
    from osreco.ingest.connection import OpenSearchConfig
    from osreco.ingest.index_spec import IndexSpec
    from osreco.ingest.rebuild import ensure_index
    from osreco.plugin.app import create_app
    from osreco.plugin.config import SidecarConfig

    root = tmp_path / "bundles"
    degraded = degrade(tiny_bundle, tmp_path / "degraded", noise=0.5)
    shutil.copytree(degraded, bundle_path(root, load_manifest(degraded).artifact_id))
    switch_current(root, bundle_path(root, load_manifest(degraded).artifact_id))
    # the index was built with the tiny bundle, which is not installed yet
    ensure_index(os_client, IndexSpec.from_encoder(Encoder(tiny_bundle, threads=1), alias=index_name))
    app = create_app(SidecarConfig(opensearch=OpenSearchConfig(url=opensearch_url), alias=index_name,
                                   bundle_dir=str(root / "current"), dev_mode=True, embed_vocabulary=False,
                                   bundle_reload_s=3600))
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    message = resp.get_json()["error"]["message"]
    wanted = load_manifest(tiny_bundle).artifact_id
    assert wanted in message and str(root) in message and "hot-reload" in message
    body = app.test_client().post("/v1/search", json={"q": "comedy"}).get_json()   # served, BM25 only
    assert any(d["kind"] == "encoder" and wanted in d["message"] for d in body["degradations"])
    shutil.copytree(tiny_bundle, bundle_path(root, wanted))     # install it: readiness switches
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 200 and resp.get_json()["artifact_id"] == wanted
    app.extensions["osreco.services"].reloader.stop()


def test_cli_promote_bad_input_exits_2(tmp_path):
    from click.testing import CliRunner

    from osreco.cli import cli

    (tmp_path / "cand").mkdir()
    (tmp_path / "cur").mkdir()
    res = CliRunner().invoke(cli, ["promote", "--candidate", str(tmp_path / "cand"), "--current",
                                   str(tmp_path / "cur"), "--bundles-root", str(tmp_path / "root"),
                                   "--evaluator", "offline"])
    assert res.exit_code == 2 and "not a bundle" in res.output
