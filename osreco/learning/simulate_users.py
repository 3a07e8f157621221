"""The simulated users of ``osreco simulate``: what they ask, what they click, what they reveal.

Pure: values in, values out, every random draw from a seeded ``random.Random``. A user is a
MovieLens-100k user whose ratings are split by time: the early part trained the day-0 system,
the later part (``future``, oldest first) is what traffic reveals day by day.

The choice model is known, so the learning loop's estimates can be checked against it: a result
at 1-based position ``p`` is examined with probability ``p ** -eta`` (``1 / (1 + pos) ** eta`` for a
0-based ``pos``), and an examined item is clicked with a probability set by the user's held-out
rating of it (:data:`ATTRACTIVENESS`; ``NOISE_CLICK`` for items the user never rated).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from osreco.evaluation.data import EvalQuery, Movie, relevant_grades
from osreco.evaluation.metrics import ndcg_graded_at_k

ATTRACTIVENESS: dict[int, float] = {5: 0.9, 4: 0.6, 3: 0.25, 2: 0.08, 1: 0.04}
"""Click probability of an examined item by the user's (held-out) rating of it."""
NOISE_CLICK = 0.03
"""Click probability of an examined item the user never rated."""
_TITLE_STOP = frozenset({"the", "a", "an", "of", "and", "in", "on", "to"})
_TITLE_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_TITLE_ARTICLE = re.compile(r",\s*(the|a|an)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ChoiceModel:
    """Position bias times relevance: the simulator's known click model.

    Args:
        eta: position-bias exponent (examination of 1-based position ``p`` is ``p ** -eta``).
        noise: click probability of an examined item the user never rated.
    """

    eta: float = 1.0
    noise: float = NOISE_CLICK

    def examination(self, position: int) -> float:
        """Probability that a user looks at the result at 1-based ``position``."""
        return float(position) ** -self.eta

    def curve(self, n: int) -> list[float]:
        """The examination probabilities of positions 1..n (the curve a position model should recover)."""
        return [self.examination(p) for p in range(1, n + 1)]

    def attractiveness(self, rating: float | None) -> float:
        """Click probability of an examined item the user rated ``rating`` (``None``: never rated)."""
        if rating is None:
            return self.noise
        return ATTRACTIVENESS.get(int(round(rating)), self.noise)

    def clicks(self, shown: Sequence[str], ratings: Mapping[str, float], draws: Sequence[float]) -> list[int]:
        """The 1-based positions clicked on a page, given one uniform draw per position.

        The draws come from the caller so that both arms of a simulation use the same random
        numbers (common random numbers): a difference in clicks is then a difference in lists.
        """
        return [p for p, (item, u) in enumerate(zip(shown, draws), start=1)
                if u < self.examination(p) * self.attractiveness(ratings.get(item))]


@dataclass
class SimUser:
    """One simulated user: the held-out future ratings and what has been revealed so far.

    Args:
        user_id: the MovieLens user id (sent to the sidecar, which pseudonymizes it).
        future: (item id, rating) of the held-out ratings, oldest first.
        revealed: held-out items the user has already rated through the API (never graded again).
    """

    user_id: str
    future: tuple[tuple[str, float], ...]
    revealed: set[str] = field(default_factory=set)

    def ratings(self) -> dict[str, float]:
        """Every held-out rating (the choice model's relevance)."""
        return dict(self.future)

    def remaining(self) -> dict[str, float]:
        """Held-out ratings not yet revealed: the grades a served list is measured against."""
        return {i: r for i, r in self.future if i not in self.revealed}

    def next_reveals(self, n: int) -> list[tuple[str, float]]:
        """The next ``n`` unrevealed held-out ratings in time order (what the user rates that day anyway)."""
        return [(i, r) for i, r in self.future if i not in self.revealed][:n]


@dataclass(frozen=True)
class SimQuery:
    """One search the user types and the grades its results are measured against."""

    text: str
    language: str
    kind: str  # the template name, or "title"
    grades: dict[str, float]


def title_words(title: str, n: int = 3) -> str:
    """A search-box title lookup: up to ``n`` leading words of ``title`` without year or trailing article.

    >>> title_words("Usual Suspects, The (1995)")
    'Usual Suspects'
    """
    words = _TITLE_ARTICLE.sub("", _TITLE_YEAR.sub("", title)).replace(",", " ").split()
    while len(words) > 1 and words[0].lower() in _TITLE_STOP:
        words = words[1:]
    return " ".join(words[:n])


def make_query(rng: random.Random, user: SimUser, queries: Sequence[EvalQuery], movies: Mapping[str, Movie],
               titles: Mapping[str, str], title_share: float = 0.2) -> SimQuery | None:
    """A query the user would type for one of their liked, not yet revealed future items.

    A target item is drawn among the remaining held-out items rated 4 or more (any remaining
    item when there is none); with probability ``title_share`` the user looks its title up
    (graded: the target alone), otherwise they type one of the templated genre/decade/negation
    queries of ``osreco eval`` that the target satisfies, in English or Chinese (graded: every
    remaining held-out item that meets the query's constraints).

    Returns:
        The query, or ``None`` when the user has nothing left to find.
    """
    remaining = user.remaining()
    liked = sorted(i for i, r in remaining.items() if r >= 4 and i in movies) or \
        sorted(i for i in remaining if i in movies)
    if not liked:
        return None
    target = rng.choice(liked)
    if rng.random() < title_share and titles.get(target):
        text = title_words(titles[target])
        if text:
            return SimQuery(text, "en", "title", {target: remaining[target]})
    fitting = [q for q in queries if q.constraints.satisfied_by(movies[target])]
    if not fitting:
        return None
    query = rng.choice(fitting)
    return SimQuery(query.text, query.language, query.template, relevant_grades(query, remaining, movies))


def page_ndcg(shown: Sequence[str], grades: Mapping[str, float], k: int) -> float | None:
    """Graded NDCG@k of one served page, or ``None`` when nothing on it could have been relevant."""
    positive = {i: g for i, g in grades.items() if g > 0}
    return ndcg_graded_at_k(list(shown), positive, k) if positive else None


def sample_users(users: Sequence[SimUser], n: int, seed: int, day: int) -> list[SimUser]:
    """The ``n`` users active on ``day`` (same for every arm: seeded by ``seed`` and ``day``)."""
    pool = [u for u in users if u.remaining()]
    return random.Random(f"{seed}:users:{day}").sample(pool, min(n, len(pool)))

