"""Training data for the feedback loop: events, item catalogs, and MovieLens-derived feedback.

Pure Python (no torch): read exported event JSONL and catalog JSONL with per-line validation,
and synthesise search-like feedback from MovieLens-100k ratings (queries from templates over
genre and decade, for items the user rated highly; skipped impressions for items that violate
the query) so the encoder and the reranker can be trained without a live site.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from osreco.exporter.errors import ExporterError

__all__ = [
    "TrainingError", "TrainingDataError", "CatalogItem", "POSITIVE_KINDS", "NEGATIVE_KINDS",
    "EVENT_KINDS", "is_positive", "read_events", "read_catalog", "write_jsonl",
    "movielens_dir", "movielens_catalog", "movielens_events", "MovieLensConfig",
]

POSITIVE_KINDS = frozenset({"click", "add_to_cart", "purchase"})
NEGATIVE_KINDS = frozenset({"impression", "skip"})
EVENT_KINDS = POSITIVE_KINDS | NEGATIVE_KINDS | {"view", "rating"}
HIGH_RATING = 4.0


class TrainingError(ExporterError):
    """Root of the training errors (a subclass of the exporter's root)."""


class TrainingDataError(TrainingError):
    """An events or catalog file is missing or has a bad line; names the file and the line."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None,
                 fix: str | None = None):
        where = f"{path}:{line}" if path is not None and line is not None else path
        super().__init__(message, path=where, fix=fix)
        self.line = line


@dataclass(frozen=True)
class CatalogItem:
    """One catalog item as the trainers see it."""

    item_id: str
    title: str
    text: str
    genres: tuple[str, ...] = ()
    year: int | None = None

    @property
    def document(self) -> str:
        """The text the encoder embeds for this item (title, then description)."""
        if not self.text or self.text == self.title:
            return self.title
        return f"{self.title}. {self.text}"


def is_positive(event: dict) -> bool:
    """Whether an event says the user liked the item (click/cart/purchase, or rating >= 4)."""
    kind = event.get("kind")
    if kind == "rating":
        return float(event.get("value") or 0.0) >= HIGH_RATING
    return kind in POSITIVE_KINDS


def _validate_event(row: object, path: Path, line: int) -> dict:
    """Check one decoded event row and normalise its ids to strings."""
    if not isinstance(row, dict):
        raise TrainingDataError("an event must be a JSON object", path, line)
    for field in ("user_id", "item_id", "kind"):
        if row.get(field) in (None, ""):
            raise TrainingDataError(f"event has no {field!r}", path, line,
                                    fix="each line needs user_id, item_id, kind, timestamp")
    if row["kind"] not in EVENT_KINDS:
        raise TrainingDataError(f"unknown event kind {row['kind']!r}", path, line,
                                fix=f"use one of {sorted(EVENT_KINDS)}")
    out = dict(row)
    out["user_id"], out["item_id"] = str(row["user_id"]), str(row["item_id"])
    out["timestamp"] = row.get("timestamp") or 0
    return out


def read_events(path: str | Path) -> Iterator[dict]:
    """Stream events from a JSONL file, validating each line.

    Args:
        path: JSONL with user_id, item_id, kind, value, timestamp, query?, session_id?.

    Returns:
        An iterator of event dicts (ids as strings).

    Raises:
        TrainingDataError: missing file, bad JSON, missing field or unknown kind (with line).
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError("events file not found", path,
                                fix="export events to JSONL first (or use --movielens)")
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TrainingDataError(f"invalid JSON: {e.msg}", path, line_no) from e
            yield _validate_event(row, path, line_no)


def read_catalog(path: str | Path) -> dict[str, CatalogItem]:
    """Read a catalog JSONL (item_id, title, text, optional genres and year).

    Raises:
        TrainingDataError: missing file, bad JSON or an item without item_id/title.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError("catalog file not found", path, fix="pass a catalog JSONL")
    items: dict[str, CatalogItem] = {}
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TrainingDataError(f"invalid JSON: {e.msg}", path, line_no) from e
            if not isinstance(row, dict) or row.get("item_id") in (None, "") or not row.get("title"):
                raise TrainingDataError("catalog row needs item_id and title", path, line_no)
            genres = row.get("genres") or ()
            items[str(row["item_id"])] = CatalogItem(
                str(row["item_id"]), str(row["title"]), str(row.get("text") or ""),
                tuple(genres) if isinstance(genres, list) else (str(genres),),
                int(row["year"]) if row.get("year") else None)
    return items


def write_jsonl(rows: Iterable[dict], path: str | Path) -> int:
    """Write dicts as JSON lines; returns how many were written."""
    n = 0
    with Path(path).open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


# --- MovieLens-100k -------------------------------------------------------------------------

def movielens_dir() -> Path:
    """MovieLens-100k inside the recbole wheel, found without importing recbole.

    Raises:
        TrainingDataError: when recbole's files are not installed.
    """
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise TrainingDataError("MovieLens-100k not found (recbole wheel missing)",
                                fix="pip install --no-deps recbole")
    return Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"


def _read_tsv(path: Path) -> Iterator[dict[str, str]]:
    """Rows of a recbole atomic file, header types (``name:token``) stripped."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader)]
        for row in reader:
            yield dict(zip(header, row))


def movielens_catalog(ml_dir: str | Path | None = None) -> dict[str, CatalogItem]:
    """The 1,681 MovieLens-100k movies as catalog items (the junk row 267 is skipped).

    Args:
        ml_dir: folder with ``ml-100k.item`` (default: the recbole wheel's).
    """
    path = Path(ml_dir or movielens_dir()) / "ml-100k.item"
    items: dict[str, CatalogItem] = {}
    for row in _read_tsv(path):
        year = row.get("release_year", "")
        if not year.isdigit():
            continue
        genres = tuple(g for g in row.get("class", "").split() if g != "unknown")
        text = f"A {year} film. Genres: {', '.join(genres) or 'unknown'}."
        items[row["item_id"]] = CatalogItem(row["item_id"], row["movie_title"], text, genres, int(year))
    return items


@dataclass(frozen=True)
class MovieLensConfig:
    """How search-like feedback is synthesised from MovieLens ratings.

    Args:
        train_fraction: each user's earliest share of ratings used (the rest is held out,
            as the time-ordered split of ``osreco eval`` does).
        queries_per_user: queries synthesised per user from their highly rated items.
        skips_per_query: impressions of items that violate the query (negatives).
        max_users: cap on users (None: all 943).
        seed: random seed.
    """

    train_fraction: float = 0.8
    queries_per_user: int = 8
    skips_per_query: int = 2
    max_users: int | None = None
    seed: int = 13


_ZH_GENRES = {"Action": "动作片", "Adventure": "冒险片", "Animation": "动画片",
              "Children's": "儿童片", "Comedy": "喜剧", "Crime": "犯罪片", "Documentary": "纪录片",
              "Drama": "剧情片", "Fantasy": "奇幻片", "Film-Noir": "黑色电影", "Horror": "恐怖片",
              "Musical": "歌舞片", "Mystery": "悬疑片", "Romance": "爱情片", "Sci-Fi": "科幻片",
              "Thriller": "惊悚片", "War": "战争片", "Western": "西部片"}
_EN_TEMPLATES = ("a {decade} {genre}", "{genre} movies from the {decade}", "{decade} {genre} films",
                 "a {genre} movie", "{genre} but not {other}", "a {decade} movie")
_ZH_TEMPLATES = ("{zdecade}年代的{zgenre}", "{zgenre}", "不要{zother}的{zgenre}")


def _query_for(item: CatalogItem, genres: list[str], rng: random.Random) -> str:
    """One template query that ``item`` satisfies (genre, decade, or a negation it obeys)."""
    genre = rng.choice(item.genres)
    others = [g for g in genres if g not in item.genres]
    decade = (item.year or 1990) // 10 * 10
    values = {"genre": genre.lower(), "decade": f"{decade % 100:02d}s",
              "other": rng.choice(others).lower(), "zgenre": _ZH_GENRES.get(genre, genre),
              "zdecade": f"{decade % 100:02d}", "zother": _ZH_GENRES.get(rng.choice(others), "")}
    template = rng.choice(_ZH_TEMPLATES if rng.random() < 0.25 else _EN_TEMPLATES)
    return template.format(**values)


def query_matches(query: str, item: CatalogItem) -> bool:
    """Whether ``item`` satisfies a query made by :func:`_query_for` (used to pick skips)."""
    q = query.lower()
    names = {g: (g.lower(), _ZH_GENRES.get(g, g)) for g in _ZH_GENRES}
    decade = f"{(item.year or 0) // 10 * 10 % 100:02d}"
    for g, (en, zh) in names.items():
        negated = f"not {en}" in q or f"不要{zh}" in query
        mentioned = en in q or zh in query
        if negated and g in item.genres:
            return False
        if mentioned and not negated and g not in item.genres:
            return False
    for d in range(0, 100, 10):
        tag = f"{d:02d}"
        if (f"{tag}s" in q or f"{tag}年代" in query) and tag != decade:
            return False
    return True


def movielens_events(config: MovieLensConfig = MovieLensConfig(),
                     ml_dir: str | Path | None = None,
                     catalog: dict[str, CatalogItem] | None = None) -> list[dict]:
    """Feedback events derived from MovieLens ratings (earliest part of each user's timeline).

    Every kept rating becomes a ``rating`` event; for highly rated items, ``click`` events
    with a template query the item satisfies, and ``skip`` impressions of items that do not.

    Returns:
        Event dicts sorted by (user_id, timestamp).
    """
    rng = random.Random(config.seed)
    catalog = catalog if catalog is not None else movielens_catalog(ml_dir)
    by_user: dict[str, list[dict]] = {}
    for row in _read_tsv(Path(ml_dir or movielens_dir()) / "ml-100k.inter"):
        if row["item_id"] in catalog:
            by_user.setdefault(row["user_id"], []).append(row)
    users = sorted(by_user, key=int)[: config.max_users]
    genres, item_ids = sorted(_ZH_GENRES), sorted(catalog)
    events: list[dict] = []
    for user in users:
        rows = sorted(by_user[user], key=lambda r: (float(r["timestamp"]), r["item_id"]))
        rows = rows[: max(1, int(len(rows) * config.train_fraction))]
        for r in rows:
            events.append({"user_id": user, "item_id": r["item_id"], "kind": "rating",
                           "value": float(r["rating"]), "timestamp": int(float(r["timestamp"]))})
        liked = [r for r in rows if float(r["rating"]) >= HIGH_RATING and catalog[r["item_id"]].genres]
        for r in rng.sample(liked, min(config.queries_per_user, len(liked))):
            events.extend(_search_session(user, r, catalog, genres, item_ids, config, rng))
    return sorted(events, key=lambda e: (int(e["user_id"]), e["timestamp"]))


def _search_session(user: str, rating: dict, catalog: dict[str, CatalogItem], genres: list[str],
                    item_ids: list[str], config: MovieLensConfig, rng: random.Random) -> list[dict]:
    """One synthetic search: the query, the click on the liked item, skips of violating items."""
    item = catalog[rating["item_id"]]
    query = _query_for(item, genres, rng)
    ts = int(float(rating["timestamp"]))
    session = f"s{user}-{ts}-{item.item_id}"
    out = [{"user_id": user, "item_id": item.item_id, "kind": "click", "value": 1.0,
            "timestamp": ts, "query": query, "session_id": session}]
    skips = 0
    for _ in range(50):
        if skips >= config.skips_per_query:
            break
        other = catalog[rng.choice(item_ids)]
        if not query_matches(query, other):
            out.append({"user_id": user, "item_id": other.item_id, "kind": "skip", "value": 0.0,
                        "timestamp": ts, "query": query, "session_id": session})
            skips += 1
    return out
