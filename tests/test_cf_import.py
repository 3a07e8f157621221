"""`osreco cf import`: Spark MLlib ALS factor tables (Parquet) into a served CF model."""

from __future__ import annotations

import json
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from opensearchpy.helpers import bulk

from osreco.cf.cli import cf
from osreco.cf.errors import InteractionError
from osreco.cf.model import CFConfig, CFModel
from osreco.cf.privacy import PrivacyConfig, pseudonymize
from osreco.cf.spark_import import FactorTable, build_model, read_factor_table
from osreco.ingest.connection import OpenSearchConfig
from osreco.ingest.index_spec import IndexSpec
from osreco.plugin.app import create_app
from osreco.plugin.config import DEV_HMAC_KEY, SidecarConfig

GROUP_A = list(range(1, 11))
GROUP_B = list(range(11, 21))
COLD_ITEM = 21  # in the catalog, not in Spark's factors


def write_spark_folder(folder, ids: list[int], features: list[list[float]], parts: int = 2) -> None:
    """The layout ``df.write.parquet(folder)`` leaves: part files, _SUCCESS and .crc files."""
    folder.mkdir(parents=True)
    schema = pa.schema([("id", pa.int32()), ("features", pa.list_(pa.float32()))])
    step = -(-len(ids) // parts)
    for p in range(parts):
        chunk = slice(p * step, (p + 1) * step)
        pq.write_table(pa.table({"id": ids[chunk], "features": features[chunk]}, schema=schema),
                       folder / f"part-0000{p}-3f1c-4e2a-b5a1-c000.snappy.parquet")
        (folder / f".part-0000{p}-3f1c-4e2a-b5a1-c000.snappy.parquet.crc").write_bytes(b"crc")
    (folder / "_SUCCESS").write_text("")


def _item_vec(item: int) -> list[float]:
    base = [1.0, 0.0, 0.0, 0.0] if item in GROUP_A else [0.0, 1.0, 0.0, 0.0]
    return [b + 0.01 * (item % 10) * (k == 2) for k, b in enumerate(base)]


@pytest.fixture
def spark_tables(tmp_path):
    items = GROUP_A + GROUP_B + [999]  # 999: not in the catalog (counted, skipped)
    write_spark_folder(tmp_path / "itemFactors", items, [_item_vec(i) for i in items])
    write_spark_folder(tmp_path / "userFactors", [7, 8], [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], parts=1)
    return tmp_path / "itemFactors", tmp_path / "userFactors"


def _catalog(client, alias: str) -> None:
    spec = IndexSpec(alias=alias, dim=2, artifact_id="test-artifact", cf_dim=4)
    client.indices.create(index=spec.versioned_name(1), body=spec.index_body())
    client.indices.put_alias(index=spec.versioned_name(1), name=alias)
    docs = [(i, [1.0, 0.0]) for i in GROUP_A] + [(i, [0.0, 1.0]) for i in GROUP_B + [COLD_ITEM]]
    bulk(client, ({"_index": alias, "_id": str(i), "_source": {"item_id": str(i), "title": f"item {i}",
                                                                "embedding": emb, "popularity": 1.0}}
                  for i, emb in docs), refresh=True)


@pytest.mark.integration
def test_import_stores_factors_users_and_a_model_the_sidecar_serves(os_client, index_name, spark_tables,
                                                                   tmp_path, monkeypatch, opensearch_url):
    monkeypatch.setenv("OSRECO_HMAC_KEY", DEV_HMAC_KEY)  # the key the dev-mode sidecar pseudonymizes with
    _catalog(os_client, index_name)
    model_dir = tmp_path / "model"
    result = CliRunner().invoke(cf, ["import", str(spark_tables[0]), str(spark_tables[1]), "--index", index_name,
                                     "--model-dir", str(model_dir), "--json"])
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert result.exit_code == 1, result.output  # one Spark item id is not in the catalog
    assert summary["items_read"] == 21 and summary["items_kept"] == 20
    assert summary["items_not_in_catalog"] == 1 and summary["items_not_in_catalog_sample"] == ["999"]
    assert summary["users"] == 2 and summary["dim"] == 4 and summary["items_from_content"] == 1

    doc = os_client.get(index=index_name, id="3")["_source"]
    assert doc["cf_vector"] == pytest.approx(_item_vec(3))
    user_key = pseudonymize("7", DEV_HMAC_KEY)
    stored = os_client.get(index=f"{index_name}-users", id=user_key)["_source"]
    assert stored["cf_vector"] == [1.0, 0.0, 0.0, 0.0]
    model = CFModel.load(model_dir)
    assert model.user_vector(user_key).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert model.meta["source"] == "spark-als" and model.meta["import"]["items_not_in_catalog"] == 1
    # the cold catalog item got a factor from its content (group B's embedding)
    cold = model.item_factors[model.item_positions([str(COLD_ITEM)])[0]]
    assert cold[1] > 0.5 and abs(cold[0]) < 0.5

    config = SidecarConfig(opensearch=OpenSearchConfig(url=opensearch_url), alias=index_name, dev_mode=True,
                           cf_model_dir=str(model_dir), bundle_reload_s=0, embed_vocabulary=False)
    body = create_app(config).test_client().get("/v1/recommend?user_id=7&k=5").get_json()
    ids = [r["item_id"] for r in body["results"]]
    assert body["personalized"] and len(ids) == 5 and set(ids) <= {str(i) for i in GROUP_A}, body
    body = create_app(config).test_client().get("/v1/recommend?user_id=8&k=5").get_json()
    assert {r["item_id"] for r in body["results"]} <= {str(i) for i in GROUP_B + [COLD_ITEM]}, body


def _invoke(tables, tmp_path) -> tuple[int, str]:
    result = CliRunner().invoke(cf, ["import", str(tables[0]), str(tables[1]), "--index", "no-such-index",
                                     "--model-dir", str(tmp_path / "model")], env={"OSRECO_HMAC_KEY": "k" * 32})
    return result.exit_code, result.output


@pytest.mark.parametrize("case, expected", [
    ("missing_column", "lack column(s) features"),
    ("ragged", "row 2 (id 2): 3 features, earlier rows have 4"),
    ("nan", "row 2 (id 2): features hold NaN"),
    ("duplicate", "id 1 appears twice"),
    ("string_ids", "column id is string"),
    ("empty_folder", "holds no .parquet file"),
])
def test_bad_tables_are_one_clear_error_naming_file_and_row(tmp_path, spark_tables, case, expected):
    bad = tmp_path / "bad"
    if case == "missing_column":
        bad.mkdir()
        pq.write_table(pa.table({"id": [1], "vector": [[1.0]]}), bad / "part-00000.parquet")
    elif case == "ragged":
        write_spark_folder(bad, [1, 2], [[1.0, 0, 0, 0], [1.0, 0, 0]], parts=1)
    elif case == "nan":
        write_spark_folder(bad, [1, 2], [[1.0, 0, 0, 0], [float("nan"), 0, 0, 0]], parts=1)
    elif case == "duplicate":
        write_spark_folder(bad, [1, 1], [[1.0, 0, 0, 0], [1.0, 0, 0, 0]], parts=2)
    elif case == "string_ids":
        bad.mkdir()
        pq.write_table(pa.table({"id": ["a"], "features": [[1.0]]}), bad / "part-00000.parquet")
    else:
        bad.mkdir()
        (bad / "_SUCCESS").write_text("")
    code, output = _invoke((bad, spark_tables[1]), tmp_path)
    assert code == 2, output
    assert expected in output and "fix:" in output and "Traceback" not in output
    assert not (tmp_path / "model").exists()


def test_read_factor_table_reads_every_part_in_order(spark_tables):
    table = read_factor_table(spark_tables[0], "item")
    assert table.ids == [str(i) for i in GROUP_A + GROUP_B + [999]]
    assert table.factors.shape == (21, 4) and table.factors.dtype == np.float32
    assert len(table.files) == 2


def test_no_spark_item_in_the_catalog_is_an_error():
    items = FactorTable(["1", "2"], np.ones((2, 4), np.float32), ["items.parquet"])
    users = FactorTable(["7"], np.ones((1, 4), np.float32), ["users.parquet"])
    with pytest.raises(InteractionError, match="none of the 2 Spark item ids"):
        build_model(items, users, PrivacyConfig(b"k" * 32), {"a", "b"}, CFConfig(factors=4))
    with pytest.raises(InteractionError, match="item factors have 4 features, user factors 3"):
        build_model(items, FactorTable(["7"], np.ones((1, 3), np.float32)), PrivacyConfig(b"k" * 32), {"1"},
                    CFConfig(factors=4))
