"""No row stops the catalog reader: limits, encodings, shapes and ranges each end as one RowError
naming the line and the field (pure; no OpenSearch, no model), checked case by case and fuzzed."""

from __future__ import annotations

import csv
import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osreco.ingest.catalog import CatalogItem, FieldMap, read_catalog, validate_row
from osreco.ingest.checkpoint import DeadLetters
from osreco.ingest.errors import CatalogError, RowError
from osreco.ingest.rows import MAX_JSON_DEPTH, MAX_LINE_BYTES, read_rows

FIELDS = FieldMap(id="sku", title="name", text=("desc",), facets={"brand": "brand", "genres": "tags"},
                  numeric={"price": ("price", "float"), "year": ("year", "integer")},
                  dates={"release_date": "released"}, image="img", deleted="gone")
GOOD = b'{"sku": "ok", "name": "Fine"}'


def _catalog(tmp_path: Path, *lines: bytes, name: str = "c.jsonl") -> list[CatalogItem | RowError]:
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return list(read_catalog(path, FIELDS))


def _one_error(entries: list[CatalogItem | RowError], line: int) -> RowError:
    """The entry on ``line`` is a RowError and the good row after it was still read."""
    assert [e.line for e in entries] == [line, line + 1]
    assert isinstance(entries[0], RowError) and isinstance(entries[1], CatalogItem), entries
    return entries[0]


def test_deeply_nested_json_is_refused_without_recursing(tmp_path):
    deep = b'{"sku": "d", "name": "D", "x": ' + b"[" * 20000 + b"]" * 20000 + b"}"
    error = _one_error(_catalog(tmp_path, deep, GOOD), 1)
    assert f"deeper than {MAX_JSON_DEPTH}" in str(error)
    brackets_in_strings = b'{"sku": "s", "name": "' + b"[" * 200 + b'"}'  # brackets inside a string are text
    assert isinstance(_catalog(tmp_path, brackets_in_strings)[0], CatalogItem)


def test_a_line_over_the_byte_limit_is_refused(tmp_path):
    huge = b'{"sku": "h", "name": "' + b"x" * MAX_LINE_BYTES + b'"}'
    error = _one_error(_catalog(tmp_path, huge, GOOD), 1)
    assert f"limit of {MAX_LINE_BYTES}" in str(error)


def test_invalid_utf8_names_the_byte_offset_and_is_never_replaced(tmp_path):
    error = _one_error(_catalog(tmp_path, b'{"sku": "u", "name": "caf\xe9"}', GOOD), 1)
    assert "invalid UTF-8 at byte 25" in str(error)
    csv_entries = _catalog(tmp_path, b"sku,name", b"a,caf\xc3", b"b,Good", name="c.csv")
    assert [(type(e).__name__, e.line) for e in csv_entries] == [("RowError", 2), ("CatalogItem", 3)]
    assert "invalid UTF-8 at byte 5" in str(csv_entries[0])
    atomic = _catalog(tmp_path, b"sku:token\tname:token_seq", b"a\t\xff", b"b\tGood  Film", name="c.item")
    assert [(type(e).__name__, e.line) for e in atomic] == [("RowError", 2), ("CatalogItem", 3)]
    assert atomic[1].fields["title"] == "Good Film"  # a token_seq title is joined back, as declared


def test_lone_surrogates_are_refused_naming_the_field(tmp_path):
    error = _one_error(_catalog(tmp_path, b'{"sku": "s", "name": "A \\ud800 B"}', GOOD), 1)
    assert error.field == "name" and "surrogate" in str(error)
    nested = _one_error(_catalog(tmp_path, b'{"sku": "s", "name": "A", "tags": ["x", "\\udfff"]}', GOOD), 1)
    assert nested.field == "tags"
    pair = _catalog(tmp_path, b'{"sku": "p", "name": "\\ud83d\\ude00"}')[0]  # a pair is one character
    assert isinstance(pair, CatalogItem) and pair.fields["title"] == "\U0001f600"
    assert len(pair.content_hash("m")) == 64


def test_dead_letters_of_rows_quoting_surrogates_are_written(tmp_path):
    entry = _catalog(tmp_path, b'{"sku": "\\udc00x", "name": "A"}')[0]
    assert isinstance(entry, RowError)
    letters = DeadLetters(tmp_path / "dead.jsonl", "c.jsonl")
    letters.write([{"line": entry.line, "item_id": entry.context.get("item_id"), "reason": str(entry)}])
    letters.close()
    record = json.loads((tmp_path / "dead.jsonl").read_text(encoding="utf-8"))
    assert record["line"] == 1 and "surrogate" in record["reason"]


@pytest.mark.parametrize("value", [1e15, -1e15, 10 ** 30, float("inf")])
def test_epoch_dates_outside_years_1_to_9999_are_refused(value):
    with pytest.raises(RowError) as info:
        validate_row({"sku": "1", "name": "x", "released": value}, 4, FIELDS)
    assert (info.value.line, info.value.field) == (4, "released") and "1..9999" in str(info.value)


def test_dates_inside_the_range_still_load():
    item = validate_row({"sku": "1", "name": "x", "released": 253402300799}, 1, FIELDS)
    assert str(item.fields["release_date"]).startswith("9999-12-31")


@pytest.mark.parametrize("column, value, words", [
    ("price", 1e39, "range of the float field"),
    ("price", -(10 ** 400), "range of the float field"),
    ("year", 2 ** 31, "range of the integer field"),
    ("year", "-2147483649", "range of the integer field"),
    ("year", 10 ** 400, "range of the integer field"),
    ("year", "1e400", "not finite"),
])
def test_numbers_beyond_the_mapped_type_are_refused(column, value, words):
    with pytest.raises(RowError) as info:
        validate_row({"sku": "1", "name": "x", column: value}, 2, FIELDS)
    assert info.value.field == column and words in str(info.value)


def test_numbers_at_the_edges_of_their_types_load():
    item = validate_row({"sku": "1", "name": "x", "price": 3.4e38, "year": "2147483647"}, 1, FIELDS)
    assert (item.fields["price"], item.fields["year"]) == (3.4e38, 2147483647)


@pytest.mark.parametrize("column, value, words", [
    ("sku", {"a": 1}, "is an object"),
    ("sku", [1, 2], "is a list"),
    ("sku", True, "boolean"),
    ("name", {"a": 1}, "is an object"),
    ("name", [1, 2], "is a list"),
    ("name", True, "boolean"),
    ("desc", ["a", "b"], "is a list"),
    ("img", {"url": "x"}, "is an object"),
    ("tags", {"a": 1}, "is an object"),
    ("tags", ["x", ["y"]], "nested list"),
    ("tags", ["x", {"y": 1}], "nested object"),
    ("released", ["2020-01-01"], "is a list"),
    ("gone", {"a": 1}, "is an object"),
])
def test_objects_lists_and_booleans_where_one_value_belongs_are_refused(column, value, words):
    row = {"sku": "1", "name": "x", column: value}
    with pytest.raises(RowError) as info:
        validate_row(row, 9, FIELDS)
    assert (info.value.line, info.value.field) == (9, column) and words in str(info.value)


def test_facets_take_flat_lists_and_booleans_as_declared():
    item = validate_row({"sku": 7, "name": "x", "tags": ["Trail", 3, True], "brand": False}, 1, FIELDS)
    assert (item.fields["genres"], item.fields["brand"]) == (["trail", "3", "true"], ["false"])


@pytest.mark.parametrize("name, header, row", [
    ("c.jsonl", None, b'{"sku": "a", "name": "A"}'),
    ("c.csv", b"sku,name", b"a,A"),
    ("c.tsv", b"sku\tname", b"a\tA"),
    ("c.item", b"sku:token\tname:token_seq", b"a\tA"),
])
def test_a_leading_bom_is_an_encoding_marker(tmp_path, name, header, row):
    lines = [header, row] if header else [row]
    lines[0] = b"\xef\xbb\xbf" + lines[0]
    entries = _catalog(tmp_path, *lines, name=name)
    assert len(entries) == 1 and isinstance(entries[0], CatalogItem), entries
    assert (entries[0].item_id, entries[0].line) == ("a", 2 if header else 1)


def test_csv_parser_errors_are_row_errors_and_reading_goes_on(tmp_path):
    big = b"a," + b"x" * (csv.field_size_limit() + 1)  # a field over csv's field size limit
    entries = _catalog(tmp_path, b"sku,name", big, b'b,"Good"', name="c.csv")
    assert [(type(e).__name__, e.line) for e in entries] == [("RowError", 2), ("CatalogItem", 3)]


def _count_nonblank_lines(data: bytes) -> int:
    data = data.removeprefix(b"\xef\xbb\xbf")
    return sum(1 for line in data.split(b"\n") if line.strip())


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=400) | st.lists(st.sampled_from(
    [b"{", b"}", b"[", b"]", b'"', b"\\", b",", b":", b"\n", b"\r", b"\xef\xbb\xbf", b"\xff", b"\xc3", b"\x00",
     b'"sku"', b'"name"', b'"tags"', b"1e999", b"true", b"null", b"\\ud800", b" "]), max_size=60).map(b"".join))
def test_fuzz_random_bytes_never_stop_the_reader(tmp_path, data):
    for name in ("c.jsonl", "c.csv", "c.tsv", "c.item"):
        path = tmp_path / name
        path.write_bytes(b"sku,name\tx\n" + data if name != "c.jsonl" else data)
        try:
            entries = list(read_catalog(path, FIELDS))
        except CatalogError as e:  # only a file-level problem (an unreadable header) may end the file
            assert not isinstance(e, RowError) and name != "c.jsonl"
            continue
        assert all(isinstance(e, (CatalogItem, RowError)) for e in entries)
        assert [e.line for e in entries] == sorted(e.line for e in entries)
        for entry in entries:
            if isinstance(entry, CatalogItem):
                assert len(entry.content_hash("m")) == 64
        if name == "c.jsonl":
            assert len(entries) == _count_nonblank_lines(data)


_CHARS = st.characters(exclude_categories=()) | st.sampled_from([*string.printable, "\ud800", "\udfff"])
_TEXT = st.text(alphabet=_CHARS, max_size=12)
_SCALAR = st.none() | st.booleans() | st.integers(min_value=-(10 ** 40), max_value=10 ** 40) | st.floats() | _TEXT
_VALUE = st.recursive(_SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                      max_leaves=8)
_COLUMNS = ("sku", "name", "desc", "brand", "tags", "price", "year", "released", "img", "gone")


@FUZZ
@given(rows=st.lists(st.dictionaries(st.sampled_from(_COLUMNS) | _TEXT, _VALUE, max_size=6), min_size=1, max_size=8))
def test_fuzz_json_shapes_every_row_is_accounted_for(tmp_path, rows):
    path = tmp_path / "shapes.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=True) + "\n" for r in rows), encoding="utf-8")
    entries = list(read_catalog(path, FIELDS))
    assert [e.line for e in entries] == list(range(1, len(rows) + 1))
    for row, entry in zip(rows, entries):
        if isinstance(entry, RowError):
            assert entry.line >= 1 and str(entry)
            continue
        for column in ("sku", "name", "desc", "img"):  # one value, never the spelling of an object or list
            assert row.get(column) is None or isinstance(row[column], (str, int, float)) and \
                not isinstance(row[column], bool)
        for column in ("brand", "tags"):
            value = row.get(column)
            assert not isinstance(value, dict)
            assert not isinstance(value, list) or not any(isinstance(v, (list, dict)) for v in value)
        assert len(entry.content_hash("m")) == 64
        json.dumps(entry.fields, allow_nan=False).encode("utf-8")  # what the bulk body will carry
        for name in ("item_id", "title", "text", "image"):
            assert name not in entry.fields or isinstance(entry.fields[name], str)
        for facet in ("brand", "genres"):
            assert all(isinstance(v, str) for v in entry.fields.get(facet, []))


def test_read_rows_keeps_other_readers_working(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"user_id": "u", "item_id": "1"}\n\n{"user_id": "\\ud800"}\n')
    rows = list(read_rows(path))
    assert rows[0] == (1, {"user_id": "u", "item_id": "1"})
    assert rows[1][0] == 3 and isinstance(rows[1][1], RowError) and rows[1][1].field == "user_id"
