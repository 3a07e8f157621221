"""`osreco simulate`: the known choice model, the simulated users, the report, and a quick run end to end."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner

from osreco.evaluation.data import Movie, generate_queries
from osreco.learning.simulate_cli import compute_targets, to_markdown
from osreco.learning.simulate_users import ChoiceModel, SimUser, make_query, page_ndcg, sample_users, title_words

MOVIES = {str(i): Movie(str(i), 1980 + i % 20, frozenset({("comedy", "drama", "action", "sci-fi")[i % 4]}))
          for i in range(1, 121)}
TITLES = {i: f"Movie Number {i}, The (19{80 + int(i) % 20})" for i in MOVIES}


def test_the_examination_curve_is_the_known_power_law():
    model = ChoiceModel(eta=1.0)
    assert model.curve(4) == [1.0, 0.5, 1 / 3, 0.25]
    assert ChoiceModel(eta=2.0).examination(3) == pytest.approx(1 / 9)
    assert ChoiceModel(eta=0.0).curve(3) == [1.0, 1.0, 1.0]


def test_clicks_follow_position_times_rating_with_the_given_draws():
    model = ChoiceModel(eta=1.0, noise=0.0)
    shown = ["a", "b", "c", "d"]
    ratings = {"a": 5, "b": 5, "c": 1, "d": 5}
    # P(click) = p^-1 * attractiveness: a 0.9, b 0.45, c 0.0133, d 0.225
    assert model.clicks(shown, ratings, [0.89, 0.44, 0.5, 0.22]) == [1, 2, 4]
    assert model.clicks(shown, ratings, [0.91, 0.46, 0.0, 0.23]) == [3]
    assert model.clicks(shown, {}, [0.0] * 4) == []  # never rated, no noise: never clicked


def test_the_click_rate_per_position_matches_the_curve_over_many_pages():
    model = ChoiceModel(eta=1.0, noise=0.0)
    rng = random.Random(3)
    shown = [f"i{p}" for p in range(10)]
    ratings = dict.fromkeys(shown, 5.0)
    counts = [0] * 10
    for _ in range(4000):
        for p in model.clicks(shown, ratings, [rng.random() for _ in range(10)]):
            counts[p - 1] += 1
    rates = [c / 4000 for c in counts]
    assert [r / rates[0] for r in rates[:4]] == pytest.approx([1.0, 0.5, 1 / 3, 0.25], abs=0.05)


def test_queries_come_from_the_users_future_in_english_and_chinese():
    queries = generate_queries(MOVIES.values(), min_matches=3)
    user = SimUser("7", tuple((i, 5.0 if int(i) % 3 else 2.0) for i in sorted(MOVIES, key=int)[:40]))
    made = [make_query(random.Random(s), user, queries, MOVIES, TITLES, title_share=0.2) for s in range(60)]
    assert all(q is not None for q in made)
    languages = {q.language for q in made if q}
    kinds = {q.kind for q in made if q}
    assert {"en", "zh"} <= languages and "title" in kinds and len(kinds) >= 3
    remaining = user.remaining()
    for q in made:
        assert q and q.grades and set(q.grades) <= set(remaining)
    # the same seed asks the same question
    again = make_query(random.Random(5), user, queries, MOVIES, TITLES, title_share=0.2)
    assert again == made[5]


def test_revealed_items_are_never_graded_or_asked_for_again():
    queries = generate_queries(MOVIES.values(), min_matches=3)
    user = SimUser("9", (("1", 5.0), ("2", 4.0), ("3", 5.0)))
    user.revealed |= {i for i, _ in user.next_reveals(2)}
    assert user.remaining() == {"3": 5.0}
    for s in range(20):
        q = make_query(random.Random(s), user, queries, MOVIES, TITLES)
        assert q is not None and set(q.grades) == {"3"}
    user.revealed.add("3")
    assert make_query(random.Random(0), user, queries, MOVIES, TITLES) is None
    assert sample_users([user], 5, seed=1, day=1) == []


def test_page_ndcg_and_title_words():
    assert page_ndcg(["a", "b"], {}, 10) is None
    assert page_ndcg(["a", "b"], {"a": 5.0}, 10) == 1.0
    assert page_ndcg(["b", "a"], {"a": 5.0}, 10) == pytest.approx(0.6309, abs=1e-4)
    assert title_words("Usual Suspects, The (1995)") == "Usual Suspects"
    assert title_words("The Day the Earth Stood Still (1951)") == "Day the Earth"


def _report(frozen: float, learning: float, curve: list[float] | None = None) -> dict:
    day = {"ndcg": frozen, "ndcg_search": frozen, "ndcg_recommend": frozen, "ctr": 0.1}
    last = {"day": 3, "measured_only": True, "frozen": day, "learning": {**day, "ndcg": learning}}
    learn = {"propensity": {"curve": curve or [1.0, 0.5, 0.33]}, "fusion": {"current": 0.2, "tuned": 0.25,
                                                                            "hand": 0.2}}
    return {"config": {"k": 10, "days": 2, "users_per_day": 5, "seed": 7},
            "days": [{"day": 1, "frozen": day, "learning": day, "learn": learn, "learn_s": 12.0}, last],
            "bias_curve": {"eta": 1.0, "examination": [1.0, 0.5, 1 / 3]},
            "seconds": {"total": 30.0, "learn_max": 12.0}}


def test_targets_compare_the_next_day_and_the_recovered_curve():
    met = {t["name"].split(" ")[0]: t for t in compute_targets(_report(0.30, 0.34))}
    assert met["next-day"]["met"] and met["next-day"]["value"] == pytest.approx(0.34 / 0.30, abs=1e-4)
    assert met["one"]["met"] and met["tuned"]["met"] and met["position"]["met"]
    missed = {t["name"].split(" ")[0]: t for t in compute_targets(_report(0.30, 0.31, [1.0, 0.9, 0.8]))}
    assert not missed["next-day"]["met"] and not missed["position"]["met"]
    assert missed["position"]["value"] == pytest.approx(0.4667, abs=1e-3)
    md = to_markdown({**_report(0.30, 0.31), "targets": compute_targets(_report(0.30, 0.31))})
    assert "| 3 (next day) | 0.3000 | 0.3100 | 1.033 |" in md and "| NO |" in md


def test_bad_options_are_refused_by_name():
    from osreco.cli import cli

    result = CliRunner().invoke(cli, ["simulate", "--days", "0"])
    assert result.exit_code == 2 and "--days" in result.output
    from pathlib import Path

    from osreco.errors import ConfigError
    from osreco.ingest.connection import OpenSearchConfig
    from osreco.learning.simulate import SimulateConfig

    paths = dict(bundle_dir=Path("b"), data_dir=Path("d"), out_dir=Path("o"))
    node = OpenSearchConfig.from_env("http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="train_fraction") as e:
        SimulateConfig(node, **paths, train_fraction=1.0)
    assert e.value.context["field"] == "--train-fraction"
    with pytest.raises(ConfigError, match="users_per_day"):
        SimulateConfig(node, **paths, users_per_day=0)


@pytest.mark.integration
@pytest.mark.slow
def test_a_sidecar_that_cannot_start_is_one_clear_error(tmp_path, opensearch_url):
    from osreco.learning.simulate_sidecar import Sidecar, SimulateError

    sidecar = Sidecar("broken", {"OPENSEARCH_URL": opensearch_url, "OSRECO_DEV_MODE": "1",
                                 "OSRECO_BUNDLE": str(tmp_path / "no-such-bundle")}, tmp_path)
    with pytest.raises(SimulateError, match="broken sidecar exited") as e:
        sidecar.start(timeout_s=120)
    assert "no-such-bundle" in str(e.value.context.get("log"))


@pytest.mark.integration
@pytest.mark.slow
def test_quick_simulation_end_to_end(tmp_path, os_client, index_name):
    """Two real gunicorn sidecars, a learn run between days, events and query logs on the node."""
    from osreco.cli import cli

    out = tmp_path / "sim"
    result = CliRunner().invoke(cli, ["simulate", "--quick", "--users-per-day", "6", "--json", "--out", str(out),
                                      "--prefix", index_name])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report == json.loads((out / "simulate-report.json").read_text(encoding="utf-8"))
    assert (out / "simulate-chart.png").read_bytes()[:4] == b"\x89PNG"
    assert [d["day"] for d in report["days"]] == [1, 2, 3] and report["days"][-1]["measured_only"]
    first = report["days"][0]
    # day 1 is served by two copies of the same day-0 system to the same users with the same draws
    assert first["frozen"]["pages"] == first["learning"]["pages"] >= 6
    assert first["frozen"]["ndcg_recommend"] == first["learning"]["ndcg_recommend"]
    assert all("learn" in d for d in report["days"][:2]) and "learn" not in report["days"][2]
    assert report["days"][0]["learn"]["data"]["events"] > 0
    names = {t["name"].split(" ")[0] for t in report["targets"]}
    assert {"next-day", "one"} <= names
    # what the users did reached the learning arm's stores through the HTTP API
    learning = f"{index_name}-learning"
    os_client.indices.refresh(index=f"{learning}-events,{learning}-queries")
    kinds = {b["key"]: b["doc_count"] for b in os_client.search(index=f"{learning}-events", body={
        "size": 0, "query": {"range": {"timestamp": {"gte": "now-1h"}}},
        "aggs": {"k": {"terms": {"field": "kind"}}}})["aggregations"]["k"]["buckets"]}
    assert kinds.get("impression", 0) >= 10 * first["learning"]["pages"] and kinds.get("rating", 0) > 0
    assert os_client.count(index=f"{learning}-queries")["count"] >= sum(d["learning"]["pages"]
                                                                         for d in report["days"]) - 2
