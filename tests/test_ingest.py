"""The bulk writer against the real node with a real (tiny) bundle: counts, dead letters,
idempotence, content-hash skipping, deletes, --sync and kept collaborative vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from osreco.ingest.catalog import FieldMap, read_catalog
from osreco.ingest.index_spec import IndexSpec
from osreco.ingest.movielens import MOVIELENS_ITEMS, read_movielens_items
from osreco.ingest.rebuild import ensure_index
from osreco.ingest.writer import WriteConfig, index_items

pytestmark = pytest.mark.integration

FIELDS = FieldMap(facets={"brand": "brand"}, numeric={"price": ("price", "float"), "year": ("year", "integer")},
                  deleted="deleted")


class CountingEncoder:
    """The real Encoder, counting the texts it embeds (a spy, not a fake)."""

    def __init__(self, encoder):
        self.encoder, self.texts = encoder, 0
        self.dim, self.artifact_id, self.manifest = encoder.dim, encoder.artifact_id, encoder.manifest

    def encode_items(self, texts, batch_size=64):
        self.texts += len(texts)
        return self.encoder.encode_items(texts, batch_size=batch_size)


@pytest.fixture(scope="module")
def tiny_encoder(tiny_bundle):
    from osreco.exporter import Encoder

    return Encoder(tiny_bundle, threads=1)


@pytest.fixture
def encoder(tiny_encoder):
    return CountingEncoder(tiny_encoder)


def write_catalog(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def products(n: int, start: int = 0) -> list[dict]:
    return [{"item_id": f"p{i}", "title": f"Product {i} running shoe", "text": f"size {i % 12}",
             "brand": ["Acme", "Zoom", "Nike"][i % 3], "price": float(i % 90)} for i in range(start, start + n)]


def ingest(client, encoder, index_name, path, tmp_path, **overrides):
    spec = IndexSpec.from_encoder(encoder, index_name, cf_dim=4)
    index = ensure_index(client, spec)
    config = WriteConfig(batch_size=8, dead_letter=tmp_path / "dead.jsonl", checkpoint=tmp_path / "ck.json",
                         **overrides)
    return index_items(client, encoder, index, read_catalog(path, FIELDS), config, source=str(path))


def ids_in(client, index) -> list[str]:
    hits = client.search(index=index, body={"size": 1000, "_source": False, "query": {"match_all": {}}})["hits"]["hits"]
    return sorted(h["_id"] for h in hits)


def test_counts_add_up_and_bad_rows_are_dead_lettered(os_client, index_name, encoder, tmp_path):
    rows: list[dict | str] = products(30)
    rows[14] = {"item_id": "bad-price", "title": "x", "price": "lots"}        # fails validation, line 15
    rows[20] = "{not json"                                                   # line 21
    rows[25] = {"item_id": "too-big", "title": "x", "brand": "b" * 40000}    # OpenSearch refuses it (immense term)
    path = write_catalog(tmp_path / "c.jsonl", rows)
    report = ingest(os_client, encoder, index_name, path, tmp_path)
    assert (report.rows_read, report.indexed, report.unchanged, report.dead_lettered) == (30, 27, 0, 3)
    assert report.indexed + report.unchanged + report.deleted + report.dead_lettered == report.rows_read
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert sorted((d["line"], d["stage"]) for d in dead) == [(15, "validate"), (21, "validate"), (26, "index")]
    refused = next(d for d in dead if d["stage"] == "index")
    assert (refused["item_id"], refused["status"], refused["error_type"]) == \
        ("too-big", 400, "illegal_argument_exception")
    expected = sorted(r["item_id"] for i, r in enumerate(rows) if i not in (14, 20, 25))
    assert ids_in(os_client, index_name) == expected
    assert not (tmp_path / "ck.json").exists()  # a completed load removes its checkpoint


def test_second_run_is_idempotent_and_embeds_nothing(os_client, index_name, encoder, tmp_path):
    path = write_catalog(tmp_path / "c.jsonl", products(20))
    first = ingest(os_client, encoder, index_name, path, tmp_path)
    assert (first.indexed, first.embedded, encoder.texts) == (20, 20, 20)
    second = ingest(os_client, encoder, index_name, path, tmp_path)
    assert (second.indexed, second.unchanged, second.embedded, encoder.texts) == (0, 20, 0, 20)
    rows = products(20)
    rows[3]["title"] = "Changed title"
    third = ingest(os_client, encoder, index_name, write_catalog(path, rows), tmp_path)
    assert (third.indexed, third.unchanged, third.embedded, encoder.texts) == (1, 19, 1, 21)
    assert os_client.count(index=index_name)["count"] == 20
    doc = os_client.get(index=index_name, id="p3")["_source"]
    vector = np.array(encoder.encoder.encode_items([doc["title"] + ". " + doc["text"]])[0])
    assert np.allclose(doc["embedding"], vector, atol=1e-5)
    assert os_client.indices.get_mapping(index=index_name)
    meta = next(iter(os_client.indices.get_mapping(index=index_name).values()))["mappings"]["_meta"]
    assert (meta["artifact_id"], meta["dim"]) == (encoder.artifact_id, encoder.dim)


def test_deletes_sync_and_collaborative_vectors_survive(os_client, index_name, encoder, tmp_path):
    path = write_catalog(tmp_path / "c.jsonl", products(12))
    ingest(os_client, encoder, index_name, path, tmp_path)
    cf = [0.5, -0.25, 0.125, 1.0]
    os_client.update(index=index_name, id="p1", body={"doc": {"cf_vector": cf}}, refresh=True)
    rows = products(12)
    rows[1]["title"] = "Renamed"                          # re-embedded, keeps its cf_vector
    rows[2] = {"item_id": "p2", "deleted": True}          # marked deleted
    rows[7]["price"] = "n/a"                              # invalid now: dead-lettered, the live doc stays
    del rows[5]                                           # missing: only --sync deletes it
    report = ingest(os_client, encoder, index_name, write_catalog(path, rows), tmp_path, sync=True)
    assert (report.rows_read, report.indexed, report.unchanged, report.deleted, report.dead_lettered,
            report.deleted_missing) == (11, 1, 8, 1, 1, 1)
    assert ids_in(os_client, index_name) == sorted(f"p{i}" for i in range(12) if i not in (2, 5))
    assert json.loads((tmp_path / "dead.jsonl").read_text())["item_id"] == "p7"
    doc = os_client.get(index=index_name, id="p1")["_source"]
    assert (doc["title"], doc["cf_vector"]) == ("Renamed", cf)
    hits = os_client.search(index=index_name, body={"size": 1, "query": {"knn": {"cf_vector": {"vector": cf, "k": 1}}}})
    assert hits["hits"]["hits"][0]["_id"] == "p1"     # the cf_vector field is a searchable knn_vector


def test_duplicate_ids_are_dead_lettered_once(os_client, index_name, encoder, tmp_path):
    rows = products(5) + [dict(products(1)[0], title="again")]
    report = ingest(os_client, encoder, index_name, write_catalog(tmp_path / "c.jsonl", rows), tmp_path)
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert (report.indexed, report.dead_lettered) == (5, 1)
    assert (dead[0]["line"], dead[0]["item_id"], dead[0]["reason"]) == \
        (6, "p0", "duplicate item id, first seen on line 1")


def test_movielens_items_load_with_the_junk_row_dead_lettered(os_client, index_name, encoder, tmp_path):
    spec = IndexSpec.from_encoder(encoder, index_name)
    index = ensure_index(os_client, spec)
    config = WriteConfig(batch_size=256, dead_letter=tmp_path / "dead.jsonl")
    report = index_items(os_client, encoder, index, read_movielens_items(), config, source="ml-100k.item")
    assert (report.rows_read, report.indexed, report.dead_lettered) == (MOVIELENS_ITEMS, MOVIELENS_ITEMS - 1, 1)
    dead = json.loads((tmp_path / "dead.jsonl").read_text())
    assert (dead["line"], dead["field"]) == (268, "release_year")
    assert os_client.count(index=index_name)["count"] == MOVIELENS_ITEMS - 1
    toy = os_client.search(index=index_name, body={"query": {"bool": {
        "must": {"match": {"title": "toy story"}}, "filter": [{"term": {"genres": "animation"}},
                                                              {"range": {"year": {"lte": 1999}}}]}}})
    assert toy["hits"]["hits"][0]["_source"]["item_id"] == "1"


def test_interrupted_run_resumes_with_another_batch_size(os_client, index_name, encoder, tmp_path):
    rows: list[dict | str] = products(100)
    rows[3] = "{bad"
    path = write_catalog(tmp_path / "c.jsonl", rows)
    seen = [0]

    def crash_midway(n: int) -> None:
        seen[0] += n
        if seen[0] >= 48:
            raise KeyboardInterrupt  # stands in for an operator's Ctrl-C

    spec = IndexSpec.from_encoder(encoder, index_name)
    index = ensure_index(os_client, spec)
    config = WriteConfig(batch_size=8, dead_letter=tmp_path / "dead.jsonl", checkpoint=tmp_path / "ck.json")
    with pytest.raises(KeyboardInterrupt):
        index_items(os_client, encoder, index, read_catalog(path, FIELDS), config, progress=crash_midway)
    done = json.loads((tmp_path / "ck.json").read_text())["rows_done"]
    assert 8 <= done < 100 and done % 8 == 0
    embedded_before = encoder.texts
    resumed = index_items(os_client, encoder, index, read_catalog(path, FIELDS),
                          WriteConfig(batch_size=7, dead_letter=tmp_path / "dead.jsonl",
                                      checkpoint=tmp_path / "ck.json"))
    assert resumed.resumed_rows == done
    assert (resumed.rows_read, resumed.indexed + resumed.unchanged, resumed.dead_lettered) == (100, 99, 1)
    assert encoder.texts - embedded_before <= 100 - done  # settled rows are not embedded again
    assert len((tmp_path / "dead.jsonl").read_text().splitlines()) == 1
    assert os_client.count(index=index_name)["count"] == 99
