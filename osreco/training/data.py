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
import math
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
        """The text the encoder embeds: ``text`` when it already starts with the title,
        else ``title. text`` (ingest's default embed fields)."""
        if not self.text or self.text == self.title:
            return self.title
        return self.text if self.text.startswith(self.title) else f"{self.title}. {self.text}"


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
    for line_no, row in _jsonl_rows(path):
        yield _validate_event(row, path, line_no)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line; bad JSON raises naming the line."""
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                raise TrainingDataError(f"invalid JSON: {e.msg}", path, line_no) from e


def read_catalog(path: str | Path) -> dict[str, CatalogItem]:
    """Read a catalog JSONL (item_id, title, text, optional genres and year).

    Raises:
        TrainingDataError: missing file, bad JSON or an item without item_id/title.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError("catalog file not found", path, fix="pass a catalog JSONL")
    items: dict[str, CatalogItem] = {}
    for line_no, row in _jsonl_rows(path):
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
    """The 1,681 valid MovieLens-100k movies, with the same text the item index embeds.

    Reads through ``osreco.ingest.fixtures`` (the MovieLens field map and repairs) when
    ``ml_dir`` is None, so the trained encoder sees item texts exactly as ingest writes them
    (``"Toy Story. animation, children's, comedy. 1995"``); a given ``ml_dir`` is read here.
    """
    if ml_dir is None:
        from osreco.ingest.catalog import CatalogItem as IngestItem
        from osreco.ingest.fixtures import read_movielens_items

        items = {}
        for entry in read_movielens_items():
            if isinstance(entry, IngestItem):
                f = entry.fields
                items[entry.item_id] = CatalogItem(entry.item_id, str(f["title"]), entry.embed_text,
                                                   tuple(f.get("genres") or ()), f.get("year"))
        return items
    return _read_movielens_items(Path(ml_dir) / "ml-100k.item")


def _read_movielens_items(path: Path) -> dict[str, CatalogItem]:
    """``ml-100k.item`` read directly, texts shaped like ingest's (title. genres. year)."""
    items: dict[str, CatalogItem] = {}
    for row in _read_tsv(path):
        year = row.get("release_year", "")
        if not year.isdigit():
            continue
        genres = tuple(g.lower() for g in row.get("class", "").split() if g != "unknown")
        text = ". ".join(p for p in (row["movie_title"], ", ".join(genres), year) if p)
        items[row["item_id"]] = CatalogItem(row["item_id"], row["movie_title"], text, genres, int(year))
    return items


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


def _query_for(item: CatalogItem, genres: list[str], rng: random.Random) -> str:
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


def query_matches(query: str, item: CatalogItem) -> bool:
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
        n_test = math.ceil(len(rows) * config.holdout_fraction) if len(rows) >= 5 else 0
        rows = rows[: len(rows) - n_test]
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
