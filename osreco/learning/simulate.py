"""``osreco simulate``: MovieLens-100k users as days of traffic through the real HTTP API.

Two arms run side by side, each a real gunicorn sidecar over its own item index and stores on
the real node, both set up the same way (the day-0 system): the MovieLens catalog ingested with
the packaged bundle, CF trained on each user's early ratings only (``train_fraction`` of them,
by time). Each day the same seeded sample of users, in both arms, searches (queries generated
from their held-out future ratings, English and Chinese, :mod:`osreco.learning.simulate_users`)
and opens a recommendation page; every served page is graded (NDCG@k against the user's
not-yet-revealed held-out ratings), then the user clicks by the known choice model (the same
random numbers in both arms), and posts impressions, clicks, the ratings of the clicked items and
the day's next few held-out ratings to ``/v1/events``. Between days the learning arm runs
``osreco learn`` (:func:`osreco.learning.learn.run_learn`); the frozen arm never does. The day
after the last is measured too: its NDCG is the "next-day" number of the targets.

Example:
    >>> report = run_simulation(SimulateConfig.from_env(days=2, users_per_day=10))   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from osreco.errors import ConfigError, OsrecoError
from osreco.evaluation.data import EvalQuery, Movie, generate_queries
from osreco.ingest.connection import OpenSearchConfig
from osreco.learning.simulate_setup import clone_index, copy_item_index, seed_history, settle
from osreco.learning.simulate_sidecar import Sidecar, running
from osreco.learning.simulate_users import ChoiceModel, SimUser, make_query, page_ndcg, sample_users

log = logging.getLogger("osreco.simulate")
ARMS = ("frozen", "learning")
STORE_SUFFIXES = ("-users", "-events", "-queries", "-settings", "-cf-meta")
"""The per-arm stores a run starts from empty (the item index itself is reused and re-trained)."""


@dataclass(frozen=True)
class SimulateConfig:
    """Settings of one simulation (validated when built).

    Args:
        opensearch: the node.
        bundle_dir: the model bundle (exported once from the packaged MiniLM when missing).
        data_dir: the MovieLens-100k folder.
        out_dir: report, chart, per-arm CF models and learn state.
        days: days of traffic the learning arm learns from (the day after is measured too).
        users_per_day: users active each day (the same users in both arms).
        seed: seed of every draw (users, queries, clicks): the same seed repeats the run.
        k: results per page and the NDCG cut-off.
        eta: exponent of the position-bias curve ``p ** -eta``.
        train_fraction: share of each user's ratings, oldest first, the day-0 CF is trained on.
        reveal_per_day: held-out ratings each active user posts per day besides the clicked items.
        title_share: share of searches that look a title up.
        prefix: index name prefix; arm indexes are ``<prefix>-frozen`` and ``<prefix>-learning``.
        cf_factors: ALS factors (the index's ``cf_dim``).
        reload_s: the learning sidecar's reload timer (settings store, CF model, bundle).
        learn: run ``osreco learn`` between days (off: both arms frozen, an A/A check).
        concurrency: users served at the same time in each arm.
        explore: both arms' ``OSRECO_EXPLORE_FRACTION`` (random adjacent swaps, logged, from which
            ``osreco learn`` estimates the position bias); both draw the same swaps for the same
            request, so the arms still differ only by what they ranked.
    """

    opensearch: OpenSearchConfig
    bundle_dir: Path
    data_dir: Path
    out_dir: Path
    days: int = 7
    users_per_day: int = 60
    seed: int = 7
    k: int = 10
    eta: float = 1.0
    train_fraction: float = 0.5
    reveal_per_day: int = 5
    title_share: float = 0.2
    prefix: str = "osreco-sim"
    cf_factors: int = 32
    reload_s: float = 1.0
    learn: bool = True
    concurrency: int = 4
    explore: float = 1.0

    def __post_init__(self) -> None:
        for name in ("days", "users_per_day", "k", "cf_factors", "concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}", field=f"--{name}")
        if self.reveal_per_day < 0:
            raise ConfigError("reveal_per_day must be >= 0", field="--reveal-per-day")
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError("train_fraction must be in (0, 1)", field="--train-fraction")
        if not 0.0 <= self.title_share <= 1.0:
            raise ConfigError("title_share must be in [0, 1]", field="--title-share")
        if not 0.0 <= self.eta <= 5.0:
            raise ConfigError("eta must be in [0, 5]", field="--eta")
        if self.reload_s <= 0:
            raise ConfigError("reload_s must be > 0", field="reload_s")
        if not 0.0 <= self.explore <= 1.0:
            raise ConfigError("explore must be in [0, 1]", field="--explore")

    @classmethod
    def from_env(cls, quick: bool = False, **overrides: Any) -> SimulateConfig:
        """Defaults (``quick``: 2 days of 12 users) with the node from ``OPENSEARCH_URL``.

        Raises:
            ConfigError: bad values; no node configured.
        """
        from osreco.ingest.movielens import movielens_dir
        from osreco.node import default_cache_dir

        values: dict[str, Any] = dict(opensearch=OpenSearchConfig.from_env(), data_dir=movielens_dir(),
                                      bundle_dir=default_cache_dir() / "eval" / "minilm-fp32",
                                      out_dir=Path("osreco-simulate"))
        if quick:
            values.update(days=2, users_per_day=12, reveal_per_day=3)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in ("bundle_dir", "data_dir", "out_dir"):
            values[name] = Path(values[name])
        return cls(**values)

    def public(self) -> dict[str, object]:
        """JSON-friendly settings for the report."""
        out = asdict(self)
        out["opensearch"] = self.opensearch.url
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}


# ---- the day-0 system ------------------------------------------------------------------------

@dataclass
class Arm:
    """One side of the simulation: its index alias, CF model folder, sidecar and users' state."""

    name: str
    alias: str
    cf_dir: Path
    users: dict[str, SimUser]
    sidecar: Sidecar | None = None


@dataclass(frozen=True)
class World:
    """What both arms share: the catalog as indexed, the query templates and the users' futures."""

    movies: dict[str, Movie]
    titles: dict[str, str]
    queries: list[EvalQuery]
    futures: dict[str, tuple[tuple[str, float], ...]]
    dataset: dict[str, object]


def prepare(config: SimulateConfig) -> tuple[World, list[Arm]]:
    """Build the day-0 system of both arms: index (reused while the bundle matches), empty stores, CF.

    Raises:
        osreco.exporter / osreco.ingest errors; opensearch-py errors when the node fails.
    """
    from opensearchpy.helpers import scan

    from osreco.evaluation.setup import (
        ensure_bundle,
        ensure_item_index,
        read_movies,
        split_ratings,
        train_and_store_cf,
    )
    from osreco.exporter import Encoder
    from osreco.ingest.connection import connect
    from osreco.ingest.movielens import movielens_ratings_path
    from osreco.plugin.config import DEV_HMAC_KEY

    client = connect(config.opensearch)
    encoder = Encoder(ensure_bundle(config.bundle_dir), threads=1, device="cpu")
    frozen, learning = (f"{config.prefix}-{name}" for name in ARMS)
    for alias in (frozen, learning):
        client.indices.delete(index=",".join(alias + s for s in STORE_SUFFIXES), ignore_unavailable=True)
    ensure_item_index(client, encoder, frozen, config.cf_factors)
    movies = read_movies(client, frozen)
    titles = {h["_id"]: str(h["_source"].get("title", "")) for h in
              scan(client, index=frozen, query={"query": {"match_all": {}}}, _source=["title"])}
    split = split_ratings(movielens_ratings_path(config.data_dir), frozenset(movies), 1.0 - config.train_fraction)
    futures = {u: tuple((i, split.held_out[u][i]) for i in order) for u, order in split.held_out_order.items()}
    world = World(movies, titles, generate_queries(movies.values()), futures,
                  {"items": len(movies), "train_ratings": len(split.train), "users": len(futures),
                   "held_out_ratings": sum(len(f) for f in futures.values())})
    dirs = [config.out_dir / name / "cf-model" for name in ARMS]
    for name in ARMS:  # a run starts from day 0
        for stale in (config.out_dir / name / "cf-model", config.out_dir / name / "learn-state"):
            shutil.rmtree(stale, ignore_errors=True)
    train_and_store_cf(client, frozen, split, DEV_HMAC_KEY, config.cf_factors, dirs[0])
    world.dataset["history_events"] = seed_history(client, frozen, split.train)
    # the learning arm starts as an exact copy: items (with factors and priors), users, CF meta, model
    copy_item_index(client, encoder, frozen, learning, config.cf_factors)
    for suffix in ("-users", "-cf-meta", "-events"):
        clone_index(client, frozen + suffix, learning + suffix)
    shutil.copytree(dirs[0], dirs[1])
    arms = [Arm(name, alias, cf_dir, {u: SimUser(u, f) for u, f in futures.items()})
            for name, alias, cf_dir in zip(ARMS, (frozen, learning), dirs)]
    return world, arms


def sidecar_env(config: SimulateConfig, arm: Arm) -> dict[str, str]:
    """The environment of an arm's sidecar (dev mode: no API keys, the dev HMAC key)."""
    return {"OPENSEARCH_URL": config.opensearch.url, "OSRECO_INDEX": arm.alias, "OSRECO_DEV_MODE": "1",
            "OSRECO_BUNDLE": str(config.bundle_dir), "OSRECO_CF_MODEL": str(arm.cf_dir),
            "OSRECO_ENCODER_THREADS": "1", "OSRECO_SEARCH_TIMEOUT_S": "20", "OSRECO_REQUEST_TIMEOUT_S": "40",
            "OSRECO_BUNDLE_RELOAD_S": str(config.reload_s),
            "OSRECO_EXPLORE_FRACTION": str(config.explore)}


# ---- one day of traffic ------------------------------------------------------------------------

@dataclass
class DayStats:
    """What one arm served and its users did on one day."""

    ndcg: list[float]
    ndcg_search: list[float]
    ndcg_recommend: list[float]
    pages: int = 0
    shown: int = 0
    clicks: int = 0
    events: int = 0

    def summary(self) -> dict[str, float | int]:
        """Means and counts for the report."""
        def mean(xs: Sequence[float]) -> float:
            return round(sum(xs) / len(xs), 4) if xs else 0.0
        return {"ndcg": mean(self.ndcg), "ndcg_search": mean(self.ndcg_search),
                "ndcg_recommend": mean(self.ndcg_recommend), "ctr": round(self.clicks / self.shown, 4)
                if self.shown else 0.0, "pages": self.pages, "shown": self.shown, "clicks": self.clicks,
                "graded_pages": len(self.ndcg), "events": self.events}


def _page_events(user: SimUser, response: Mapping[str, Any], shown: Sequence[str], clicked: Sequence[int],
                 query: str | None, kinds: frozenset[str]) -> list[dict[str, Any]]:
    """The events a page produces: an impression per shown item, a click (and rating) per clicked one."""
    qid = response.get("query_id")
    common: dict[str, Any] = {"user_id": user.user_id, **({"query": query} if query else {})}
    ratings = user.ratings()
    out: list[dict[str, Any]] = []
    if "impression" in kinds and qid:
        out += [{**common, "item_id": item, "kind": "impression", "position": p, "query_id": qid}
                for p, item in enumerate(shown, start=1)]
    for p in clicked:
        item = shown[p - 1]
        out.append({**common, "item_id": item, "kind": "click", "position": p, **({"query_id": qid} if qid else {})})
        if item in ratings and item not in user.revealed:
            out.append({"user_id": user.user_id, "item_id": item, "kind": "rating", "value": ratings[item]})
            user.revealed.add(item)
    return out


def run_user(arm: Arm, world: World, config: SimulateConfig, day: int, user_id: str, model: ChoiceModel,
             kinds: frozenset[str]) -> DayStats:
    """One active user's day on ``arm``: a search (when there is something to find), a
    recommendation page, each graded and clicked by ``model``; then the events are posted.

    Every draw is seeded by (seed, day, user): both arms see the same queries and the same
    click random numbers, so their differences come from the lists they served.
    """
    sidecar = arm.sidecar
    assert sidecar is not None
    stats = DayStats([], [], [])
    user = arm.users[user_id]
    rng = random.Random(f"{config.seed}:{day}:{user_id}")
    draws = random.Random(f"{config.seed}:{day}:{user_id}:clicks")
    query = make_query(rng, user, world.queries, world.movies, world.titles, config.title_share)
    pages: list[tuple[str, str | None, dict[str, float]]] = []
    if query is not None:
        pages.append(("search", query.text, query.grades))
    pages.append(("recommend", None, user.remaining()))
    events: list[dict[str, Any]] = []
    for endpoint, text, grades in pages:
        if endpoint == "search":
            resp = sidecar.call("POST", "/v1/search", {"q": text, "k": config.k, "user_id": user_id})
        else:
            resp = sidecar.call("GET", f"/v1/recommend?user_id={user_id}&k={config.k}")
        shown = [str(r["item_id"]) for r in resp.get("results", [])]
        score = page_ndcg(shown, grades, config.k)
        if score is not None:
            stats.ndcg.append(score)
            (stats.ndcg_search if endpoint == "search" else stats.ndcg_recommend).append(score)
        clicked = model.clicks(shown, user.ratings(), [draws.random() for _ in range(config.k)])
        stats.pages, stats.shown, stats.clicks = stats.pages + 1, stats.shown + len(shown), \
            stats.clicks + len(clicked)
        events += _page_events(user, resp, shown, clicked, text, kinds)
    for item, rating in user.next_reveals(config.reveal_per_day):
        events.append({"user_id": user_id, "item_id": item, "kind": "rating", "value": rating})
        user.revealed.add(item)
    for start in range(0, len(events), 500):
        sidecar.call("POST", "/v1/events", {"events": events[start:start + 500]})
    stats.events = len(events)
    return stats


def run_day(arm: Arm, world: World, config: SimulateConfig, day: int, active: Sequence[str],
            model: ChoiceModel, kinds: frozenset[str]) -> DayStats:
    """One day of traffic of the ``active`` users on ``arm``, ``config.concurrency`` users at a time.

    Users are independent within a day (each one's events change only their own taste; shared
    state changes only when ``osreco learn`` runs between days), so the result does not depend
    on the interleaving; the stats are merged in user order.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=config.concurrency) as pool:
        parts = list(pool.map(lambda u: run_user(arm, world, config, day, u, model, kinds), active))
    total = DayStats([], [], [])
    for part in parts:
        total.ndcg += part.ndcg
        total.ndcg_search += part.ndcg_search
        total.ndcg_recommend += part.ndcg_recommend
        total.pages += part.pages
        total.shown += part.shown
        total.clicks += part.clicks
        total.events += part.events
    return total


# ---- the whole run -------------------------------------------------------------------------------

def run_simulation(config: SimulateConfig, learn: Callable[[SimulateConfig, Arm], dict[str, Any]] | None = None,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Set up both arms, run ``days`` days of traffic (learning between them) and the next day.

    Args:
        config: the run's settings.
        learn: one learning run on an arm (default :func:`learn_arm`: ``osreco learn``).
        progress: called with a line after each step.

    Returns:
        ``{"config", "dataset", "days": [{"day", "frozen": stats, "learning": stats, "learn": ...}],
        "bias_curve", "seconds"}`` (targets are added by :mod:`osreco.learning.simulate_cli`).

    Raises:
        SimulateError: a sidecar failed; ConfigError / node errors from the setup.
    """
    from concurrent.futures import ThreadPoolExecutor

    from osreco.cf.events import EVENT_KINDS
    from osreco.ingest.connection import connect

    say = progress or (lambda line: log.info("%s", line))
    t0 = time.perf_counter()
    world, arms = prepare(config)
    client = connect(config.opensearch)
    served = 0
    say(f"day-0 system ready in {time.perf_counter() - t0:.0f} s: {world.dataset}")
    model = ChoiceModel(config.eta)
    kinds = frozenset(EVENT_KINDS)
    learner = learn or learn_arm
    days: list[dict[str, Any]] = []
    learn_seconds: list[float] = []
    with ExitStack() as stack:
        for arm in arms:
            arm.sidecar = stack.enter_context(running(Sidecar(arm.name, sidecar_env(config, arm),
                                                              config.out_dir / arm.name)))
        for day in range(1, config.days + 2):
            active = [u.user_id for u in sample_users(list(arms[0].users.values()), config.users_per_day,
                                                      config.seed, day)]
            row: dict[str, Any] = {"day": day, "users": len(active), "measured_only": day > config.days}
            with ThreadPoolExecutor(max_workers=len(arms)) as pool:  # both arms at once
                stats = list(pool.map(run_day, arms, *zip(*[(world, config, day, active, model, kinds)] * len(arms))))
            for arm, st in zip(arms, stats):
                row[arm.name] = st.summary()
            served += row["learning"]["pages"]
            row["queries_logged"] = settle(client, arms[1].alias, served)
            if config.learn and day <= config.days:
                t = time.perf_counter()
                row["learn"] = learner(config, arms[1])
                # the run's own time when it reports one (the wait for the reload timer is not learning)
                learn_seconds.append(float(row["learn"].get("seconds") or time.perf_counter() - t))
                row["learn_s"] = round(learn_seconds[-1], 1)
            days.append(row)
            say(f"day {day}: NDCG@{config.k} frozen {row['frozen']['ndcg']:.4f} learning "
                f"{row['learning']['ndcg']:.4f}, CTR {row['frozen']['ctr']:.4f} / {row['learning']['ctr']:.4f}")
    return {"config": config.public(), "dataset": world.dataset, "days": days,
            "bias_curve": {"eta": config.eta, "examination": [round(x, 4) for x in model.curve(config.k)]},
            "seconds": {"total": round(time.perf_counter() - t0, 1),
                        "learn_max": round(max(learn_seconds), 1) if learn_seconds else None}}


def learn_arm(config: SimulateConfig, arm: Arm) -> dict[str, Any]:
    """One ``osreco learn`` run on the learning arm, then a wait for its sidecar's reload timer.

    A failed run (recorded in the arm's learn history) is returned as ``{"error"}``: the day's row
    shows it and the simulation goes on with what is served.
    """
    from osreco.learning.learn import LearnConfig, run_learn

    learn_config = LearnConfig.from_env(alias=arm.alias, cf_model_dir=arm.cf_dir,
                                        state_dir=config.out_dir / arm.name / "learn-state",
                                        opensearch=config.opensearch)
    try:
        result = dict(run_learn(learn_config))
    except OsrecoError as e:  # recorded in the learn history too; the day's row shows it, the run goes on
        log.warning("osreco learn failed on %s: %s", arm.alias, e)
        return {"error": str(e)}
    time.sleep(2 * config.reload_s + 0.5)  # the sidecar picks the promoted model and weights up on its timer
    return result

