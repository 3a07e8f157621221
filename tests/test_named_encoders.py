"""Named encoders without a node: the index contract (`embedding_<name>`, `_meta.encoders`) and the
writer's view of several encoders; the sidecar picks the encoder of the query's language."""

from __future__ import annotations

import numpy as np
import pytest

from osreco.ingest.encoders import TextEncoders
from osreco.ingest.errors import ConfigError, IndexError_
from osreco.ingest.index_spec import IndexSpec


@pytest.fixture(scope="module")
def encoders(tiny_bundle, minilm_bundle):
    from osreco.exporter import Encoder

    return TextEncoders(Encoder(minilm_bundle, threads=1), {"zh": Encoder(tiny_bundle, threads=1)})


def test_spec_maps_one_knn_field_per_encoder(encoders):
    spec = IndexSpec.from_encoder(encoders, "shop")
    props = spec.mappings()["properties"]
    assert props["embedding"]["dimension"] == 384 and props["embedding_zh"]["dimension"] == 32
    meta = spec.meta()
    assert meta["artifact_id"] == encoders.default.artifact_id  # the default bundle is still the index's
    zh_id = encoders.named["zh"].artifact_id
    assert meta["encoders"]["zh"] == {"field": "embedding_zh", "dim": 32, "artifact_id": zh_id, "model": "tiny-bert",
                                      "language": "zh"}
    spec.check_meta(meta, "shop-v1")


def test_check_meta_refuses_another_or_a_missing_named_encoder(encoders):
    spec = IndexSpec.from_encoder(encoders, "shop")
    meta = spec.meta()
    zh = dict(meta["encoders"]["zh"])  # the index was built with a 512-d Chinese encoder
    other = {**meta, "encoders": {"zh": {**zh, "dim": 512}}}
    with pytest.raises(IndexError_, match="embedding_zh with dim=512") as e:
        spec.check_meta(other, "shop-v1")
    assert "--rebuild" in (e.value.fix or "")
    plain = IndexSpec.from_encoder(encoders.default, "shop")
    with pytest.raises(IndexError_, match="zh encoder") as e:
        plain.check_meta(meta, "shop-v1")
    assert "--bundle-zh" in (e.value.fix or "")
    assert "encoders" not in plain.meta()


def test_every_encoder_embeds_and_the_content_hash_follows_them(encoders):
    texts = ["红色跑鞋", "red running shoes"]
    out = encoders.encode_fields(texts)
    assert encoders.fields == ("embedding", "embedding_zh")
    assert out["embedding"].shape == (2, 384) and out["embedding_zh"].shape == (2, 32)
    assert np.allclose(out["embedding"], encoders.encode_items(texts))
    assert encoders.content_id != encoders.artifact_id
    assert TextEncoders(encoders.default).content_id == encoders.artifact_id  # no named: hashes unchanged


def test_bad_encoder_names_and_kinds_are_refused(encoders, tiny_reranker_bundle):
    from osreco.exporter import Encoder

    with pytest.raises(ConfigError, match="short lowercase word"):
        TextEncoders(encoders.default, {"Chinese!": encoders.named["zh"]})
    with pytest.raises(ConfigError, match="classification bundle"):
        TextEncoders(encoders.default, {"zh": Encoder(tiny_reranker_bundle, threads=1)})


def test_sidecar_embeds_a_query_with_the_encoder_of_its_language(encoders):
    from osreco.plugin.degradations import Degradations
    from osreco.plugin.metrics import Metrics
    from osreco.plugin.models import ServedModels
    from osreco.plugin.query import QueryOptions

    metrics = Metrics()
    models = ServedModels(metrics, encoders.default, named={"zh": encoders.named["zh"]})
    deg = Degradations(metrics)
    assert models.embed_query("红色跑鞋", deg, language="zh").shape == (32,)
    assert models.embed_query("red shoes", deg, language="en").shape == (384,)
    assert models.search_options(QueryOptions("shop"), "zh").fields.embedding == "embedding_zh"
    assert models.search_options(QueryOptions("shop"), "en").fields.embedding == "embedding"
    broken = ServedModels(metrics, encoders.default, named_errors={"zh": "bundle x failed to load"})
    assert broken.embed_query("红色跑鞋", deg, language="zh").shape == (384,)
    assert deg.items == [{"kind": "encoder_zh",
                          "message": "the default encoder embeds this query: bundle x failed to load"}]
