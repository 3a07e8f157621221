"""Evaluation data for ``osreco eval``: templated queries with their constraints, relevance.

Pure: values in, values out. The queries are generated from templates over genres,
decades and negations, in English and Chinese ("a 90s comedy", "sci-fi but not horror",
"80年代的动作片", "不要爱情片的喜剧"), each with the constraint set it states. A query's
relevant items for a test user are that user's held-out items that satisfy the
constraints, graded by the user's rating.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Movie", "Constraints", "EvalQuery", "QueryPair", "GENRE_WORDS", "NEGATION_PAIRS",
           "generate_queries", "relevant_grades", "sample_pairs"]


@dataclass(frozen=True)
class Movie:
    """The attributes a constraint can test: facet values are lowercased as in the index."""

    item_id: str
    year: int | None
    genres: frozenset[str]


@dataclass(frozen=True)
class Constraints:
    """What a query states: genres required, genres excluded, an inclusive year range."""

    genres: frozenset[str] = frozenset()
    exclude_genres: frozenset[str] = frozenset()
    year_min: int | None = None
    year_max: int | None = None

    def satisfied_by(self, movie: Movie) -> bool:
        """True when ``movie`` meets every constraint (a movie without a year fails a range)."""
        if not self.genres <= movie.genres or self.exclude_genres & movie.genres:
            return False
        if self.year_min is None and self.year_max is None:
            return True
        if movie.year is None:
            return False
        lo = self.year_min if self.year_min is not None else movie.year
        hi = self.year_max if self.year_max is not None else movie.year
        return lo <= movie.year <= hi

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (sorted lists)."""
        return {"genres": sorted(self.genres), "exclude_genres": sorted(self.exclude_genres),
                "year_min": self.year_min, "year_max": self.year_max}


@dataclass(frozen=True)
class EvalQuery:
    """One search-box query of the evaluation and the constraints it states."""

    qid: str
    text: str
    language: str
    template: str
    constraints: Constraints


@dataclass(frozen=True)
class QueryPair:
    """One (query, test user) pair with its graded relevant items (item id -> rating)."""

    query: EvalQuery
    user_id: str
    grades: Mapping[str, float] = field(hash=False)


# genre facet value -> (English noun phrase, English short word, Chinese word)
GENRE_WORDS: dict[str, tuple[str, str, str]] = {
    "action": ("action movie", "action", "动作片"),
    "comedy": ("comedy", "comedy", "喜剧"),
    "drama": ("drama", "drama", "剧情片"),
    "thriller": ("thriller", "thriller", "惊悚片"),
    "romance": ("romance", "romance", "爱情片"),
    "adventure": ("adventure movie", "adventure", "冒险片"),
    "crime": ("crime movie", "crime", "犯罪片"),
    "sci-fi": ("sci-fi movie", "sci-fi", "科幻片"),
    "horror": ("horror movie", "horror", "恐怖片"),
    "war": ("war movie", "war", "战争片"),
    "children's": ("children's movie", "children's", "儿童片"),
}

# (wanted, excluded) pairs where the exclusion removes a real share of the wanted genre
NEGATION_PAIRS: tuple[tuple[str, str], ...] = (
    ("sci-fi", "horror"), ("comedy", "romance"), ("action", "war"), ("drama", "romance"),
    ("thriller", "horror"), ("adventure", "children's"), ("crime", "thriller"),
    ("comedy", "drama"), ("action", "sci-fi"), ("horror", "comedy"), ("romance", "comedy"),
    ("drama", "war"),
)

DECADES: tuple[int, ...] = (1950, 1960, 1970, 1980, 1990)


def _decade_en(decade: int) -> tuple[str, str]:
    """(article, word) for a decade: 1980 -> ("an", "80s")."""
    word = f"{decade % 100:02d}s"
    return ("an" if word.startswith("8") else "a"), word


def _templates(genre: str, other: str | None, decade: int | None) -> list[tuple[str, str, str]]:
    """(template name, language, text) for one slot filling; ``None`` slots skip templates."""
    noun, short, zh = GENRE_WORDS[genre]
    out: list[tuple[str, str, str]] = []
    if decade is not None and other is None:
        article, dec = _decade_en(decade)
        out.append(("decade_genre", "en", f"{article} {dec} {noun}"))
        out.append(("decade_genre", "zh", f"{decade % 100:02d}年代的{zh}"))
    if other is not None and decade is None:
        out.append(("genre_not_genre", "en", f"{short} but not {GENRE_WORDS[other][1]}"))
        out.append(("genre_not_genre", "zh", f"不要{GENRE_WORDS[other][2]}的{zh}"))
    if other is not None and decade is not None:
        _, dec = _decade_en(decade)
        out.append(("decade_genre_not", "en", f"{short} from the {dec} without {GENRE_WORDS[other][1]}"))
        out.append(("decade_genre_not", "zh", f"{decade % 100:02d}年代的{zh}，不要{GENRE_WORDS[other][2]}"))
    return out


def _constraints(genre: str, other: str | None, decade: int | None) -> Constraints:
    return Constraints(genres=frozenset({genre}),
                       exclude_genres=frozenset({other}) if other else frozenset(),
                       year_min=decade, year_max=decade + 9 if decade is not None else None)


def generate_queries(movies: Iterable[Movie], min_matches: int = 10) -> list[EvalQuery]:
    """Every templated query whose constraints at least ``min_matches`` catalog movies meet.

    Args:
        movies: the catalog.
        min_matches: drop queries that too few movies satisfy (they say nothing).

    Returns:
        Queries in a stable order (template, genre, decade/negation, language); ids
        ``q000``, ``q001``, ...
    """
    catalog = list(movies)
    slots: list[tuple[str, str | None, int | None]] = []
    slots += [(g, None, d) for g in GENRE_WORDS for d in DECADES]
    slots += [(g, o, None) for g, o in NEGATION_PAIRS]
    slots += [(g, o, 1990) for g, o in NEGATION_PAIRS]
    out: list[EvalQuery] = []
    for genre, other, decade in slots:
        cons = _constraints(genre, other, decade)
        if sum(1 for m in catalog if cons.satisfied_by(m)) < min_matches:
            continue
        for template, language, text in _templates(genre, other, decade):
            out.append(EvalQuery(f"q{len(out):03d}", text, language, template, cons))
    return out


def relevant_grades(query: EvalQuery, held_out: Mapping[str, float],
                    movies: Mapping[str, Movie]) -> dict[str, float]:
    """A user's held-out items that satisfy the query, graded by rating.

    Args:
        query: the query.
        held_out: the user's held-out item id -> rating.
        movies: catalog by item id (items missing from it are never relevant).

    Returns:
        item id -> rating, only for items that meet every constraint.
    """
    return {item_id: rating for item_id, rating in held_out.items()
            if item_id in movies and rating > 0 and query.constraints.satisfied_by(movies[item_id])}


def sample_pairs(queries: Sequence[EvalQuery], held_out: Mapping[str, Mapping[str, float]],
                 movies: Mapping[str, Movie], users_per_query: int, seed: int = 7) -> list[QueryPair]:
    """For each query, up to ``users_per_query`` test users who have a relevant held-out item.

    Args:
        queries: the queries.
        held_out: user id -> (item id -> rating) of held-out interactions.
        movies: catalog by item id.
        users_per_query: cap per query (> 0).
        seed: seed of the user sample (reproducible runs).

    Returns:
        Pairs in query order; users within a query in sampled order.

    Raises:
        ValueError: when ``users_per_query`` < 1.
    """
    if users_per_query < 1:
        raise ValueError(f"users_per_query must be >= 1, got {users_per_query}")
    rng = random.Random(seed)
    users = sorted(held_out, key=lambda u: (len(u), u))
    pairs: list[QueryPair] = []
    for query in queries:
        candidates = [(u, g) for u in users if (g := relevant_grades(query, held_out[u], movies))]
        chosen = rng.sample(candidates, min(users_per_query, len(candidates)))
        pairs.extend(QueryPair(query, u, g) for u, g in chosen)
    return pairs
