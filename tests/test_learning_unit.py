"""The learning loop's pure parts: the position model recovers a known examination curve, the
counterfactual tuner picks the weights clicks favour and refuses ones the held-out users do not,
the IPW training rows, the settings store's weights per class, durations, the history table."""

from __future__ import annotations

import numpy as np
import pytest

from osreco.learning.cli import parse_duration
from osreco.learning.clicks import ShownRequest, impressions, position_model, shown_requests, training_rows
from osreco.learning.errors import LearnError
from osreco.learning.history import append_run, draw_history, history_table, read_history
from osreco.learning.propensity import Impression, PositionModel, fit_position_model
from osreco.learning.tune import LoggedRequest, heldout, ips_clicks, tune_class
from osreco.plugin.errors import ConfigError
from osreco.plugin.explore import explore_order, page_seed
from osreco.plugin.fusion import FusionSettings
from osreco.plugin.settings_store import SettingsStore, apply_weights, class_weights, validate_classes

TRUE_CURVE = np.array([1.0, 0.7, 0.5, 0.4, 0.32, 0.27, 0.23, 0.2, 0.18, 0.16])


def _pbm_log(rng: np.random.Generator, n_queries: int = 300, shows: int = 30) -> list[Impression]:
    """Clicks drawn from the position-based model: each query's items shown in random orders."""
    rows = []
    for q in range(n_queries):
        rel = rng.uniform(0.05, 0.95, size=len(TRUE_CURVE))
        for _ in range(shows):
            order = rng.permutation(len(TRUE_CURVE))
            for pos, item in enumerate(order, 1):
                click = rng.random() < TRUE_CURVE[pos - 1] * rel[item]
                rows.append(Impression((f"q{q}", f"i{item}"), pos, bool(click)))
    return rows


def test_position_model_recovers_the_examination_curve():
    model = fit_position_model(_pbm_log(np.random.default_rng(7)), positions=10)
    assert model.curve[0] == 1.0 and model.iterations > 1
    assert np.max(np.abs(np.asarray(model.curve) - TRUE_CURVE)) < 0.06, model.curve
    assert model.weight(1) == 1.0 and model.weight(8) == pytest.approx(1 / model.curve[7])


def test_position_model_without_data_is_flat():
    assert fit_position_model([Impression(("q", "i"), 1, False)] * 10).curve == PositionModel.flat().curve


def _personalized_log(rng: np.random.Generator, explore: float, users: int = 6000) -> list[ShownRequest]:
    """Requests as a personalizing ranker serves them: every user types the same query, each
    user's own relevance orders their page (noisily), so the items on top are the relevant ones;
    a share ``explore`` of the pages is explored as the sidecar does (``plugin/explore.py``)."""
    out = []
    for u in range(users):
        rel = rng.beta(0.5, 2.0, size=40)
        page = np.argsort(-(rel + rng.normal(0.0, 0.05, size=40)))[:10]   # ranked items, best first
        order = explore_order(f"q{u}", 10, explore)
        shown = {f"i{page[j]}": pos for pos, j in enumerate(order, 1)}
        ranked = {f"i{page[j]}": j + 1 for pos, j in enumerate(order, 1) if j + 1 != pos}
        clicked = frozenset(i for i, pos in shown.items() if rng.random() < TRUE_CURVE[pos - 1] * rel[int(i[1:])])
        out.append(ShownRequest(f"q{u}", f"u{u}", "comedy", "listing", "search", shown, clicked, frozenset(),
                                ranked=ranked))
    return out


def test_position_model_keyed_by_rank_recovers_the_curve_the_ranking_confounds():
    explored = _personalized_log(np.random.default_rng(11), explore=1.0)
    model = position_model(explored, positions=10)
    assert model.keyed_by == "rank" and model.explored > 0
    assert np.max(np.abs(np.asarray(model.curve) - TRUE_CURVE)) < 0.07, model.curve
    assert model.as_dict()["keyed_by"] == "rank"
    # the same log without the exploration: relevance keyed by query, and the ranking's
    # confounding (relevant items on top) passes off as a steeper curve
    plain = position_model(_personalized_log(np.random.default_rng(11), explore=0.0), positions=10)
    assert plain.keyed_by == "query" and plain.explored == 0
    assert np.max(np.abs(np.asarray(plain.curve) - TRUE_CURVE)) > 0.1, plain.curve


def test_a_log_with_little_exploration_keys_by_query():
    log = _personalized_log(np.random.default_rng(12), explore=1.0, users=20)
    assert 0 < sum(len(r.ranked) for r in log) < 200
    assert position_model(log).keyed_by == "query"
    with pytest.raises(ValueError, match="rank"):
        impressions(log, by="user")


def test_an_explored_page_is_served_and_logged_as_shown_and_read_back_with_its_ranks():
    from osreco.plugin.fusion import Candidate
    from osreco.plugin.metrics import Metrics
    from osreco.plugin.querylog_writer import QueryLogWriter

    docs: list[dict] = []
    writer = QueryLogWriter(docs.extend, Metrics(), explore=1.0)
    ranked = [Candidate(f"i{n}", 1.0 / n, ranks={"bm25": 61 - n, "dense": n + 3}) for n in range(1, 61)]
    pages = []
    for q in range(20):   # pages whose draw swapped nothing are served as ranked
        resp = {"results": [{"item_id": c.item_id, "rank": n} for n, c in enumerate(ranked[:10], 1)]}
        pages.append(writer.record(resp, "search", ranked, {}, query=f"x{q}", k=10))
    assert writer.drain(10.0) and len(docs) == 20
    moved = 0
    for resp, doc in zip(pages, docs):
        assert [r["rank"] for r in resp["results"]] == list(range(1, 11))
        assert [r["position"] for r in resp["results"]] == list(range(1, 11))
        served = {s["item_id"]: s for s in doc["served"]}
        for r in resp["results"]:   # the log says where each item was shown and the rank it had
            entry = served[r["item_id"]]
            assert entry["position"] == r["rank"] and abs(entry.get("ranked", r["rank"]) - r["rank"]) <= 2
            assert entry.get("ranked", entry["position"]) == int(r["item_id"][1:])
        got = shown_requests([{**doc, "user_key": "u"}], [])[0]
        assert got.shown == {r["item_id"]: r["rank"] for r in resp["results"]}
        assert all(got.rank_of(i) == int(i[1:]) for i in got.shown)
        moved += len(got.ranked)
    assert moved > 20 and sum("ranked" in e for d in docs for e in d["served"]) == moved
    assert docs[0]["served"][0]["signals"]["bm25"] == 60   # each signal's own rank, not the fused one
    again = writer.record({"results": [{"item_id": c.item_id, "rank": n} for n, c in enumerate(ranked[:10], 1)]},
                          "search", ranked, {}, query="x3", k=10)
    assert again["results"] == pages[3]["results"]   # the same page the same day: the same order
    plain = QueryLogWriter(docs.extend, Metrics())   # off by default: the ranked order, nothing marked
    resp = plain.record({"results": [{"item_id": "i1", "rank": 1}, {"item_id": "i2", "rank": 2}]}, "search",
                        ranked, {}, k=2)
    assert plain.drain(10.0) and [r["item_id"] for r in resp["results"]] == ["i1", "i2"]
    assert not any("ranked" in s for s in docs[-1]["served"])


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half"])
def test_a_bad_explore_fraction_is_refused_by_name(monkeypatch, value):
    from osreco.plugin.config import SidecarConfig

    monkeypatch.setenv("OPENSEARCH_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("OSRECO_EXPLORE_FRACTION", value)
    with pytest.raises(ConfigError) as e:
        SidecarConfig.from_env(dev_mode=True, api_keys_file=None, bundle_dir=None, cf_model_dir=None)
    assert "OSRECO_EXPLORE_FRACTION" in str(e.value)
    monkeypatch.setenv("OSRECO_EXPLORE_FRACTION", "0.25")
    assert SidecarConfig.from_env(dev_mode=True, api_keys_file=None, bundle_dir=None,
                                  cf_model_dir=None).explore_fraction == 0.25


def test_exploration_swaps_neighbours_on_the_share_of_pages_drawn_from_the_query_id():
    assert explore_order("q", 10, 0.0) == list(range(10)) and explore_order("q", 1, 1.0) == [0]
    assert page_seed("search", user_key="u", query="x", page=None) != page_seed("search", user_key="v", query="x")
    orders = [explore_order(f"q{i}", 10, 1.0) for i in range(400)]
    assert orders[7] == explore_order("q7", 10, 1.0)          # the same request, the same page
    for order in orders:
        assert sorted(order) == list(range(10)) and all(abs(j - i) <= 2 for j, i in enumerate(order))
    assert any(abs(j - i) == 2 for order in orders for j, i in enumerate(order))   # two rounds of swaps
    moved = np.mean([sum(j != i for j, i in enumerate(order)) for order in orders])
    assert 5.5 < moved < 8.5          # half the pairs of each round swapped, two items each
    explored = np.mean([explore_order(f"r{i}", 10, 0.3) != list(range(10)) for i in range(1000)])
    assert 0.2 < explored < 0.32      # 30 % of pages drawn, a few of them with no pair swapped


def _request(user: str, dense_best: bool, rng: np.random.Generator, cls: str = "text") -> LoggedRequest:
    """20 candidates shown in bm25 order; the click goes to the best dense item (or the bm25 top)."""
    n = 20
    bm25 = np.arange(1, n + 1, dtype=float)
    dense = rng.permutation(n).astype(float) + 1
    taste = np.zeros(n)
    ranks = np.stack([bm25, dense, taste, np.zeros(n)], axis=1)
    clicked = np.zeros(n, dtype=bool)
    clicked[int(np.argmin(dense)) if dense_best else 0] = True
    return LoggedRequest(cls, user, ranks, bm25.copy(), clicked)


def _users(n: int, held: bool) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        key = f"u_{i:064x}"
        if heldout(key) == held:
            out.append(key)
        i += 1
    return out


def test_tuner_moves_weight_to_the_signal_clicks_follow():
    rng = np.random.default_rng(3)
    reqs = [_request(u, True, rng) for u in _users(60, False) + _users(60, True)]
    current = class_weights(FusionSettings(bm25_weight=1.0, dense_weight=0.0), "text")
    result = tune_class("text", reqs, current, PositionModel.flat(20), hand=current)
    assert result.promote, result.reason
    assert result.tuned["dense"] > result.tuned["bm25"]
    assert result.heldout["tuned"] > result.heldout["current"] == result.heldout["hand"]


def test_tuner_refuses_weights_the_heldout_users_do_not_prefer():
    rng = np.random.default_rng(4)
    reqs = [_request(u, True, rng) for u in _users(60, False)] + [_request(u, False, rng) for u in _users(60, True)]
    current = class_weights(FusionSettings(bm25_weight=1.0, dense_weight=0.0), "text")
    result = tune_class("text", reqs, current, PositionModel.flat(20))
    assert not result.promote and result.reason.startswith("refused")
    assert result.heldout["tuned"] < result.heldout["current"]


def test_tuner_needs_enough_traffic():
    rng = np.random.default_rng(5)
    result = tune_class("text", [_request(u, True, rng) for u in _users(3, False)],
                        class_weights(FusionSettings(), "text"), PositionModel.flat())
    assert not result.promote and "too little traffic" in result.reason


def test_ips_reproduces_the_logged_clicks_under_the_logged_order():
    rng = np.random.default_rng(6)
    reqs = [_request(u, True, rng) for u in _users(10, False)]
    from osreco.learning.tune import _stack

    w = class_weights(FusionSettings(bm25_weight=1.0, dense_weight=0.0, cf_weight=0.0), "text")
    clicks_in_top10 = sum(int(r.clicked[:10].sum()) for r in reqs) / len(reqs)
    assert ips_clicks(_stack(reqs), w, "text", PositionModel.flat(20)) == pytest.approx(clicks_in_top10)


def test_training_rows_weight_deep_clicks_and_take_passed_over_items_as_negatives():
    model = PositionModel((1.0, 0.5, 0.25))
    req = ShownRequest("q1", "u_a", "red shoes", "text", "search", {"a": 1, "b": 2, "c": 3, "d": 4},
                       frozenset({"c"}), frozenset({"d"}))
    rows, pairs = training_rows([req], model)
    assert pairs == 3   # c against a and b (shown above it, not clicked) and d (explicit skip)
    click = [r for r in rows if r["kind"] == "click"]
    assert click == [{"user_id": "u_a", "query": "red shoes", "query_id": "q1", "timestamp": 0, "item_id": "c",
                      "kind": "click", "position": 3, "weight": 4.0}]
    assert sorted(r["item_id"] for r in rows if r["kind"] == "skip") == ["a", "b", "d"]
    assert len(impressions([req])) == 4


def test_shown_requests_from_impressions_or_the_served_page():
    queries = [{"query_id": "q1", "user_key": "u", "query": "x", "query_class": "text", "endpoint": "search",
                "k": 2, "page": 1, "served": [{"item_id": "a", "position": 1}, {"item_id": "b", "position": 2},
                                              {"item_id": "c", "position": 3}]},
               {"query_id": "q2", "user_key": "u", "query": "", "query_class": "none", "endpoint": "recommend",
                "served": [{"item_id": "a", "position": 1}]}]
    events = [{"query_id": "q2", "kind": "impression", "item_id": "z", "position": 5},
              {"query_id": "q1", "kind": "click", "item_id": "b"}, {"query_id": "q2", "kind": "click", "item_id": "q"}]
    got = {r.query_id: r for r in shown_requests(queries, events)}
    assert got["q1"].shown == {"a": 1, "b": 2} and got["q1"].clicked == {"b"}
    assert got["q2"].shown == {"z": 5} and got["q2"].clicked == frozenset()


def test_settings_store_applies_weights_per_class_and_keeps_hand_weights_otherwise():
    base = FusionSettings()
    doc = {"version": 2, "classes": validate_classes({"listing": {"taste": 0.9, "rrf_k": 20, "bm25": 0.1}})}
    store = SettingsStore(lambda: doc, base)
    assert store.fusion(base, "listing") == base   # nothing read yet: the hand weights exactly
    assert store.refresh() == "loaded" and store.refresh() == "current"
    listing = store.fusion(base, "listing")
    assert (listing.listing_cf_weight, listing.rrf_k, listing.bm25_weight, listing.cf_weight) == (0.9, 20, 0.1, 0.3)
    assert store.fusion(base, "text") == base
    served = store.served()
    assert served["version"] == 2 and served["classes"]["listing"]["source"] == "learned"
    assert served["classes"]["text"] == {**class_weights(base, "text"), "rrf_k": 60, "source": "hand"}
    assert apply_weights(base, "title", {"taste": 0.0}).title_cf_weight == 0.0


def test_settings_store_keeps_serving_when_a_read_fails():
    docs = [{"version": 1, "classes": {"text": {"dense": 2.0}}}]

    def read():
        if not docs:
            raise ConnectionError("node down")
        return docs.pop()

    store = SettingsStore(read, FusionSettings())
    assert store.refresh() == "loaded"
    assert store.refresh() == "failed" and store.fusion(FusionSettings(), "text").dense_weight == 2.0


@pytest.mark.parametrize("classes, field", [({"bogus": {}}, "classes"), ({"text": {"bm25": -1}}, "classes.text.bm25"),
                                            ({"text": {"rrf_k": 0}}, "classes.text.rrf_k"),
                                            ({"text": {"dense": "x"}}, "classes.text.dense"),
                                            ({"text": {"mmr": 1}}, "classes.text.mmr")])
def test_bad_settings_documents_name_the_field(classes, field):
    with pytest.raises(ConfigError) as e:
        validate_classes(classes)
    assert e.value.context["field"] == field


def test_durations():
    assert [parse_duration(t) for t in ("90s", "30m", "6h", "1d", "15")] == [90, 1800, 21600, 86400, 15]
    for bad in ("", "0m", "-1h", "1w", "soon"):
        with pytest.raises(LearnError):
            parse_duration(bad)


def test_history_table_and_chart(tmp_path):
    with pytest.raises(LearnError):
        read_history(tmp_path)
    runs = [{"run_id": "r1", "started": "2026-11-29T00:00:00", "seconds": 3.2, "data": {"events": 10, "queries": 4},
             "metrics": {"cf": {"mode": "full"}, "fusion": {"classes": {"text": {"heldout": {"current": 0.2,
                                                                                             "tuned": 0.3}}}}},
             "promoted": ["cf", "fusion"], "refused": []},
            {"run_id": "r2", "error": "RuntimeError: killed", "promoted": [], "data": {}}]
    for r in runs:
        append_run(tmp_path, r)
    (tmp_path / "history.jsonl").open("a").write('{"torn')   # a run killed while writing
    assert [r["run_id"] for r in read_history(tmp_path)] == ["r1", "r2"]
    table = history_table(read_history(tmp_path))
    assert "0.2000->0.3000" in table and "cf,fusion" in table and "error: RuntimeError: killed" in table
    png = draw_history(read_history(tmp_path), tmp_path / "h.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_cronjob_example_runs_a_valid_osreco_learn():
    from pathlib import Path

    import yaml

    from osreco.cli import cli

    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker" / "learn.cronjob.yaml").read_text())
    assert doc["kind"] == "CronJob" and doc["spec"]["concurrencyPolicy"] == "Forbid"
    container = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    argv = container["command"]
    assert argv[:2] == ["osreco", "learn"]
    learn = cli.commands["learn"]
    ctx = learn.make_context("learn", list(argv[2:]))   # raises on an option `osreco learn` does not have
    assert ctx.params["index"] == "items" and ctx.params["model_dir"] == "/learn/cf-model"


def test_cli_bad_input_is_one_clear_error(tmp_path):
    from click.testing import CliRunner

    from osreco.cli import cli

    runner = CliRunner()
    bad = runner.invoke(cli, ["learn", "--index", "items", "--state", str(tmp_path), "--every", "soon"])
    assert bad.exit_code == 2 and "--every 'soon' is not a positive duration" in bad.output
    assert "Traceback" not in bad.output
    missing = runner.invoke(cli, ["learn", "history", "--state", str(tmp_path / "none"), "--json"])
    assert missing.exit_code == 2 and '"ok": false' in missing.output and "no learning history" in missing.output
    no_index = runner.invoke(cli, ["learn", "--state", str(tmp_path)])
    assert no_index.exit_code == 2 and "--index is required" in no_index.output


def _cf_events(rng: np.random.Generator, users: int, start: float, n_items: int = 30) -> list[dict]:
    """Two taste groups: each user clicks 8 items of their group's half of the items."""
    from datetime import datetime, timezone

    out = []
    for u in range(users):
        half = range(n_items // 2) if u % 2 == 0 else range(n_items // 2, n_items)
        for n, item in enumerate(rng.choice(list(half), size=8, replace=False)):
            ts = datetime.fromtimestamp(start + u * 60 + n, tz=timezone.utc).isoformat()
            out.append({"user_key": f"u_{u:064x}", "item_id": f"m{item}", "kind": "click", "value": 1.0,
                        "timestamp": ts})
            out.append({"user_key": f"u_{u:064x}", "item_id": f"m{item}", "kind": "impression", "value": 1.0,
                        "timestamp": ts, "position": 1})
    return out


def test_cf_step_trains_first_folds_in_next_and_refuses_a_worse_retrain():
    from dataclasses import replace

    from osreco.cf.model import CFConfig
    from osreco.cf.train import train_models
    from osreco.learning.cf_step import interactions_of, plan_cf

    rng = np.random.default_rng(1)
    items = [f"m{i}" for i in range(30)]
    old, new = _cf_events(rng, 40, 1.7e9), _cf_events(rng, 40, 1.8e9)
    assert len(interactions_of(old)) == len(old) // 2   # impressions are not positives
    config = CFConfig(factors=4, iterations=5)
    first = plan_cf(old, old, None, items, full=False, config=config)
    assert (first.mode, first.promote, first.reason) == ("full", True, "first model")
    newcomer = [dict(e, user_key="u_" + "f" * 64) for e in new[:6]]
    inc = plan_cf(old + newcomer, newcomer, first.model, items, full=False, config=config)
    assert inc.mode == "incremental" and inc.users == ["u_" + "f" * 64]
    assert inc.model.user_vector("u_" + "f" * 64) is not None and first.model.user_vector("u_" + "f" * 64) is None
    # a served model that already knows the new events beats a retrain that has not seen them
    items = [f"m{i}" for i in range(200)]
    old, new = _cf_events(rng, 60, 1.7e9, 200), _cf_events(rng, 60, 1.8e9, 200)
    oracle = train_models(interactions_of(old + new), replace(config, iterations=10), item_ids=items)
    refused = plan_cf(old + new, new, oracle, items, full=True, config=replace(config, iterations=10))
    got = refused.metrics["recall@20"]
    assert got["users"] == 60 and got["candidate"] < got["served"]
    assert not refused.promote and refused.reason.startswith("refused: candidate recall@20")


def test_tuner_promotes_only_a_significant_heldout_gain():
    from osreco.learning.tune import _lower_bound

    users = [f"u{i}" for i in range(100)]
    one_lucky_click = np.array([1.0] + [0.0] * 99)          # mean gain 0.01, from one request
    assert _lower_bound(one_lucky_click, users) < 0 < one_lucky_click.mean()
    assert _lower_bound(np.full(100, 0.5), users) == pytest.approx(0.5)
    # the same gains counted as one user's many requests are less certain than 100 users' single ones
    spread = np.array([1.0] * 30 + [0.0] * 70)
    assert _lower_bound(spread, ["a"] * 30 + users[:70]) < _lower_bound(spread, users)
    assert _lower_bound(spread, ["a"] * 100) == float("-inf")
