"""`osreco eval --quick` end to end: the real sidecar against the real node."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from osreco.evaluation.report import numbers_in_unit_interval

pytestmark = pytest.mark.integration


def test_quick_eval_report_structure_and_ranges(opensearch_url, os_client, index_name, minilm_bundle, tmp_path):
    from osreco.cli import cli

    out = tmp_path / "eval"
    result = CliRunner().invoke(cli, ["eval", "--quick", "--json", "--out", str(out), "--index", index_name,
                                      "--bundle", str(minilm_bundle)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == json.loads((out / "eval-report.json").read_text(encoding="utf-8"))
    assert (out / "eval-chart.png").read_bytes()[:4] == b"\x89PNG"
    assert "### Personalized search" in (out / "eval-report.md").read_text(encoding="utf-8")

    rec = report["recommendation"]
    assert list(rec["variants"]) == ["popularity", "als", "item-item", "osreco", "osreco (tuned)",
                                     "offline popularity", "offline als", "offline item-item", "offline blend"]
    assert rec["users"] > 0 and rec["validation_users"] > 0 and rec["errors"] == {}
    for metrics in rec["variants"].values():
        assert set(metrics) == {"recall", "ndcg", "recall_binary", "ndcg_binary", "coverage"}
    assert all(m["ndcg_binary"] > 0 for name, m in rec["variants"].items() if name.startswith("offline "))
    assert set(rec["tuning"]["chosen"]) == {"neighbor_weight", "popularity_weight"}
    assert max(rec["tuning"]["grid"].values()) > 0
    similar = report["similar"]
    assert list(similar["variants"]) == ["co-engagement", "content", "blend"]
    assert similar["cases"] > 0 and similar["errors"] == {}
    assert all(set(m) == {"hr", "ndcg"} and m["ndcg"] <= m["hr"] for m in similar["variants"].values())
    listings = report["listings"]
    assert list(listings["variants"]) == ["osreco", "index order"]
    assert listings["queries"] > 0 and listings["errors"] == {}
    assert listings["variants"]["osreco"]["ndcg"] != listings["variants"]["index order"]["ndcg"]
    md = (out / "eval-report.md").read_text(encoding="utf-8")
    assert "### Similar items" in md and "### Anonymous filtered listings" in md and "offline blend" in md
    search = report["search"]
    assert list(search["variants"]) == ["bm25", "knn", "hybrid", "hybrid+cf", "intent+hybrid", "osreco",
                                        "osreco (tuned)", "osreco (seen kept)"]
    assert search["pairs"] > 0 and search["errors"] == {}
    assert set(search["by_language"]) == {"en", "zh"}
    # the Chinese encoder (on by default) gives Chinese queries a meaning signal; MiniLM alone found nothing
    assert search["by_language"]["zh"]["knn"]["ndcg"] > 0
    assert set(search["by_class"]) <= {"listing", "text", "title"} and sum(search["classes"].values()) == \
        search["pairs"]
    tuning = search["tuning"]
    assert tuning["pairs"] > 0 and tuning["errors"] == {} and set(tuning["chosen"]) == {"listing", "text", "title"}
    assert f"taste={tuning['chosen']['listing']:g},neighbors={tuning['neighbors_weight']:g}" in tuning["grid"]
    for metrics in search["variants"].values():
        assert set(metrics) == {"ndcg", "recall", "violation_rate"}
    intent = report["intent"]
    assert {"en", "zh", "all"} <= set(intent["languages"]) and intent["cases"] > 0
    assert [t["name"] for t in report["targets"]] and all(isinstance(t["met"], bool) for t in report["targets"])
    names = {t["name"] for t in report["targets"]}
    assert {"served recommend NDCG@10 (binary) / best offline CF model of the same split",
            "served recommend NDCG@10 (binary) / popularity", "similar items blend HR@10 / content only",
            "anonymous listings NDCG@10 / index order"} <= names
    assert numbers_in_unit_interval(report) == []
    assert report["dataset"]["items"] == 1681


def test_quick_eval_with_a_reranker_adds_its_variant(opensearch_url, os_client, index_name, tiny_bundle,
                                                     tiny_reranker_bundle, tmp_path):
    """Re-ordering exactly the top k changes the order only: Recall@10 and violations must equal
    the osreco variant's, NDCG@10 may move."""
    from osreco.cli import cli

    out = tmp_path / "eval"
    result = CliRunner().invoke(cli, ["eval", "--quick", "--json", "--out", str(out), "--index", index_name,
                                      "--bundle", str(tiny_bundle), "--tasks", "search", "--no-zh-encoder",
                                      "--rerank-bundle", str(tiny_reranker_bundle), "--rerank-top-n", "10"])
    assert result.exit_code == 0, result.output
    search = json.loads(result.stdout)["search"]
    assert list(search["variants"])[-1] == "osreco+rerank" and "osreco" in search["variants"]
    assert search["errors"] == {}
    full, reranked = search["variants"]["osreco"], search["variants"]["osreco+rerank"]
    assert reranked["recall"] == pytest.approx(full["recall"])
    assert reranked["violation_rate"] == pytest.approx(full["violation_rate"])
    assert 0.0 <= reranked["ndcg"] <= 1.0
