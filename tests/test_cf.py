"""Collaborative models on designed data with a known right answer (no OpenSearch)."""

from __future__ import annotations

import math
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest
from scipy import sparse

from osreco.cf.errors import InteractionError
from osreco.cf.interactions import Interaction
from osreco.cf.model import CFConfig, CFModel, top_k
from osreco.cf.train import bm25_item_user, decayed_popularity, train_cooccurrence, train_models
from osreco.evaluation.cf import time_split
from osreco.evaluation.metrics import coverage, ndcg_binary_at_k, recall_uncapped_at_k
from osreco.ingest.errors import ConfigError

GROUP_A = [f"a{i}" for i in range(10)]
GROUP_B = [f"b{i}" for i in range(10)]
SMALL = CFConfig(factors=4, iterations=20, regularization=0.1, ease_lambda=5.0, threads=1, seed=1)


def _checkerboard() -> tuple[list[Interaction], dict[str, set[str]]]:
    """20 users per group; each saw all items of its group but two (the right answers)."""
    events, missing = [], {}
    for group, items in (("A", GROUP_A), ("B", GROUP_B)):
        for u in range(20):
            user = f"{group}{u}"
            skip = {items[u % 10], items[(u + 3) % 10]}
            missing[user] = skip
            events += [Interaction(user, it, 1.0, float(t)) for t, it in enumerate(items) if it not in skip]
    return events, missing


@pytest.fixture(scope="module")
def board():
    events, missing = _checkerboard()
    return train_models(events, SMALL), events, missing


def _history(events, user):
    return [e.item_id for e in events if e.user_id == user]


def test_als_recommends_the_missing_items_of_the_users_group(board):
    model, events, missing = board
    for user in ("A0", "A7", "B4", "B19"):
        recs = model.recommend(model.user_vector(user), exclude=_history(events, user), k=2)
        assert {item for item, _ in recs} == missing[user]


def test_ease_recommends_the_missing_items_of_the_users_group(board):
    model, events, missing = board
    assert isinstance(model.item_item, np.ndarray)
    for user in ("A1", "B2"):
        hist = _history(events, user)
        best = top_k(model.item_item_scores(hist), 2, model.item_positions(hist))
        assert {str(model.item_ids[i]) for i in best} == missing[user]


def test_cooccurrence_keeps_items_within_their_group():
    events, _ = _checkerboard()
    model = train_models(events, CFConfig(factors=4, iterations=5, threads=1, max_ease_items=5, cooc_neighbors=3))
    assert sparse.issparse(model.item_item) and model.meta["models"][1] == "cooccurrence"
    scores = model.item_item_scores(["a0", "a1"])
    best = {str(model.item_ids[i]) for i in top_k(scores, 5, model.item_positions(["a0", "a1"]))}
    assert best <= set(GROUP_A)


def test_fold_in_moves_top_items_toward_the_clicks(board):
    model, _, _ = board
    hist = ["a1", "a2", "a3"]
    before = {item for item, _ in model.recommend(model.fold_in(hist), exclude=hist, k=5)}
    assert before <= set(GROUP_A)
    clicks = ["b0", "b1", "b2", "b3", "b4", "b5"]
    after_vec = model.fold_in(hist + clicks, [1.0] * len(hist) + [3.0] * len(clicks))
    after = {item for item, _ in model.recommend(after_vec, exclude=hist + clicks, k=5)}
    assert after & set(GROUP_B), after
    b_rows = model.item_positions(GROUP_B)
    assert model.als_scores(after_vec)[b_rows].mean() > model.als_scores(model.fold_in(hist))[b_rows].mean()


def test_fold_in_matches_implicits_user_solve():
    from implicit.cpu.als import user_factor

    rng = np.random.default_rng(0)
    events = [Interaction(f"u{u}", f"i{i}", float(rng.integers(1, 5)), float(u))
              for u in range(50) for i in rng.choice(30, 6, replace=False)]
    config = CFConfig(factors=6, iterations=5, alpha=2.0, threads=1)
    model = train_models(events, config)
    weighted, _ = bm25_item_user(_matrix(model, events), config.bm25_k1, config.bm25_b)
    row = model.user_keys.tolist().index("u7")
    expected = user_factor(model.item_factors.astype(np.float64), model._gram, config.alpha * weighted, row,
                           config.regularization, config.factors)
    hist = [e for e in events if e.user_id == "u7"]
    np.testing.assert_allclose(model.fold_in([e.item_id for e in hist], [e.value for e in hist]), expected,
                               rtol=1e-4, atol=1e-5)


def _matrix(model, events):
    from osreco.cf.interactions import build_matrix

    return build_matrix(events, item_ids=model.item_ids.tolist(), user_ids=model.user_keys.tolist()).matrix


def test_fold_in_of_unknown_items_is_a_zero_vector(board):
    model, _, _ = board
    assert not model.fold_in(["nope"]).any()


def test_cold_user_gets_popularity_then_session_neighbours(board):
    model, _, _ = board
    model.popularity = np.arange(len(model.item_ids), dtype=np.float64)  # b9 most popular
    assert [i for i, _ in model.recommend_cold(k=3)] == ["b9", "b8", "b7"]
    steered = [i for i, _ in model.recommend_cold(session_items=["a1", "a2", "a3"], k=5)]
    assert set(steered) <= set(GROUP_A) - {"a1", "a2", "a3"}


def test_new_item_gets_a_factor_from_its_content(board):
    model, events, missing = board
    embeddings = {it: np.array([1.0, 0.0, 0.1 * k]) for k, it in enumerate(GROUP_A)}
    embeddings |= {it: np.array([0.0, 1.0, 0.1 * k]) for k, it in enumerate(GROUP_B)}
    cold = model.fit_content(embeddings)
    assert cold == []
    new_factor = model.predict_item_factors(np.array([0.0, 1.0, 0.3]))[0]
    b_user, a_user = model.user_vector("B3"), model.user_vector("A3")
    assert new_factor @ b_user > new_factor @ a_user


def test_items_without_interactions_get_content_factors():
    events, _ = _checkerboard()
    model = train_models(events, SMALL, item_ids=GROUP_A + GROUP_B + ["b_new"])
    embeddings = {it: np.array([1.0, 0.0]) for it in GROUP_A} | {it: np.array([0.0, 1.0]) for it in GROUP_B}
    embeddings["b_new"] = np.array([0.0, 1.0])
    assert model.fit_content(embeddings) == ["b_new"]
    hist = GROUP_B[:8]
    recs = [i for i, _ in model.recommend(model.fold_in(hist), exclude=hist, k=3)]
    assert "b_new" in recs


def test_save_and_load_round_trip(tmp_path, board):
    model, _, _ = board
    model.save(tmp_path)
    loaded = CFModel.load(tmp_path)
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
    np.testing.assert_array_equal(loaded.item_item, model.item_item)
    assert loaded.item_ids.tolist() == model.item_ids.tolist() and loaded.config == model.config
    np.testing.assert_allclose(loaded.fold_in(["a1", "a2"]), model.fold_in(["a1", "a2"]))
    assert loaded.without_user("A0").user_vector("A0") is None


def test_load_from_an_empty_dir_is_a_clear_error(tmp_path):
    with pytest.raises(InteractionError, match="no readable CF model"):
        CFModel.load(tmp_path)


def test_decayed_popularity_halves_per_half_life():
    day = 86400.0
    events = [Interaction("u", "x", 1.0, 10 * day), Interaction("v", "y", 1.0, 0.0), Interaction("w", "y", 1.0, 0.0)]
    np.testing.assert_allclose(decayed_popularity(events, ["x", "y"], half_life_days=10), [1.0, 1.0])


def test_time_split_holds_out_each_users_newest_events():
    events = [Interaction("u", f"i{t}", 1.0, float(t)) for t in range(10)]
    events += [Interaction("short", "i1", 1.0, 1.0), Interaction("u", "i0", 1.0, 20.0)]  # a repeat is not held out
    train, test = time_split(events, test_fraction=0.2)
    assert test == {"u": {"i8", "i9"}}
    assert {e.item_id for e in train if e.user_id == "u"} == {f"i{t}" for t in range(8)}
    assert any(e.user_id == "short" for e in train)


def test_metrics_by_exact_value():
    assert recall_uncapped_at_k(["a", "b", "c"], {"a", "c", "z", "y"}, k=2) == 0.25
    assert ndcg_binary_at_k(["x", "a"], {"a"}, k=10) == pytest.approx(1 / math.log2(3))
    assert ndcg_binary_at_k(["a", "b"], {"a", "b"}, k=10) == 1.0
    assert coverage([["a", "b"], ["b", "c"]], catalog_size=6, k=10) == 0.5
    assert top_k(np.array([0.1, 0.9, 0.9, 0.5]), 3, exclude_idx=[3]).tolist() == [1, 2, 0]


def test_train_cooccurrence_is_cosine_with_zero_diagonal():
    x = sparse.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1]], dtype=np.float32))
    sim = train_cooccurrence(x, neighbors=5).toarray()
    np.testing.assert_allclose(sim, [[0, 2 / math.sqrt(6), 0], [2 / math.sqrt(6), 0, 1 / math.sqrt(3)],
                                     [0, 1 / math.sqrt(3), 0]], rtol=1e-5)


def test_config_validation():
    with pytest.raises(ConfigError):
        CFConfig(weighting="tfidf")
    with pytest.raises(ConfigError):
        CFConfig(blend=(0.0, 0.0, 0.0))
    with pytest.raises(InteractionError):
        train_models([], SMALL)


def test_serving_imports_stay_light():
    import subprocess
    import sys

    code = ("import sys, osreco.cf.model, osreco.cf.store, osreco.cf.events; "
            "print(sorted(m for m in ('torch', 'transformers', 'optimum', 'implicit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_exit_codes_without_a_usable_node(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from osreco.cf.cli import cf, users

    (tmp_path / "c.csv").write_text("user_id,item_id\nu,a\n")
    monkeypatch.delenv("OSRECO_HMAC_KEY", raising=False)
    result = CliRunner().invoke(cf, ["train", str(tmp_path / "c.csv"), "--index", "x"])
    assert result.exit_code == 2 and "OSRECO_HMAC_KEY is not set" in result.output
    result = CliRunner().invoke(cf, ["train", "--index", "x"])
    assert result.exit_code == 2 and "either INTERACTIONS or --from-events" in result.output
    monkeypatch.setenv("OSRECO_HMAC_KEY", "k" * 32)
    monkeypatch.setenv("OPENSEARCH_URL", "http://127.0.0.1:1")
    result = CliRunner().invoke(users, ["forget", "alice", "--index", "x"])
    assert result.exit_code == 3 and result.output.startswith("error:")


def test_cold_paths_never_error(board):
    model, _, _ = board
    assert len(model.recommend_cold(session_items=["unknown-item"], k=3)) == 3
    assert len(model.recommend_cold(k=1000)) == len(model.item_ids)
    assert not model.fold_in([]).any()
    assert model.user_vector("never-seen") is None
    recs = model.recommend(model.fold_in(["a1"]), exclude=["a1"], k=50)
    assert len(recs) == len(model.item_ids) - 1 and "a1" not in {i for i, _ in recs}
