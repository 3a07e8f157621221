"""Report, targets, chart and intent scoring of `osreco eval` (pure, no node)."""

from __future__ import annotations

import json
import math

import pytest

from osreco.evaluation.data import Constraints, EvalQuery
from osreco.evaluation.intent import run_intent
from osreco.evaluation.report import compute_targets, numbers_in_unit_interval, to_markdown, write_chart
from osreco.evaluation.tasks import pick_queries
from osreco.plugin.errors import ConfigError


def _report(full_ndcg: float, violations: float, blend: float) -> dict:
    search = {"bm25": {"ndcg": 0.2, "recall": 0.3, "violation_rate": 0.4},
              "knn": {"ndcg": 0.25, "recall": 0.3, "violation_rate": 0.5},
              "osreco": {"ndcg": full_ndcg, "recall": 0.5, "violation_rate": violations}}
    rec = {"popularity": {"recall": 0.05, "ndcg": 0.1, "coverage": 0.04},
           "cf": {"recall": 0.1, "ndcg": 0.2, "coverage": 0.5},
           "blend": {"recall": 0.1, "ndcg": blend, "coverage": 0.3}}
    return {"search": {"k": 10, "queries": 3, "pairs": 6, "variants": search},
            "recommendation": {"k": 10, "users": 5, "variants": rec},
            "intent": {"golden": "g.jsonl", "cases": 2,
                       "languages": {"en": {"cases": 2, "exact": 1, "accuracy": 0.5}}}}


def test_targets_met_and_missed():
    met = compute_targets(_report(0.3, 0.0, 0.2))
    assert [t["met"] for t in met] == [True, True, True]
    assert met[0]["value"] == pytest.approx(0.3 / 0.25 - 1)
    missed = compute_targets(_report(0.26, 0.01, 0.19))
    assert [t["met"] for t in missed] == [False, False, False]
    assert missed[2]["value"] == pytest.approx(-0.01)
    assert compute_targets({}) == []


def test_markdown_has_every_table_and_ratio():
    report = _report(0.3, 0.0, 0.2)
    report["targets"] = compute_targets(report)
    md = to_markdown(report)
    assert "| osreco | 0.3000 | 0.5000 | 0.0000 | 1.20x |" in md  # vs the best single signal (knn)
    assert "| popularity | 0.0500 | 0.1000 | 0.0400 | 1.00x |" in md
    assert "| en | 2 | 1 | 0.5000 |" in md
    assert "### Targets" in md and "NO" not in md


def test_unit_interval_check_names_bad_values():
    report = _report(0.3, 0.0, 0.2)
    assert numbers_in_unit_interval(report) == []
    report["search"]["variants"]["knn"]["ndcg"] = math.nan
    report["recommendation"]["variants"]["cf"]["coverage"] = 1.5
    assert sorted(numbers_in_unit_interval(report)) == ["recommendation.variants.cf.coverage=1.5",
                                                        "search.variants.knn.ndcg=nan"]


def test_chart_is_a_png(tmp_path):
    path = write_chart(_report(0.3, 0.0, 0.2), tmp_path / "img" / "eval.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_intent_exact_match_per_language(tmp_path):
    golden = tmp_path / "g.jsonl"
    cases = [{"q": "a 90s comedy", "language": "en",
              "expected": {"filters": {"genres": ["comedy"]}, "ranges": {"year": {"gte": 1990, "lte": 1999}},
                           "exclude": {}, "text": "", "sort": None}},
             {"q": "不要爱情片的喜剧",
              "expected": {"filters": {"genres": ["comedy"]}, "exclude": {"genres": ["romance"]}}},
             {"q": "sci-fi but not horror",
              "expected": {"filters": {"genres": ["sci-fi"]}, "exclude": {"genres": ["horror"]}}}]
    golden.write_text("\n".join(json.dumps(c, ensure_ascii=False) for c in cases) + "\n\n", encoding="utf-8")
    answers = {"a 90s comedy": {"filters": {"genres": ["comedy"]}, "ranges": {"year": {"lte": 1999.0, "gte": 1990.0}},
                                "exclude": {}, "text": "90s"},
               "不要爱情片的喜剧": {"filters": {"genres": ["comedy"]}, "exclude": {"genres": ["romance"]},
                                  "ranges": {}},
               "sci-fi but not horror": {"filters": {"genres": ["sci-fi", "horror"]}, "exclude": {}, "ranges": {}}}
    result = run_intent(golden, lambda q, lang, vocab: answers[q])
    assert result["languages"]["en"] == {"cases": 2, "exact": 1, "accuracy": 0.5}
    assert result["languages"]["zh"] == {"cases": 1, "exact": 1, "accuracy": 1.0}
    assert result["languages"]["all"]["accuracy"] == pytest.approx(2 / 3)
    assert [m["q"] for m in result["misses"]] == ["sci-fi but not horror"]
    with pytest.raises(ConfigError):
        run_intent(tmp_path / "missing.jsonl", lambda q, lang, vocab: {})


def test_pick_queries_keeps_both_languages_of_a_slot():
    qs = [EvalQuery(f"q{i}", f"t{i}", "en" if i % 2 == 0 else "zh", f"tpl{i // 20}",
                    Constraints(year_min=1900 + i // 2)) for i in range(40)]
    picked = pick_queries(qs, 8)
    assert len(picked) == 8
    assert [q.language for q in picked] == ["en", "zh"] * 4
    assert {q.template for q in picked} == {"tpl0", "tpl1"}
    assert pick_queries(qs, 0) == qs
