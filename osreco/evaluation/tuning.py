"""Choosing settings on validation users, never on the test users (pure).

:func:`split_users` splits the test users deterministically into validation and test users
(each user's side depends only on the seed and the user id, not on the order or the other
users); a tuning step measures a grid of settings on the validation users only and
:func:`pick_by_class` keeps, per query class, the grid value with the best NDCG; the test
users then measure the chosen settings next to the other variants.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

__all__ = ["LISTING_GRID", "NEIGHBORS_GRID", "split_users", "pick_by_class", "grid_name"]

# Taste weights tried per query class (one grid value sets every class's weight; each class
# is scored on its own pairs, so one pass tunes all of them), each with these weights of the
# neighbours list (filtered listings only).
LISTING_GRID: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
NEIGHBORS_GRID: tuple[float, ...] = (0.0, 0.5)
V = TypeVar("V", float, tuple[float, float])


def split_users(users: Iterable[str], validation_fraction: float = 0.3,
                seed: int = 7) -> tuple[list[str], list[str]]:
    """Split users into (validation, test), deterministically.

    A user goes to validation when the SHA-256 of ``"<seed>:<user>"``, read as a number in
    [0, 1), is below ``validation_fraction``: stable across runs and machines, independent of
    the order and of which other users are present.

    Args:
        users: user ids (duplicates are kept once).
        validation_fraction: the expected share of validation users, in (0, 1).
        seed: a different seed gives a different split.

    Returns:
        ``(validation, test)``, each sorted.

    Raises:
        ValueError: ``validation_fraction`` outside (0, 1).
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    validation: list[str] = []
    test: list[str] = []
    for user in sorted(set(users)):
        digest = hashlib.sha256(f"{seed}:{user}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
        (validation if u < validation_fraction else test).append(user)
    return validation, test


def grid_name(taste: float, neighbors: float | None = None) -> str:
    """The variant name of one grid point."""
    return f"taste={taste:g}" + (f",neighbors={neighbors:g}" if neighbors is not None else "")


def pick_by_class(scores: Mapping[V, Mapping[str, float]], classes: Sequence[str],
                  defaults: Mapping[str, V]) -> dict[str, V]:
    """Per query class, the grid value with the best validation NDCG.

    Args:
        scores: grid value -> (query class -> validation NDCG); a class missing under a
            value was not measured there.
        classes: the classes to choose for.
        defaults: the value kept for a class that no validation pair measured.

    Returns:
        class -> chosen value; ties go to the smaller value (less taste; tuples compare in order).
    """
    out: dict[str, V] = {}
    for cls in classes:
        measured = [(v, by[cls]) for v, by in scores.items() if cls in by]
        if not measured:
            out[cls] = defaults[cls]
            continue
        out[cls] = min(measured, key=lambda vs: (-vs[1], vs[0]))[0]
    return out
