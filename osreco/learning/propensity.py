"""Position bias: how likely a user examines the result at each position (pure numpy).

The position-based click model: a shown item is clicked when its position is examined
(probability ``theta[p]``) and it is relevant (``gamma[q, d]``), independently. Both are fitted
by expectation-maximization on impressions and clicks (regression-EM without the regression,
Wang et al., WSDM 2018): an unclicked impression at position ``p`` was either not examined or
not relevant, in proportion ``theta (1 - gamma) : (1 - theta) gamma``. The same relevance key
shown at different positions is what separates the two, and only when the position it was shown
at does not depend on its relevance: a ranker puts what it believes relevant on top, so a key
that moves only with the ranker (the same query text for users who like different items) lets
EM pass relevance off as position. Random swaps of adjacent results on served pages (the
sidecar's ``OSRECO_EXPLORE_FRACTION``) move items independently of relevance; then relevance is
keyed by the rank the ranker gave (:func:`osreco.learning.clicks.position_model`).

The curve is reported relative to position 1 (``theta[p] / theta[1]``): inverse-propensity
weights and counterfactual estimates need only ratios. With little data the raw estimates are
noisy, so by default they are made non-increasing (pool-adjacent-violators, weighted by the
impressions at each position) and floored at ``floor``: examination does not rise further down
a list, and a position estimated at zero would make every click there weigh infinitely.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Impression", "PositionModel", "fit_position_model"]


@dataclass(frozen=True)
class Impression:
    """One shown result: the relevance key (e.g. query and item), its 1-based position, clicked or not."""

    key: tuple[str, str]
    position: int
    clicked: bool


@dataclass(frozen=True)
class PositionModel:
    """Examination propensity per position, relative to position 1.

    Args:
        curve: ``curve[p - 1]`` = propensity of position ``p`` / propensity of position 1;
            positions past the end use the last value.
        impressions, clicks: the data it was fitted on.
        iterations: EM iterations run.
        keyed_by: what relevance was keyed by (``rank``: the ranker's rank on an explored log;
            ``query``: query text or user, confounded with the ranking; see the module docstring).
        explored: impressions shown away from the ranker's rank by exploration.
    """

    curve: tuple[float, ...]
    impressions: int = 0
    clicks: int = 0
    iterations: int = 0
    keyed_by: str = "query"
    explored: int = 0

    def at(self, positions: np.ndarray | Sequence[int]) -> np.ndarray:
        """Relative propensities of 1-based ``positions`` (clipped to the curve's length)."""
        idx = np.clip(np.asarray(positions, dtype=np.int64) - 1, 0, len(self.curve) - 1)
        return np.asarray(self.curve, dtype=np.float64)[idx]

    def weight(self, position: int, clip: float = 10.0) -> float:
        """The inverse-propensity weight of a click at ``position``, at most ``clip``."""
        return float(min(clip, 1.0 / max(float(self.at([position])[0]), 1e-6)))

    @classmethod
    def flat(cls, positions: int = 20) -> PositionModel:
        """No position bias (every position examined alike): the model when no data is there."""
        return cls(tuple([1.0] * positions))

    def as_dict(self) -> dict[str, object]:
        return {"curve": [round(v, 4) for v in self.curve], "impressions": self.impressions,
                "clicks": self.clicks, "iterations": self.iterations, "keyed_by": self.keyed_by,
                "explored": self.explored}


def _decreasing(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted least-squares non-increasing fit of ``values`` (pool adjacent violators)."""
    blocks: list[list[float]] = []   # [mean, weight, count]
    for v, w in zip(values.tolist(), np.maximum(weights, 1e-9).tolist()):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return np.concatenate([np.full(int(c), m) for m, _, c in blocks])


def fit_position_model(impressions: Iterable[Impression], positions: int = 20, iterations: int = 2000,
                       tol: float = 1e-7, min_impressions: int = 50, monotone: bool = True,
                       floor: float = 0.02, prior: float = 0.5) -> PositionModel:
    """Fit the position-based click model by EM (see the module docstring).

    EM runs on counts per (key, position) cell, so a log of few keys (ranks) costs nothing per
    iteration however many impressions it holds.

    Args:
        impressions: shown results with their click outcome.
        positions: how many positions get their own propensity (deeper ones share the last).
        iterations, tol: EM stops after ``iterations`` or when the curve moves less than ``tol``.
        min_impressions: with fewer impressions (or no click) the flat model is returned.
        monotone: make the curve non-increasing (see the module docstring).
        floor: the least relative propensity of a position.
        prior: pseudo-impressions that pull each key's relevance toward the mean relevance: a
            key shown once says little about itself, and without the pull EM explains every
            click by relevance and learns no position effect from it.

    Returns:
        the fitted :class:`PositionModel`.
    """
    rows = list(impressions)
    # only a key shown at two or more positions tells examination from relevance: with enough
    # of those, fit on them alone (a key shown once lets EM explain its click by relevance)
    places: dict[tuple[str, str], set[int]] = {}
    for r in rows:
        places.setdefault(r.key, set()).add(min(r.position, positions))
    moved = [r for r in rows if len(places[r.key]) > 1]
    if len(moved) >= min_impressions and any(r.clicked for r in moved):
        rows = moved
    n_clicks = sum(r.clicked for r in rows)
    if len(rows) < min_impressions or n_clicks == 0:
        return PositionModel(PositionModel.flat(positions).curve, len(rows), n_clicks, 0)
    keys: dict[tuple[str, str], int] = {}
    kidx = np.array([keys.setdefault(r.key, len(keys)) for r in rows], dtype=np.int64)
    pidx = np.clip(np.array([r.position for r in rows], dtype=np.int64) - 1, 0, positions - 1)
    cells, cell_of = np.unique(kidx * positions + pidx, return_inverse=True)
    ck, cp = cells // positions, cells % positions           # each cell's key and position
    n = np.bincount(cell_of).astype(np.float64)              # impressions per cell
    c = np.bincount(cell_of, weights=np.array([r.clicked for r in rows], dtype=np.float64))
    theta = np.full(positions, 0.5)
    gamma = np.full(len(keys), 0.5)
    pos_count = np.maximum(np.bincount(cp, weights=n, minlength=positions), 1.0)
    key_count = np.bincount(ck, weights=n, minlength=len(keys))
    run = 0
    for step in range(1, iterations + 1):
        run = step
        t, g = theta[cp], gamma[ck]
        denom = np.maximum(1.0 - t * g, 1e-12)
        exam = c + (n - c) * t * (1.0 - g) / denom        # expected examined impressions per cell
        rel = c + (n - c) * (1.0 - t) * g / denom         # expected relevant impressions per cell
        new_theta = np.bincount(cp, weights=exam, minlength=positions) / pos_count
        mean_rel = float(rel.sum() / n.sum())
        gamma = np.clip((np.bincount(ck, weights=rel, minlength=len(keys)) + prior * mean_rel)
                        / (key_count + prior), 1e-6, 1 - 1e-6)
        new_theta = np.clip(new_theta, 1e-6, 1.0)
        shift = float(np.max(np.abs(new_theta - theta)))
        theta = new_theta
        if shift < tol:
            break
    shown = np.bincount(pidx, minlength=positions)
    for p in range(1, positions):   # a position never shown takes the one above it
        if not shown[p]:
            theta[p] = theta[p - 1]
    if monotone:
        theta = _decreasing(theta, shown.astype(np.float64))
    curve = np.clip(theta / max(theta[0], 1e-12), floor, None)
    return PositionModel(tuple(float(v) for v in curve), len(rows), int(n_clicks), run)
