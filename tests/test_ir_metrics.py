"""IR metric functions checked against values computed by hand."""

from __future__ import annotations

import math

import pytest

from osreco.evaluation.metrics import (
    coverage,
    dcg_at_k,
    mean,
    ndcg_binary_at_k,
    ndcg_graded_at_k,
    recall_capped_at_k,
    recall_uncapped_at_k,
    violation_rate,
)


def test_dcg_linear_gain_log2_discount():
    # 3/log2(2) + 2/log2(3) + 1/log2(4) = 3 + 1.2618595 + 0.5
    assert dcg_at_k([3, 2, 1], 3) == pytest.approx(3 + 2 / math.log2(3) + 0.5, abs=1e-12)
    assert dcg_at_k([3, 2, 1], 1) == 3.0


def test_ndcg_graded_by_hand():
    # top-3 = a, b, c with gains 3, 0, 5 -> DCG = 3 + 0 + 5/2 = 5.5
    # ideal gains 5, 4, 3 -> 5 + 4/log2(3) + 3/2 = 9.0237190
    grades = {"a": 3, "c": 5, "e": 4}
    value = ndcg_graded_at_k(["a", "b", "c", "d"], grades, 3)
    assert value == pytest.approx(5.5 / (5 + 4 / math.log2(3) + 1.5), abs=1e-12)
    assert value == pytest.approx(0.609505, abs=1e-6)


def test_ndcg_perfect_empty_and_miss():
    grades = {"x": 5, "y": 2}
    assert ndcg_graded_at_k(["x", "y", "z"], grades, 10) == 1.0
    assert ndcg_graded_at_k(["z", "w"], grades, 10) == 0.0
    assert ndcg_graded_at_k(["x"], {}, 10) == 0.0
    # swapped order: (2 + 5/log2 3) / (5 + 2/log2 3)
    assert ndcg_graded_at_k(["y", "x"], grades, 2) == pytest.approx(
        (2 + 5 / math.log2(3)) / (5 + 2 / math.log2(3)), abs=1e-12)


def test_ndcg_counts_duplicates_once():
    assert ndcg_graded_at_k(["x", "x", "y"], {"x": 1, "y": 1}, 2) == 1.0


def test_recall_normalized_by_min_k_relevant():
    ranked = ["a", "b", "c", "d", "e"]
    assert recall_capped_at_k(ranked, {"b", "e", "x"}, 3) == pytest.approx(1 / 3)
    assert recall_capped_at_k(ranked, {"b", "e", "x"}, 5) == pytest.approx(2 / 3)
    twelve = {f"r{i}" for i in range(12)}
    assert recall_capped_at_k([f"r{i}" for i in range(5)] + ["n"] * 5, twelve, 10) == 0.5
    assert recall_capped_at_k(ranked, set(), 10) == 0.0


def test_binary_ndcg_and_uncapped_recall_by_hand():
    # gain 1 per relevant item; the ideal puts min(k, |relevant|) hits first
    assert ndcg_binary_at_k(["x", "a"], {"a"}, 10) == pytest.approx(1 / math.log2(3), abs=1e-12)
    assert ndcg_binary_at_k(["a", "b"], {"a", "b"}, 10) == 1.0
    assert ndcg_binary_at_k(["a", "z", "b"], {"a", "b", "c"}, 2) == pytest.approx(
        1 / (1 + 1 / math.log2(3)), abs=1e-12)
    assert ndcg_binary_at_k(["a"], set(), 10) == 0.0
    # graded NDCG with equal grades is binary NDCG
    assert ndcg_binary_at_k(["b", "x", "a"], {"a", "b"}, 3) == ndcg_graded_at_k(["b", "x", "a"], {"a": 1, "b": 1}, 3)
    # hits / |relevant|, unlike the capped recall
    twelve = {f"r{i}" for i in range(12)}
    assert recall_uncapped_at_k([f"r{i}" for i in range(5)] + ["n"] * 5, twelve, 10) == pytest.approx(5 / 12)
    assert recall_uncapped_at_k(["a", "b", "c"], {"a", "c", "z", "y"}, 2) == 0.25
    assert recall_uncapped_at_k(["a"], set(), 10) == 0.0


def test_coverage_union_of_top_k():
    assert coverage([["a", "b", "c"], ["b", "c", "d"]], 10, 2) == pytest.approx(0.3)
    assert coverage([], 5, 10) == 0.0
    with pytest.raises(ValueError):
        coverage([["a"]], 0, 10)


def test_violation_rate_micro_average():
    lists = [["a", "b"], ["c", "d", "e"]]
    preds = [lambda i: i != "b", lambda i: True]
    assert violation_rate(lists, preds, 2) == pytest.approx(1 / 4)
    assert violation_rate([[], []], preds, 2) == 0.0
    with pytest.raises(ValueError):
        violation_rate(lists, preds[:1], 2)


def test_bad_k_and_mean():
    with pytest.raises(ValueError):
        recall_capped_at_k(["a"], {"a"}, 0)
    with pytest.raises(ValueError):
        ndcg_graded_at_k(["a"], {"a": -1}, 1)
    with pytest.raises(ValueError):
        ndcg_binary_at_k(["a"], {"a"}, 0)
    with pytest.raises(ValueError):
        recall_uncapped_at_k(["a"], {"a"}, 0)
    assert mean([]) == 0.0
    assert mean([0.5, 1.0]) == 0.75
