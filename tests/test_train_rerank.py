"""Reranker examples, training (tiny BERT, CPU), export to a bundle and the runtime `rerank`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from osreco.exporter.errors import ConfigError
from osreco.training.data import MovieLensConfig, TrainingItem, movielens_catalog, movielens_events
from osreco.training.reranker import RerankExample, build_rerank_examples, rerank, roc_auc

CATALOG = {i: TrainingItem(i, f"T{i}", "", (), None) for i in ("a", "b", "c", "d")}


def ev(item, kind, query, user="u1"):
    return {"user_id": user, "item_id": item, "kind": kind, "value": 1.0, "timestamp": 1, "query": query}


def test_build_rerank_examples_exact():
    events = [ev("a", "click", "q1"), ev("b", "skip", "q1"), ev("a", "skip", "q1"),  # clicked wins
              ev("c", "impression", "q2"), ev("d", "view", "q2"),                    # view: unlabeled
              {"user_id": "u1", "item_id": "b", "kind": "purchase", "timestamp": 2}]  # no query
    assert build_rerank_examples(events, CATALOG, sampled_negatives=0) == [
        RerankExample("q1", "Ta", 1.0, "u1", "a"), RerankExample("q1", "Tb", 0.0, "u1", "b"),
        RerankExample("q2", "Tc", 0.0, "u1", "c")]
    sampled = build_rerank_examples(events, CATALOG, sampled_negatives=3, seed=1)[3:]
    assert sampled and all(x.query == "q1" and x.label == 0.0 and x.item_id in ("c", "d") for x in sampled)
    with pytest.raises(ConfigError):
        build_rerank_examples(events, CATALOG, sampled_negatives=-1)


def test_roc_auc_exact():
    assert roc_auc([0.9, 0.1, 0.5, 0.5], [1, 0, 1, 0]) == 0.875
    assert np.isnan(roc_auc([1.0], [1]))


class FakeScorer:
    """Scores a pair by the number of query words found in the text (pure-unit stand-in)."""

    def __init__(self):
        self.seen = []

    def score_pairs(self, pairs, batch_size=32):
        self.seen.append(list(pairs))
        return np.array([sum(w in t for w in q.split()) for q, t in pairs], dtype=np.float32)


def test_rerank_reorders_only_the_head_stably():
    texts = ["x", "red shoe", "red", "red shoe cheap", "shoe"]
    scorer = FakeScorer()
    order, scores = rerank(scorer, "red shoe cheap", texts, top_n=4)
    assert order == [3, 1, 2, 0, 4]
    assert scores.tolist() == [0.0, 2.0, 1.0, 3.0]
    assert len(scorer.seen[0]) == 4
    assert rerank(scorer, "q", [], top_n=3)[0] == []
    assert rerank(scorer, "red", ["a", "red", "b"])[0] == [1, 0, 2]   # ties keep incoming order
    with pytest.raises(ConfigError):
        rerank(scorer, "q", texts, top_n=0)


@pytest.fixture(scope="module")
def tiny_classifier_dir(tmp_path_factory, minilm_dir):
    from osreco.training.loop import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tinyc") / "bert", minilm_dir, num_labels=1, seed=0)


def test_reranker_training_lowers_loss_and_exports(tiny_classifier_dir, tmp_path):
    import torch

    from osreco.exporter import Encoder
    from osreco.training.encoder import split_pairs
    from osreco.training.loop import LoopConfig
    from osreco.training.reranker import (
        RerankTrainConfig,
        _example_loss,
        export_reranker,
        load_reranker,
        train_reranker,
    )

    torch.set_num_threads(1)
    catalog = movielens_catalog()
    events = movielens_events(MovieLensConfig(max_users=10, queries_per_user=4), catalog=catalog)
    examples = build_rerank_examples(events, catalog, sampled_negatives=1)
    train, dev = split_pairs(examples, 0.2, seed=5)
    train = train[:48]

    def loss_of(model_dir):
        model, tok = load_reranker(model_dir, "cpu")
        model.eval()
        with torch.no_grad():
            return float(_example_loss(model, tok, train, 48, "cpu"))

    config = RerankTrainConfig(tiny_classifier_dir, tmp_path / "rr",
                               LoopConfig(epochs=3, batch_size=16, lr=2e-3, threads=1, progress=False, seed=5),
                               max_length=48, dev_max=32)
    result = train_reranker(config, train, dev)
    assert loss_of(result.out_dir) < loss_of(tiny_classifier_dir) - 0.02
    assert {"dev_loss", "dev_acc", "dev_auc"} <= set(result.history[-1])
    assert json.loads((result.out_dir / "training" / "training.json").read_text())["task"] == "classification"
    # a barely trained tiny model scores everything alike: int8 rank agreement is meaningless
    # there, so the plumbing test exports fp32 (the real reranker ships int8).
    manifest = export_reranker(result.out_dir, tmp_path / "bundle", quantize=None, threads=1)
    assert manifest.task == "classification"
    encoder = Encoder(tmp_path / "bundle", threads=1)
    texts = [catalog[i].document for i in ("1", "2", "3")]
    order, scores = rerank(encoder, "a 90s comedy", texts, top_n=2)
    assert sorted(order) == [0, 1, 2] and order[2] == 2 and scores.shape == (2,)
    model, tok = load_reranker(result.out_dir, "cpu")
    with torch.no_grad():
        ref = [float(_logit) for _logit in model(**tok(["a 90s comedy"] * 2, texts[:2], return_tensors="pt",
                                                       padding=True)).logits[:, 0]]
    assert np.allclose(scores, ref, atol=1e-3)


def test_reranker_needs_both_labels(tiny_classifier_dir, tmp_path):
    from osreco.training.reranker import RerankTrainConfig, train_reranker

    only_pos = [RerankExample("q", "t", 1.0, "u", "1")] * 4
    with pytest.raises(ConfigError, match="positives and negatives"):
        train_reranker(RerankTrainConfig(tiny_classifier_dir, tmp_path / "rr"), only_pos, [])
