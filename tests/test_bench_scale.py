"""Smoke test of the scale benchmark (bench/bench_scale.py) at a tiny size on the real node:
every column is measured, and the benchmark's indexes are gone afterwards."""

from __future__ import annotations

import json

import pytest

from bench import bench_scale

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_scale_bench_measures_one_small_size_and_cleans_up(os_client, opensearch_url, tiny_bundle, tmp_path,
                                                           monkeypatch):
    monkeypatch.setenv("OPENSEARCH_URL", opensearch_url)
    monkeypatch.setattr(bench_scale, "CACHE", tmp_path)
    monkeypatch.setattr(bench_scale, "ensure_tiny_bundle", lambda: tiny_bundle)
    out = tmp_path / "rows.json"
    rows = bench_scale.main(["--sizes", "300", "--seconds", "1", "--queries", "4", "--json", str(out)])
    (row,) = rows
    assert row.items == 300 and row.items_per_s > 0 and row.ingest_s > 0
    assert row.store_bytes > 0 and row.bytes_per_item == pytest.approx(row.store_bytes / 300, abs=0.1)
    assert row.segments >= 1 and 0 < row.heap_used_mb <= row.heap_max_mb
    assert row.requests > 0 and 0 < row.search_p50_ms <= row.search_p99_ms and row.bm25_p50_ms > 0
    assert 0.0 <= row.recall_at_10 <= 1.0 and row.recall_queries == 4
    assert json.loads(out.read_text())[0]["items"] == 300
    assert os_client.cat.indices(index="bench-scale-300-*", expand_wildcards="all", format="json") == []
    assert "| 300 |" in bench_scale.table(rows, 4)
