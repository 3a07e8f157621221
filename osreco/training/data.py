"""Training data for the feedback loop: events, the items' texts, and MovieLens-derived feedback.

Pure Python (no torch): read exported events (JSONL, CSV...) with per-line validation, read
catalogs through ingest (``osreco.ingest.catalog.read_catalog``) so every item's training text
is exactly the text ingest embeds, and synthesise search-like feedback from MovieLens-100k
ratings (queries from templates over genre and decade, for items the user rated highly;
skipped impressions for items that violate the query) so the encoder and the reranker can be
trained without a live site. Event kinds come from :mod:`osreco.cf.events`.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from osreco.cf.events import FEEDBACK_KINDS, POSITIVE_KINDS
from osreco.ingest.catalog import CatalogItem, FieldMap, read_catalog
from osreco.ingest.errors import CatalogError, ConfigError, RowError
from osreco.ingest.movielens import (
    movielens_items_path,
    movielens_ratings_path,
    read_movielens_items,
    read_movielens_ratings,
)
from osreco.ingest.rows import read_rows
from osreco.training.errors import TrainingDataError, TrainingError

__all__ = [
    "TrainingError", "TrainingDataError", "TrainingItem", "TRAINING_FIELDS", "is_positive", "read_events",
    "read_training_items", "write_jsonl", "movielens_catalog", "movielens_events", "MovieLensConfig",
]

HIGH_RATING = 4.0
TRAINING_FIELDS = FieldMap(id="item_id", title="title", text=("text",), facets={"genres": "genres"},
                           numeric={"year": ("year", "integer")})
"""How :func:`read_training_items` maps a catalog (``item_id``, ``title``, ``text``, optional
``genres`` and ``year``): ingest's default embed fields, so the text is ``title. text``."""


@dataclass(frozen=True)
class TrainingItem:
    """An item as a training pair uses it: its text plus the attributes queries are made from.

    Built from ingest's :class:`~osreco.ingest.catalog.CatalogItem` (:meth:`from_catalog`),
    where ``text`` is the item's ``embed_text``.
    """

    item_id: str
    title: str
    text: str
    genres: tuple[str, ...] = ()
    year: int | None = None

    @property
    def document(self) -> str:
        """The text the encoder embeds: ``text`` when it already starts with the title,
        else ``title. text`` (ingest's default embed fields)."""
        if not self.text or self.text == self.title:
            return self.title
        return self.text if self.text.startswith(self.title) else f"{self.title}. {self.text}"

    @classmethod
    def from_catalog(cls, item: CatalogItem) -> TrainingItem:
        """The training view of a validated catalog item (text = the text ingest embeds)."""
        year, genres = item.fields.get("year"), item.fields.get("genres")
        return cls(item.item_id, str(item.fields.get("title") or ""), item.embed_text,
                   tuple(str(g) for g in genres) if isinstance(genres, (list, tuple)) else (),
                   int(year) if isinstance(year, (int, float)) else None)


def is_positive(event: dict) -> bool:
    """Whether an event says the user liked the item (click/cart/purchase, or rating >= 4)."""
    kind = event.get("kind")
    if kind == "rating":
        return float(event.get("value") or 0.0) >= HIGH_RATING
    return kind in POSITIVE_KINDS


def _validate_event(row: dict | RowError, path: Path, line: int) -> dict:
    """Check one decoded event row and normalise its ids to strings."""
    if isinstance(row, RowError):
        raise TrainingDataError(str(row.args[0]) if row.args else str(row), path, line, fix=row.fix)
    for field in ("user_id", "item_id", "kind"):
        if row.get(field) in (None, ""):
            raise TrainingDataError(f"event has no {field!r}", path, line,
                                    fix="each line needs user_id, item_id, kind, timestamp")
    if row["kind"] not in FEEDBACK_KINDS:
        raise TrainingDataError(f"unknown event kind {row['kind']!r}", path, line,
                                fix=f"use one of {sorted(FEEDBACK_KINDS)}")
    out = dict(row)
    out["user_id"], out["item_id"] = str(row["user_id"]), str(row["item_id"])
    out["timestamp"] = row.get("timestamp") or 0
    return out


def read_events(path: str | Path) -> Iterator[dict]:
    """Stream events from a file (JSONL, or CSV/TSV/Parquet by extension), validating each row.

    Args:
        path: rows with user_id, item_id, kind, value, timestamp, query?, session_id?.

    Returns:
        An iterator of event dicts (ids as strings).

    Raises:
        TrainingDataError: missing file, bad JSON, missing field or unknown kind (with line).
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError("events file not found", path,
                                fix="export events to JSONL first (or use --movielens)")
    for line_no, row in read_rows(path, default="jsonl"):
        yield _validate_event(row, path, line_no)


def read_training_items(path: str | Path, fields: FieldMap = TRAINING_FIELDS) -> dict[str, TrainingItem]:
    """Read a catalog through ingest's reader and validation: item id -> :class:`TrainingItem`.

    Args:
        path: a catalog (JSONL, CSV, Parquet...; see ``osreco.ingest.rows``).
        fields: the field map (the same one ``osreco ingest`` used, so the texts match).

    Raises:
        TrainingDataError: missing file, or a row ingest would reject (names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError("catalog file not found", path, fix="pass a catalog JSONL")
    items: dict[str, TrainingItem] = {}
    try:
        for entry in read_catalog(path, fields):
            if isinstance(entry, RowError):
                raise TrainingDataError(str(entry.args[0]) if entry.args else str(entry), path, entry.line,
                                        fix=entry.fix or "each row needs item_id and title")
            if not entry.deleted:
                items[entry.item_id] = TrainingItem.from_catalog(entry)
    except (CatalogError, ConfigError) as e:  # unreadable file, or a format ingest cannot tell
        raise TrainingDataError(str(e), path) from e
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

def movielens_catalog(ml_dir: str | Path | None = None) -> dict[str, TrainingItem]:
    """The 1,681 valid MovieLens-100k movies, read by ingest (``osreco.ingest.movielens``).

    The trained encoder sees item texts exactly as ingest writes them
    (``"Toy Story. animation, children's, comedy. 1995"``).

    Args:
        ml_dir: a folder with ``ml-100k.item`` (default: the recbole wheel's).
    """
    items = read_movielens_items(movielens_items_path(ml_dir))
    return {entry.item_id: TrainingItem.from_catalog(entry) for entry in items
            if isinstance(entry, CatalogItem)}


@dataclass(frozen=True)
class MovieLensConfig:
    """How search-like feedback is synthesised from MovieLens ratings.

    Args:
        holdout_fraction: each user's newest share of ratings left out, computed exactly as
            ``osreco eval``'s time-ordered split (``ceil(n * fraction)``, users with >= 5
            ratings), so nothing the evaluation holds out is trained on.
        queries_per_user: queries synthesised per user from their highly rated items.
        skips_per_query: impressions of items that violate the query (negatives).
        max_users: cap on users (None: all 943).
        seed: random seed.
    """

    holdout_fraction: float = 0.2
    queries_per_user: int = 8
    skips_per_query: int = 2
    max_users: int | None = None
    seed: int = 13


_ZH_GENRES = {"action": "动作片", "adventure": "冒险片", "animation": "动画片",
              "children's": "儿童片", "comedy": "喜剧", "crime": "犯罪片", "documentary": "纪录片",
              "drama": "剧情片", "fantasy": "奇幻片", "film-noir": "黑色电影", "horror": "恐怖片",
              "musical": "歌舞片", "mystery": "悬疑片", "romance": "爱情片", "sci-fi": "科幻片",
              "thriller": "惊悚片", "war": "战争片", "western": "西部片"}
_EN_TEMPLATES = ("a {decade} {genre}", "{genre} movies from the {decade}", "{decade} {genre} films",
                 "a {genre} movie", "{genre} but not {other}", "a {decade} movie",
                 "{genre} from the {decade} without {other}")
_ZH_TEMPLATES = ("{zdecade}年代的{zgenre}", "{zgenre}", "不要{zother}的{zgenre}",
                 "{zdecade}年代的{zgenre}，不要{zother}")


def _query_for(item: TrainingItem, genres: list[str], rng: random.Random) -> str:
    """One template query that ``item`` satisfies (genre, decade, or a negation it obeys)."""
    genre = rng.choice(item.genres)
    others = [g for g in genres if g not in item.genres]
    decade = (item.year or 1990) // 10 * 10
    other = rng.choice(others)
    values = {"genre": genre, "decade": f"{decade % 100:02d}s", "other": other,
              "zgenre": _ZH_GENRES.get(genre, genre), "zdecade": f"{decade % 100:02d}",
              "zother": _ZH_GENRES.get(other, other)}
    template = rng.choice(_ZH_TEMPLATES if rng.random() < 0.25 else _EN_TEMPLATES)
    return template.format(**values)


def query_matches(query: str, item: TrainingItem) -> bool:
    """Whether ``item`` satisfies a query made by :func:`_query_for` (used to pick skips)."""
    q = query.lower()
    names = {g: (g.lower(), _ZH_GENRES.get(g, g)) for g in _ZH_GENRES}
    decade = f"{(item.year or 0) // 10 * 10 % 100:02d}"
    for g, (en, zh) in names.items():
        negated = f"not {en}" in q or f"without {en}" in q or f"不要{zh}" in query
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
                     catalog: dict[str, TrainingItem] | None = None) -> list[dict]:
    """Feedback events derived from MovieLens ratings (earliest part of each user's timeline).

    Every kept rating becomes a ``rating`` event; for highly rated items, ``click`` events
    with a template query the item satisfies, and ``skip`` impressions of items that do not.

    Returns:
        Event dicts sorted by (user_id, timestamp).
    """
    rng = random.Random(config.seed)
    catalog = catalog if catalog is not None else movielens_catalog(ml_dir)
    by_user: dict[str, list[dict]] = {}
    for row in read_movielens_ratings(movielens_ratings_path(ml_dir)):
        if row["item_id"] in catalog:
            by_user.setdefault(row["user_id"], []).append(row)
    users = sorted(by_user, key=int)[: config.max_users]
    genres, item_ids = sorted(_ZH_GENRES), sorted(catalog)
    events: list[dict] = []
    for user in users:
        rows = sorted(by_user[user], key=lambda r: (float(r["timestamp"]), r["item_id"]))
        n_test = math.ceil(len(rows) * config.holdout_fraction) if len(rows) >= 5 else 0
        rows = rows[: len(rows) - n_test]
        for r in rows:
            events.append({"user_id": user, "item_id": r["item_id"], "kind": "rating",
                           "value": float(r["rating"]), "timestamp": int(float(r["timestamp"]))})
        liked = [r for r in rows if float(r["rating"]) >= HIGH_RATING and catalog[r["item_id"]].genres]
        for r in rng.sample(liked, min(config.queries_per_user, len(liked))):
            events.extend(_search_session(user, r, catalog, genres, item_ids, config, rng))
    return sorted(events, key=lambda e: (int(e["user_id"]), e["timestamp"]))


def _search_session(user: str, rating: dict, catalog: dict[str, TrainingItem], genres: list[str],
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
