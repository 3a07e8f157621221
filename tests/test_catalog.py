"""Catalog readers, the field map and row validation (pure; no OpenSearch, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from osreco.ingest.catalog import (
    CatalogItem,
    FieldMap,
    count_rows,
    detect_format,
    read_catalog,
    read_rows,
    validate_row,
)
from osreco.ingest.errors import CatalogError, ConfigError, RowError
from osreco.ingest.fixtures import ECOMMERCE_FIELDS, ECOMMERCE_QUERIES, read_ecommerce_items
from osreco.ingest.movielens import MOVIELENS_ITEMS, read_movielens_items, repair_movielens_row

FIELDS = FieldMap(id="sku", title="name", text=("desc",), facets={"brand": "brand", "genres": "tags"},
                  numeric={"price": ("price", "float"), "year": ("year", "integer")},
                  dates={"release_date": "released"}, image="img", deleted="gone")


def test_validate_row_normalizes_every_field_kind():
    row = {"sku": 42, "name": "  Red   Shoes ", "desc": "Fast", "brand": " ACME ", "tags": "Run|run| Trail ",
           "price": "$19.5", "year": "2020", "released": "2020-05-01", "img": "a.jpg", "gone": "no"}
    item = validate_row(row, 7, FIELDS)
    assert item == CatalogItem(
        item_id="42", line=7, deleted=False, embed_text="Red Shoes. Fast",
        fields={"item_id": "42", "title": "Red Shoes", "text": "Fast", "brand": ["acme"],
                "genres": ["run", "trail"], "price": 19.5, "year": 2020, "release_date": "2020-05-01",
                "image": "a.jpg"})


@pytest.mark.parametrize("row, field, words", [
    ({"name": "x"}, "sku", "no item id"),
    ({"sku": "1"}, "name", "no title"),
    ({"sku": "1", "name": "x", "price": "cheap"}, "price", "not a number"),
    ({"sku": "1", "name": "x", "year": "1999.5"}, "year", "not an integer"),
    ({"sku": "1", "name": "x", "price": "nan"}, "price", "not finite"),
    ({"sku": "1", "name": "x", "released": "May 2020"}, "released", "ISO 8601"),
    ({"sku": "1", "name": "x", "gone": "maybe"}, "gone", "not a boolean"),
    ({"sku": "x" * 600, "name": "x"}, "sku", "longer than 512"),
])
def test_validate_row_names_line_and_field(row, field, words):
    with pytest.raises(RowError) as info:
        validate_row(row, 12, FIELDS)
    assert (info.value.line, info.value.field) == (12, field)
    assert words in str(info.value)


def test_deleted_rows_need_no_title():
    item = validate_row({"sku": "9", "gone": "true"}, 3, FIELDS)
    assert item.deleted and item.item_id == "9"


def test_content_hash_depends_on_fields_and_model_only():
    a = validate_row({"sku": "1", "name": "A", "price": 1}, 1, FIELDS)
    b = validate_row({"sku": "1", "name": "A", "price": 1.0}, 99, FIELDS)
    c = validate_row({"sku": "1", "name": "A", "price": 2}, 1, FIELDS)
    assert a.content_hash("m1") == b.content_hash("m1")
    assert a.content_hash("m1") != c.content_hash("m1")
    assert a.content_hash("m1") != a.content_hash("m2")


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_reader_reports_physical_lines(tmp_path):
    path = _write_jsonl(tmp_path / "c.jsonl", [{"sku": "a", "name": "A"}, "", "{broken", [1, 2],
                                               {"sku": "b", "name": "B"}])
    out = list(read_catalog(path, FIELDS))
    assert [(type(e).__name__, e.line) for e in out] == [
        ("CatalogItem", 1), ("RowError", 3), ("RowError", 4), ("CatalogItem", 5)]
    assert "invalid JSON" in str(out[1]) and "expected a JSON object" in str(out[2])


def test_csv_reader_counts_header_and_quoted_newlines(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('sku,name,tags,price\na,"Shoe, red",x|y,3\nb,"Two\nlines",,\nc,Bad,1,2,3\n', encoding="utf-8")
    out = list(read_catalog(path, FIELDS))
    assert out[0].fields == {"item_id": "a", "title": "Shoe, red", "genres": ["x", "y"], "price": 3.0}
    assert (out[1].line, out[1].fields["title"]) == (3, "Two lines")
    assert isinstance(out[2], RowError) and out[2].line == 5
    assert count_rows(path) == 4  # a physical-line estimate for the progress bar


def test_parquet_reader_numbers_rows(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"sku": ["a", "b"], "name": ["A", None], "tags": [["x", "Y"], []],
                             "price": [1.5, None]}), path)
    out = list(read_catalog(path, FIELDS))
    assert out[0].fields == {"item_id": "a", "title": "A", "genres": ["x", "y"], "price": 1.5}
    assert isinstance(out[1], RowError) and (out[1].line, out[1].field) == (2, "name")
    assert count_rows(path) == 2


def test_formats_and_unreadable_files(tmp_path):
    assert detect_format("a.ndjson") == "jsonl" and detect_format("x.item") == "atomic"
    with pytest.raises(ConfigError):
        detect_format("a.xlsx")
    with pytest.raises(CatalogError):
        list(read_rows(tmp_path / "missing.jsonl"))


def test_field_map_from_schema_file(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"id": "sku", "title": "name", "text": "desc", "facets": ["brand"],
                                "numeric": {"price": "cost", "year": ["yr", "integer"]},
                                "dates": {"release_date": "released"}}))
    fields = FieldMap.from_file(path)
    assert (fields.text, dict(fields.facets), dict(fields.numeric)) == (
        ("desc",), {"brand": "brand"}, {"price": ("cost", "float"), "year": ("yr", "integer")})
    path.write_text(json.dumps({"id": "sku", "titel": "name"}))
    with pytest.raises(ConfigError, match="unknown schema keys"):
        FieldMap.from_file(path)
    with pytest.raises(ConfigError):
        FieldMap(numeric={"price": ("price", "money")})
    with pytest.raises(ConfigError):
        FieldMap(embed_fields=("title", "brand"))


def test_movielens_items_with_junk_row_267():
    entries = list(read_movielens_items())
    items = [e for e in entries if isinstance(e, CatalogItem)]
    errors = [e for e in entries if isinstance(e, RowError)]
    assert len(entries) == MOVIELENS_ITEMS and len(items) == MOVIELENS_ITEMS - 1
    assert [(e.line, e.field) for e in errors] == [(268, "release_year")]  # item 267 (header is line 1)
    toy = items[0]
    assert toy.fields == {"item_id": "1", "title": "Toy Story", "genres": ["animation", "children's", "comedy"],
                          "year": 1995}
    assert toy.embed_text == "Toy Story. animation, children's, comedy. 1995"
    assert repair_movielens_row({"movie_title": ["Land", "(1995)"], "release_year": "V"}) == {
        "movie_title": "Land", "release_year": "1995"}


def _matches(item: CatalogItem, constraints: dict[str, object]) -> bool:
    f = item.fields
    for key, want in constraints.items():
        if key == "price_lt" and not f["price"] < want:
            return False
        if key == "exclude_brand" and want in f["brand"]:
            return False
        if key in ("color", "category", "currency") and want not in f.get(key, []):
            return False
        if key == "text" and want not in item.embed_text:
            return False
    return True


@pytest.mark.parametrize("case", ECOMMERCE_QUERIES, ids=lambda c: c.query)
def test_ecommerce_fixture_has_one_right_answer_per_query(case):
    items = [e for e in read_ecommerce_items()]
    assert all(isinstance(e, CatalogItem) for e in items) and len(items) == 50
    assert [i.item_id for i in items if _matches(i, case.constraints)] == [case.item_id]
    ids = {i.item_id for i in items}
    assert set(case.near_misses) <= ids


def test_ecommerce_fixture_mixes_languages_and_facets():
    items = list(read_ecommerce_items())
    chinese = [i for i in items if any("\u4e00" <= ch <= "\u9fff" for ch in i.fields["title"])]
    assert 10 <= len(chinese) <= 25
    assert {c for i in items for c in i.fields.get("currency", [])} == {"usd", "cny"}
    assert set(ECOMMERCE_FIELDS.facets) == {"brand", "color", "category", "currency"}
