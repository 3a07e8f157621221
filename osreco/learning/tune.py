"""Counterfactual fusion tuning: per query class, the weights that would have earned the most
clicks on the logged candidate lists (pure numpy).

Each logged request keeps its fused candidates with every signal's own rank (the query log's
``served``). A weight setting re-fuses them with the sidecar's RRF formula
(:mod:`osreco.plugin.fusion`): ``sum_s w_s / (k + r_s)`` over bm25, dense and popularity; taste
is the class's collaborative boost, additive ``w / (k + r_taste)`` in a listing or without a
query, multiplicative ``base * (1 + w * a)`` for free text and titles, with ``a`` the taste
rank scaled to 0..1. The new order is scored by inverse propensity (IPS): a click logged at
position ``p`` counts ``theta(p') / theta(p)`` when the setting would put the item at ``p'``
within the top ``k`` (ratio clipped), so the estimate corrects for the position bias of the log.

Requests are split by user (a hash of the pseudonym): the validation users pick the weights,
the held-out users compare them with the weights served today. Picking the best of a large grid
on validation users overfits their noise, and IPS estimates are noisy (a click moved up the list
weighs up to the clip), so a setting is promoted only when its held-out gain is significant: the
one-sided 95 % lower bound of the mean per-request difference (tuned minus current) must be
above ``margin``.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from osreco.learning.propensity import PositionModel

__all__ = ["LoggedRequest", "ClassResult", "GRID", "heldout", "ips_clicks", "ips_gains", "tune_class", "tune"]

SIGNALS = ("bm25", "dense", "taste", "popularity")
GRID: dict[str, tuple[float, ...]] = {
    "bm25": (0.0, 0.25, 0.5, 1.0), "dense": (0.0, 0.25, 0.5, 1.0),
    "taste": (0.0, 0.1, 0.3, 0.5, 1.0, 2.0), "popularity": (0.0, 0.3, 0.5, 1.0), "rrf_k": (10.0, 30.0, 60.0, 100.0)}
"""The weights tried per signal (every combination; a signal a class does not use is held)."""
ADDITIVE_TASTE = ("listing", "none")
Z_ONE_SIDED_95 = 1.645


@dataclass(frozen=True)
class LoggedRequest:
    """One logged request: its class, user pseudonym (the request id when anonymous), candidates'
    signal ranks and clicks.

    Args:
        ranks: candidates x signals (:data:`SIGNALS` order), 1-based, 0 = not retrieved.
        logged_pos: each candidate's position as shown (0 = not shown).
        clicked: each candidate clicked or not.
    """

    query_class: str
    user_key: str
    ranks: np.ndarray
    logged_pos: np.ndarray
    clicked: np.ndarray

    @classmethod
    def from_log(cls, doc: Mapping[str, Any], clicked_items: set[str]) -> LoggedRequest | None:
        """From a query-log document (``served``) and the items clicked for its ``query_id``;
        None when nothing was served."""
        served = [c for c in doc.get("served") or [] if isinstance(c, Mapping) and c.get("item_id") is not None]
        if not served:
            return None
        ranks = np.zeros((len(served), len(SIGNALS)), dtype=np.float64)
        for i, c in enumerate(served):
            sig = c.get("signals") or {}
            for j, s in enumerate(SIGNALS):
                v = sig.get("cf" if s == "taste" and "taste" not in sig else s)
                ranks[i, j] = float(v) if isinstance(v, (int, float)) and v and v > 0 else 0.0
        pos = np.array([float(c.get("position") or 0) for c in served])
        clicked = np.array([str(c["item_id"]) in clicked_items for c in served])
        # an anonymous request is split by its own id (else every anonymous request lands in one slice)
        split_key = str(doc.get("user_key") or f"anonymous:{doc.get('query_id')}")
        return cls(str(doc.get("query_class") or "none"), split_key, ranks, pos, clicked)


def heldout(user_key: str, fraction: float = 0.5) -> bool:
    """Whether a user's requests belong to the held-out slice (stable across runs)."""
    h = int(hashlib.sha256(f"learn-split:{user_key}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def _scores(ranks: np.ndarray, weights: Mapping[str, float], cls: str) -> np.ndarray:
    """Fused scores of stacked candidates (requests x candidates x signals)."""
    k = float(weights["rrf_k"])
    present = ranks > 0
    inv = np.where(present, 1.0 / (k + np.where(present, ranks, 1.0)), 0.0)
    base = (weights["bm25"] * inv[..., 0] + weights["dense"] * inv[..., 1]
            + weights["popularity"] * inv[..., 3])
    if cls in ADDITIVE_TASTE:
        return base + weights["taste"] * inv[..., 2]
    taste = ranks[..., 2]
    n = np.maximum(taste.max(axis=-1, keepdims=True), 1.0)
    a = np.where(taste > 0, 1.0 - (taste - 1.0) / n, 0.0)
    return base * (1.0 + weights["taste"] * a)


def ips_clicks(batch: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], weights: Mapping[str, float],
               cls: str, model: PositionModel, top: int = 10, clip: float = 10.0) -> float:
    """Mean IPS-estimated clicks in the top ``top`` per request under ``weights``.

    Args:
        batch: stacked (ranks, logged positions, clicked, valid-candidate mask) of one class.
    """
    gains = ips_gains(batch, weights, cls, model, top, clip)
    return float(gains.mean()) if gains.size else 0.0


def ips_gains(batch: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], weights: Mapping[str, float],
              cls: str, model: PositionModel, top: int = 10, clip: float = 10.0) -> np.ndarray:
    """IPS-estimated clicks in the top ``top`` of each request under ``weights`` (one per request)."""
    ranks, pos, clicked, valid = batch
    if ranks.shape[0] == 0:
        return np.zeros(0)
    scores = np.where(valid, _scores(ranks, weights, cls), -np.inf)
    # position of each candidate under the new order: ties keep the logged order (stable sort)
    order = np.argsort(-scores, axis=1, kind="stable")
    new_pos = np.empty_like(order)
    rows = np.arange(order.shape[0])[:, None]
    new_pos[rows, order] = np.arange(1, order.shape[1] + 1)[None, :]
    logged = np.where(pos > 0, pos, 1.0)
    ratio = np.minimum(model.at(new_pos) / model.at(logged.astype(np.int64)), clip)
    gain = np.where(clicked & (new_pos <= top) & valid, ratio, 0.0)
    return gain.sum(axis=1)


def _stack(requests: Sequence[LoggedRequest], logged_order: bool = True
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = max((len(r.logged_pos) for r in requests), default=0)
    q = len(requests)
    ranks = np.zeros((q, n, len(SIGNALS)))
    pos, clicked, valid = np.zeros((q, n)), np.zeros((q, n), dtype=bool), np.zeros((q, n), dtype=bool)
    for i, r in enumerate(requests):
        m = len(r.logged_pos)
        ranks[i, :m], pos[i, :m], clicked[i, :m], valid[i, :m] = r.ranks, r.logged_pos, r.clicked, True
    return ranks, pos, clicked, valid


@dataclass
class ClassResult:
    """The tuning of one query class: data, the chosen weights, before/after on both slices."""

    query_class: str
    requests: int
    clicks: int
    current: dict[str, float]
    tuned: dict[str, float] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)
    heldout: dict[str, float] = field(default_factory=dict)
    promote: bool = False
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"query_class": self.query_class, "requests": self.requests, "clicks": self.clicks,
                "current": self.current, "tuned": self.tuned, "validation": self.validation,
                "heldout": self.heldout, "promote": self.promote, "reason": self.reason}


def _grid(cls: str, current: Mapping[str, float]) -> list[dict[str, float]]:
    used = ("taste", "popularity", "rrf_k") if cls == "none" else ("bm25", "dense", "taste", "rrf_k")
    axes = [GRID[k] if k in used else (float(current[k]),) for k in (*SIGNALS, "rrf_k")]
    names = (*SIGNALS, "rrf_k")
    return [dict(zip(names, combo)) for combo in itertools.product(*axes)]


def _lower_bound(diff: np.ndarray, users: Sequence[str]) -> float:
    """One-sided 95 % lower bound of the mean per-request difference, with the requests of one
    user as a cluster (a user's requests are not independent draws); -inf with fewer than 2 users."""
    keys = {u: i for i, u in enumerate(dict.fromkeys(users))}
    if len(keys) < 2:
        return float("-inf")
    idx = np.array([keys[u] for u in users])
    totals = np.bincount(idx, weights=diff, minlength=len(keys))
    counts = np.bincount(idx, minlength=len(keys)).astype(np.float64)
    mean = float(diff.sum() / len(diff))
    resid = totals - counts * mean
    se = float(np.sqrt(len(keys) / (len(keys) - 1) * np.sum(resid ** 2)) / len(diff))
    return mean - Z_ONE_SIDED_95 * se


def tune_class(cls: str, requests: Sequence[LoggedRequest], current: Mapping[str, float], model: PositionModel,
               min_requests: int = 20, min_clicks: int = 5, margin: float = 0.0,
               hand: Mapping[str, float] | None = None) -> ClassResult:
    """Pick the weights of ``cls`` on the validation users; promote them only when they beat
    ``current`` on the held-out users by more than ``margin`` (IPS clicks per request). ``hand``
    (the configured weights) is scored on the held-out users too, for the report."""
    cur = {k: float(current[k]) for k in (*SIGNALS, "rrf_k")}
    clicks = int(sum(int(r.clicked.sum()) for r in requests))
    result = ClassResult(cls, len(requests), clicks, cur)
    val = [r for r in requests if not heldout(r.user_key)]
    test = [r for r in requests if heldout(r.user_key)]
    val_clicks, test_clicks = (sum(int(r.clicked.sum()) for r in s) for s in (val, test))
    if min(len(val), len(test)) < min_requests or min(val_clicks, test_clicks) < min_clicks:
        result.reason = (f"too little traffic: {len(val)} validation / {len(test)} held-out requests with "
                         f"{val_clicks} / {test_clicks} clicks (need {min_requests} and {min_clicks} each)")
        return result
    vb, tb = _stack(val), _stack(test)
    best, best_v = cur, ips_clicks(vb, cur, cls, model)
    for w in _grid(cls, cur):
        v = ips_clicks(vb, w, cls, model)
        if v > best_v + 1e-12:
            best, best_v = w, v
    result.tuned = best
    result.validation = {"current": round(ips_clicks(vb, cur, cls, model), 5), "tuned": round(best_v, 5)}
    g_before, g_after = ips_gains(tb, cur, cls, model), ips_gains(tb, best, cls, model)
    before, after = float(g_before.mean()), float(g_after.mean())
    bound = _lower_bound(g_after - g_before, [r.user_key for r in test])
    result.heldout = {"current": round(before, 5), "tuned": round(after, 5), "gain_lower_bound": round(bound, 5)}
    if hand is not None:
        result.heldout["hand"] = round(ips_clicks(tb, {k: float(hand[k]) for k in cur}, cls, model), 5)
    if best == cur:
        result.reason = "the current weights are already the best on the validation users"
    elif after > before and bound > margin:
        result.promote, result.reason = True, (f"held-out IPS clicks/request {before:.4f} -> {after:.4f} "
                                               f"(gain >= {bound:.4f} at 95 %)")
    elif after > before:
        result.reason = (f"refused: held-out IPS clicks/request {before:.4f} -> {after:.4f} is not a significant "
                         f"gain (95 % lower bound {bound:.4f} <= {margin:.4f})")
    else:
        result.reason = f"refused: held-out IPS clicks/request {after:.4f} is not above the current {before:.4f}"
    return result


def tune(requests: Sequence[LoggedRequest], current: Mapping[str, Mapping[str, float]], model: PositionModel,
         hand: Mapping[str, Mapping[str, float]] | None = None, **kwargs: Any) -> dict[str, ClassResult]:
    """:func:`tune_class` for every class in ``current`` (requests grouped by their class)."""
    by_class: dict[str, list[LoggedRequest]] = {}
    for r in requests:
        by_class.setdefault(r.query_class, []).append(r)
    return {cls: tune_class(cls, by_class.get(cls, []), weights, model, hand=(hand or {}).get(cls), **kwargs)
            for cls, weights in current.items()}
