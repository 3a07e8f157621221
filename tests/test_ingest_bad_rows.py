"""`osreco ingest` against the real node with a catalog that mixes every kind of bad row: each
row ends indexed or dead-lettered with its line, field and reason; a load that fails for a reason
outside the rows prints its report and leaves no half-built index behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from osreco.cli import cli
from osreco.ingest.rows import MAX_LINE_BYTES

pytestmark = pytest.mark.integration

FLAGS = ["--facet", "brand", "--numeric", "price", "--numeric", "year:integer", "--date", "release_date"]
# line -> (field named in the dead letter, words of its reason); line 1 carries a BOM and is good
BAD: dict[int, tuple[str | None, str]] = {
    3: (None, "nested deeper"),
    4: ("title", "surrogate"),
    5: ("release_date", "1..9999"),
    6: ("item_id", "is an object"),
    7: ("title", "is a list"),
    8: ("title", "boolean"),
    9: ("brand", "nested list"),
    10: (None, "invalid UTF-8 at byte"),
    11: ("price", "range of the float field"),
    12: ("year", "range of the integer field"),
    13: (None, f"limit of {MAX_LINE_BYTES}"),
    14: ("text", "is a list"),
}


def _catalog(path: Path) -> Path:
    lines = [
        b'\xef\xbb\xbf{"item_id": "g1", "title": "Red trail running shoe", "brand": "Acme", "price": 20}',
        b'{"item_id": "g2", "title": "Blue rain jacket", "brand": ["Zoom", "Outdoor"], "in_stock": true}',
        b'{"item_id": "d", "title": "x", "extra": ' + b"[" * 20000 + b"]" * 20000 + b"}",
        b'{"item_id": "s", "title": "lone \\ud800 surrogate"}',
        b'{"item_id": "t", "title": "far future", "release_date": 1e15}',
        b'{"item_id": {"a": 1}, "title": "object id"}',
        b'{"item_id": "l", "title": [1, 2]}',
        b'{"item_id": "b", "title": true}',
        b'{"item_id": "n", "title": "nested facet", "brand": [["x"]]}',
        b'{"item_id": "u", "title": "caf\xe9"}',
        b'{"item_id": "f", "title": "huge price", "price": 1e39}',
        b'{"item_id": "i", "title": "huge year", "year": 3000000000}',
        b'{"item_id": "h", "title": "' + b"x" * MAX_LINE_BYTES + b'"}',
        b'{"item_id": "x", "title": "list text", "text": ["a", "b"]}',
        b'{"item_id": "g3", "title": "Green camping stove", "release_date": "2021-06-01", "brand": true}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _run(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_every_bad_row_is_dead_lettered_and_the_good_rows_are_searchable(opensearch_url, os_client, index_name,
                                                                          tiny_bundle, tmp_path):
    catalog = _catalog(tmp_path / "mixed.jsonl")
    dead_path = tmp_path / "dead.jsonl"
    result = _run(["ingest", str(catalog), "--bundle", str(tiny_bundle), "--index", index_name, "--url",
                   opensearch_url, "--threads", "1", "--dead-letter", str(dead_path),
                   "--checkpoint", str(tmp_path / "ck.json"), "--json", *FLAGS])
    report = json.loads(result.output)
    assert result.exit_code == 1
    assert (report["rows_read"], report["indexed"], report["dead_lettered"]) == (15, 3, len(BAD))
    assert report["indexed"] + report["unchanged"] + report["deleted"] + report["dead_lettered"] == 15
    assert report["dead_letter"] == str(dead_path)
    dead = {d["line"]: d for d in map(json.loads, dead_path.read_text(encoding="utf-8").splitlines())}
    assert sorted(dead) == sorted(BAD)
    for line, (field, words) in BAD.items():
        assert dead[line]["field"] == field and words in dead[line]["reason"], dead[line]
    assert dead[4]["item_id"] == "s" and dead[6]["item_id"] is None  # an object is no item id
    hits = os_client.search(index=index_name, body={"query": {"match": {"title": "shoe jacket stove"}}})
    assert sorted(h["_id"] for h in hits["hits"]["hits"]) == ["g1", "g2", "g3"]
    assert os_client.get(index=index_name, id="g2")["_source"]["brand"] == ["zoom", "outdoor"]
    assert os_client.get(index=index_name, id="g3")["_source"]["brand"] == ["true"]  # the declared conversion


def _versions(os_client, alias: str) -> list[str]:
    return sorted(os_client.indices.get(index=f"{alias}-v*", allow_no_indices=True, expand_wildcards="all"))


def test_a_failed_load_prints_its_report_and_leaves_no_new_index(opensearch_url, os_client, index_name,
                                                                tiny_bundle, tmp_path):
    catalog = _catalog(tmp_path / "mixed.jsonl")
    (tmp_path / "a-file").write_text("")
    unwritable = tmp_path / "a-file" / "dead.jsonl"  # cannot be opened: the load fails after the index is made
    base = ["ingest", str(catalog), "--bundle", str(tiny_bundle), "--url", opensearch_url, "--threads", "1",
            "--checkpoint", str(tmp_path / "ck.json"), *FLAGS]
    result = _run([*base, "--index", index_name, "--dead-letter", str(unwritable)])
    assert result.exit_code == 3
    assert "load failed after 0 rows" in result.output and str(unwritable) in result.output
    assert "error: the load into" in result.output
    assert _versions(os_client, index_name) == []
    assert not os_client.indices.exists_alias(name=index_name)

    good = _run([*base, "--index", index_name, "--dead-letter", str(tmp_path / "dead.jsonl"), "--json"])
    assert good.exit_code == 1 and json.loads(good.output)["indexed"] == 3
    result = _run([*base, "--index", index_name, "--dead-letter", str(unwritable), "--rebuild", "--json"])
    error = json.loads(result.output)
    assert result.exit_code == 3 and error["ok"] is False
    assert error["context"]["report"]["dead_letter"] == str(unwritable)
    assert _versions(os_client, index_name) == [f"{index_name}-v1"]  # the half-built v2 is gone
    assert list(os_client.indices.get_alias(name=index_name)) == [f"{index_name}-v1"]


def test_an_unreachable_node_is_one_clear_error_with_the_report(tiny_bundle, tmp_path):
    catalog = _catalog(tmp_path / "mixed.jsonl")
    result = _run(["ingest", str(catalog), "--bundle", str(tiny_bundle), "--index", "unreachable-test",
                   "--url", "http://127.0.0.1:9", "--max-retries", "0", "--checkpoint", str(tmp_path / "ck.json"),
                   "--dead-letter", str(tmp_path / "d.jsonl"), "--json", *FLAGS])
    error = json.loads(result.output)
    assert result.exit_code == 3 and error["context"]["report"]["rows_read"] == 0
    assert "unreachable-test" in error["error"] and error["error"].count("\n") == 0
