"""Reading interactions: formats, per-row validation, whole-file errors, the matrix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from osreco.cf.errors import InteractionError
from osreco.cf.interactions import Interaction, ReadConfig, build_matrix, read_interactions
from osreco.ingest.errors import RowError


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_rows_are_read_with_aliases_and_iso_times(tmp_path):
    path = _write(tmp_path, "a.csv", "user,item,rating,timestamp\nu1,i1,5,100\nu1,i2,,2024-01-01T00:00:00Z\n")
    data = read_interactions(path)
    assert data.interactions == [Interaction("u1", "i1", 5.0, 100.0), Interaction("u1", "i2", 1.0, 1704067200.0)]
    assert data.report.rows == 2 and data.report.kept == 2


def test_bad_rows_name_their_line_and_nothing_valid_is_lost(tmp_path):
    text = "user_id,item_id,value,timestamp\nu1,i1,1,10\nu1,i2,lots,11\nu2,i1,nan,12\n,i3,1,13\nu2,i2,2,14\n"
    data = read_interactions(_write(tmp_path, "b.csv", text))
    assert [(e.user_id, e.item_id) for e in data.interactions] == [("u1", "i1"), ("u2", "i2")]
    assert [(e.line, e.field) for e in data.report.rejected] == [(3, "value"), (4, "value"), (5, "user_id")]
    assert "line 3: value 'lots' is not a number" in str(data.report.rejected[0])


def test_strict_mode_raises_the_first_bad_row(tmp_path):
    path = _write(tmp_path, "c.csv", "user_id,item_id,value\nu1,i1,x\n")
    with pytest.raises(RowError, match="line 2"):
        read_interactions(path, ReadConfig(strict=True))


def test_duplicates_are_counted_and_dropped_once(tmp_path):
    text = "user_id,item_id,value,timestamp\nu1,i1,1,10\nu1,i1,1,10\nu1,i1,1,20\n"
    data = read_interactions(_write(tmp_path, "d.csv", text))
    assert data.report.duplicates == 1
    assert [e.timestamp for e in data.interactions] == [10.0, 20.0]


def test_unknown_items_are_counted_not_fatal(tmp_path):
    text = "user_id,item_id\nu1,i1\nu1,zz\nu2,zz\nu2,yy\n"
    data = read_interactions(_write(tmp_path, "e.csv", text), ReadConfig(known_items=frozenset({"i1"})))
    assert data.report.kept == 1 and data.report.unknown_items == 3
    assert data.report.unknown_item_examples == ["zz", "yy"]
    assert data.report.rows == data.report.kept + data.report.unknown_items + data.report.duplicates


def test_no_indexed_items_is_a_clear_error(tmp_path):
    path = _write(tmp_path, "f.csv", "user_id,item_id\nu1,a\nu2,b\n")
    with pytest.raises(InteractionError, match="none of the interactions references an indexed item"):
        read_interactions(path, ReadConfig(known_items=frozenset({"x"})))


@pytest.mark.parametrize("text", ["", "user_id,item_id,value\n", "\n\n"])
def test_empty_file_is_a_clear_error(tmp_path, text):
    with pytest.raises(InteractionError, match="holds no interactions"):
        read_interactions(_write(tmp_path, "g.csv", text))


def test_all_rows_invalid_is_a_clear_error(tmp_path):
    with pytest.raises(InteractionError, match="none of 1 rows is valid"):
        read_interactions(_write(tmp_path, "h.csv", "user_id,item_id,value\nu1,i1,abc\n"))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(InteractionError, match="does not exist"):
        read_interactions(tmp_path / "nope.csv")


def test_jsonl_with_a_broken_line(tmp_path):
    lines = [json.dumps({"user_id": "u1", "item_id": 7, "value": 2, "timestamp": 5}), "{not json",
             json.dumps({"user_id": "u2", "item_id": "8", "value": True})]
    data = read_interactions(_write(tmp_path, "i.jsonl", "\n".join(lines) + "\n"))
    assert data.interactions == [Interaction("u1", "7", 2.0, 5.0)]
    assert [(e.line, e.field) for e in data.report.rejected] == [(2, None), (3, "value")]


def test_movielens_inter_file(ml100k_dir):
    data = read_interactions(ml100k_dir / "ml-100k.inter")
    assert data.report.kept == 100_000 and not data.report.rejected
    assert len({e.user_id for e in data.interactions}) == 943
    assert data.interactions[0] == Interaction("196", "242", 3.0, 881250949.0)


def test_build_matrix_sums_repeats_and_keeps_given_order():
    events = [Interaction("u1", "b", 1.0, 5.0), Interaction("u1", "b", 2.0, 9.0), Interaction("u2", "a", 1.0, 1.0),
              Interaction("u2", "zz", 1.0, 1.0)]
    im = build_matrix(events, item_ids=["a", "b", "c"])
    assert im.user_ids.tolist() == ["u1", "u2"]
    np.testing.assert_array_equal(im.matrix.toarray(), [[0, 3, 0], [1, 0, 0]])
    np.testing.assert_array_equal(im.last_seen, [1.0, 9.0, 0.0])


def test_a_byte_order_mark_does_not_hide_the_user_column(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffuser_id,item_id\nu1,i1\n".encode("utf-8"))
    assert read_interactions(path).interactions == [Interaction("u1", "i1", 1.0, 0.0)]
