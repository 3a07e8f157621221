"""The served collaborative model: factors, item-item weights, popularity, and how to score with them.

The sidecar loads a :class:`CFModel` from disk (``CFModel.load``) and serves it without
retraining: ``fold_in`` computes a user's vector from a handful of events by the same
least-squares solve that ALS uses for users, ``predict_item_factors`` gives items without
interactions a factor from their content embedding, and ``recommend_cold`` serves people with
no history. ``osreco.cf.train`` builds the model.

Example:
    >>> model = CFModel.load("models/cf")
    >>> vec = model.fold_in(["42", "7"], [1.0, 1.0])
    >>> model.recommend(vec, exclude={"42", "7"}, k=10)
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from scipy import sparse

from osreco.cf.errors import InteractionError
from osreco.ingest.errors import ConfigError

FORMAT_VERSION = 1
WEIGHTINGS = ("bm25", "alpha", "none")


@dataclass(frozen=True)
class CFConfig:
    """Training settings (defaults tuned on ML-100k, see docs/cf.md).

    Args:
        factors: ALS dimension (= ``cf_dim`` of the item index).
        regularization: ALS L2 weight.
        alpha: ALS confidence scale (confidence = alpha * weighted value).
        iterations: ALS sweeps.
        weighting: ``bm25`` (implicit's bm25_weight on items x users), ``alpha`` (raw values) or ``none`` (binary).
        bm25_k1, bm25_b: BM25 weighting parameters.
        ease_lambda: EASE L2 weight.
        max_ease_items: above this many items, co-occurrence replaces EASE.
        cooc_neighbors: neighbours kept per item by co-occurrence.
        half_life_days: popularity decay half-life.
        content_ridge: L2 weight of the content -> factor regression.
        blend: weights of (als, item_item, popularity) in the blended score.
        seed: ALS random state.
        threads: ALS threads (0 = all cores).
    """

    factors: int = 64
    regularization: float = 20.0
    alpha: float = 1.0
    iterations: int = 15
    weighting: str = "bm25"
    bm25_k1: float = 100.0
    bm25_b: float = 0.5
    ease_lambda: float = 300.0
    max_ease_items: int = 20_000
    cooc_neighbors: int = 100
    half_life_days: float = 30.0
    content_ridge: float = 1.0
    blend: tuple[float, float, float] = (0.5, 0.5, 0.0)
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        if self.factors < 1 or self.iterations < 1:
            raise ConfigError("factors and iterations must be >= 1", field="factors")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting {self.weighting!r} is not one of {WEIGHTINGS}", field="weighting")
        for name in ("regularization", "alpha", "ease_lambda", "half_life_days", "content_ridge"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0", field=name)
        if len(self.blend) != 3 or min(self.blend) < 0 or sum(self.blend) <= 0:
            raise ConfigError("blend needs three non-negative weights, not all zero", field="blend")


def fit_content_regression(embeddings: np.ndarray, factors: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge regression from content embeddings to item factors (with a bias row).

    Args:
        embeddings: (n, d) content vectors of items that have factors.
        factors: (n, f) their item factors.

    Returns:
        (d + 1, f) weights; predict with :func:`predict_from_content`.
    """
    if len(embeddings) != len(factors) or len(embeddings) == 0:
        raise InteractionError("content regression needs the same, non-zero number of embeddings and factors",
                               fix="index items with embeddings before training collaborative factors")
    x = np.hstack([embeddings.astype(np.float64), np.ones((len(embeddings), 1))])
    gram = x.T @ x + ridge * np.eye(x.shape[1])
    return np.linalg.solve(gram, x.T @ factors.astype(np.float64)).astype(np.float32)


def predict_from_content(weights: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Item factors predicted from content embeddings with :func:`fit_content_regression` weights."""
    x = np.hstack([embeddings.astype(np.float32), np.ones((len(embeddings), 1), np.float32)])
    return x @ weights


def top_k(scores: np.ndarray, k: int, exclude_idx: Iterable[int] = ()) -> np.ndarray:
    """Indexes of the ``k`` highest scores, best first, skipping ``exclude_idx`` (ties: lower index first)."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    excluded = list(exclude_idx)
    if excluded:
        scores[excluded] = -np.inf
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return part[np.lexsort((part, -scores[part]))]


def minmax(scores: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (all-equal scores become 0)."""
    lo, hi = float(np.min(scores)), float(np.max(scores))
    return np.zeros_like(scores, dtype=np.float64) if hi - lo < 1e-12 else (scores - lo) / (hi - lo)


@dataclass
class CFModel:
    """Trained collaborative factors and their id maps; loaded by the sidecar.

    ``item_item`` is dense EASE weights, sparse co-occurrence, or ``None``.
    """

    item_ids: np.ndarray
    item_factors: np.ndarray
    user_keys: np.ndarray
    user_factors: np.ndarray
    popularity: np.ndarray
    item_sums: np.ndarray
    config: CFConfig
    item_item: np.ndarray | sparse.csr_matrix | None = None
    meta: dict[str, object] = field(default_factory=dict)
    content_weights: np.ndarray | None = None  # (d + 1, dim) content -> factor regression

    def __post_init__(self) -> None:
        self._item_pos = {it: i for i, it in enumerate(self.item_ids.tolist())}
        self._user_pos = {u: i for i, u in enumerate(self.user_keys.tolist())}
        self._gram = (self.item_factors.T.astype(np.float64) @ self.item_factors.astype(np.float64))

    @property
    def dim(self) -> int:
        """Factor dimension."""
        return int(self.item_factors.shape[1])

    def item_positions(self, item_ids: Iterable[str]) -> list[int]:
        """Rows of the known ``item_ids`` (unknown ids are skipped)."""
        return [self._item_pos[i] for i in item_ids if i in self._item_pos]

    def user_vector(self, user_key: str) -> np.ndarray | None:
        """The trained vector of a (pseudonymized) user, or ``None`` when unknown."""
        row = self._user_pos.get(user_key)
        return None if row is None else self.user_factors[row]

    def confidences(self, item_idx: Sequence[int], values: Sequence[float]) -> np.ndarray:
        """The confidence each event gets, weighted as in training (summing repeats of an item)."""
        agg: dict[int, float] = {}
        for i, v in zip(item_idx, values):
            agg[i] = agg.get(i, 0.0) + float(v)
        idx = np.fromiter(agg.keys(), dtype=np.int64, count=len(agg))
        vals = np.fromiter(agg.values(), dtype=np.float64, count=len(agg))
        cfg = self.config
        if cfg.weighting == "none":
            vals = np.ones_like(vals)
        elif cfg.weighting == "bm25":
            idf = math.log(len(self.item_ids)) - math.log1p(len(idx))
            norm = (1 - cfg.bm25_b) + cfg.bm25_b * self.item_sums[idx] / max(self.item_sums.mean(), 1e-12)
            vals = vals * (cfg.bm25_k1 + 1) / (cfg.bm25_k1 * norm + vals) * idf
        return cfg.alpha * vals

    def fold_in(self, item_ids: Sequence[str], values: Sequence[float] | None = None) -> np.ndarray:
        """A user vector from events, holding item factors fixed (implicit ALS's user solve).

        Solves ``(Y'Y + Y'(C-I)Y + reg I) x = Y'C p`` for the user's items.

        Args:
            item_ids: items the user interacted with (unknown ids ignored).
            values: event values (default 1 each).

        Returns:
            float32 vector of length ``dim`` (zeros when no item is known).
        """
        values = [1.0] * len(item_ids) if values is None else values
        summed: dict[int, float] = {}
        for item, value in zip(item_ids, values):
            row = self._item_pos.get(item)
            if row is not None:
                summed[row] = summed.get(row, 0.0) + float(value)
        if not summed:
            return np.zeros(self.dim, dtype=np.float32)
        idx = np.fromiter(summed.keys(), dtype=np.int64, count=len(summed))
        conf = self.confidences(idx.tolist(), list(summed.values()))
        y = self.item_factors[idx].astype(np.float64)
        a = self._gram + self.config.regularization * np.eye(self.dim) + (y.T * (conf - 1.0)) @ y
        b = y.T @ conf
        return np.linalg.solve(a, b).astype(np.float32)

    def fit_content(self, embeddings: dict[str, np.ndarray]) -> list[str]:
        """Learn content -> factor weights on items with interactions; give the others predicted factors.

        Args:
            embeddings: ``{item_id: content embedding}`` (e.g. the item index's ``embedding``).

        Returns:
            Ids of the items whose factor was predicted from content.

        Raises:
            InteractionError: no item has both interactions and an embedding.
        """
        counts = self.item_sums > 0
        known = [i for i, it in enumerate(self.item_ids.tolist()) if counts[i] and it in embeddings]
        if not known:
            raise InteractionError("no item has both interactions and a content embedding",
                                   fix="index items with embeddings before training collaborative factors")
        x = np.stack([embeddings[str(self.item_ids[i])] for i in known])
        self.content_weights = fit_content_regression(x, self.item_factors[known], self.config.content_ridge)
        cold = [i for i, it in enumerate(self.item_ids.tolist()) if not counts[i] and it in embeddings]
        if cold:
            self.item_factors = self.item_factors.copy()
            self.item_factors[cold] = self.predict_item_factors(
                np.stack([embeddings[str(self.item_ids[i])] for i in cold]))
            self.__post_init__()  # the Gram matrix changed
        return [str(self.item_ids[i]) for i in cold]

    def predict_item_factors(self, embeddings: np.ndarray) -> np.ndarray:
        """Factors for items without interactions, from their content embeddings (n, d).

        Raises:
            InteractionError: the model was trained without content (call :meth:`fit_content`).
        """
        if self.content_weights is None:
            raise InteractionError("this CF model has no content regression", fix="train with item embeddings")
        return predict_from_content(self.content_weights, np.atleast_2d(embeddings))

    def als_scores(self, user_vector: np.ndarray) -> np.ndarray:
        """Inner product of the user vector with every item factor."""
        return self.item_factors @ user_vector.astype(np.float32)

    def item_item_scores(self, item_ids: Iterable[str]) -> np.ndarray:
        """Summed item-item weights of a history (zeros without an item-item model)."""
        idx = self.item_positions(item_ids)
        if self.item_item is None or not idx:
            return np.zeros(len(self.item_ids), dtype=np.float32)
        return np.ravel(np.asarray(self.item_item[idx].sum(axis=0))).astype(np.float32)

    def popularity_scores(self) -> np.ndarray:
        """Time-decayed popularity per item (aligned with ``item_ids``)."""
        return self.popularity

    def recommend(self, user_vector: np.ndarray, exclude: Iterable[str] = (), k: int = 10) -> list[tuple[str, float]]:
        """Top ``k`` ``(item_id, cf_score)`` by inner product, skipping ``exclude``."""
        scores = self.als_scores(user_vector)
        best = top_k(scores, k, self.item_positions(exclude))
        return [(str(self.item_ids[i]), float(scores[i])) for i in best]

    def blended_scores(self, history: Sequence[str], values: Sequence[float] | None = None,
                       user_vector: np.ndarray | None = None) -> np.ndarray:
        """``blend``-weighted sum of min-max scaled ALS, item-item and popularity scores.

        ``user_vector`` defaults to the fold-in of ``history``.
        """
        w_als, w_ii, w_pop = self.config.blend
        total = w_pop * minmax(self.popularity)
        if w_als:
            vec = self.fold_in(history, values) if user_vector is None else user_vector
            total = total + w_als * minmax(self.als_scores(vec))
        if w_ii and self.item_item is not None:
            total = total + w_ii * minmax(self.item_item_scores(history))
        return total

    def recommend_cold(self, session_items: Sequence[str] = (), k: int = 10) -> list[tuple[str, float]]:
        """For a user without history: popularity, steered by the current session's items.

        With no session items this is the popularity ranking; with some, popularity (0.2)
        plus ALS fold-in and item-item neighbours of the session (0.4 each).
        """
        scores = minmax(self.popularity)
        if self.item_positions(session_items):
            ii = minmax(self.item_item_scores(session_items)) if self.item_item is not None else 0.0
            als = minmax(self.als_scores(self.fold_in(list(session_items))))
            scores = 0.2 * scores + 0.4 * als + 0.4 * ii
        best = top_k(scores, k, self.item_positions(session_items))
        return [(str(self.item_ids[i]), float(scores[i])) for i in best]

    def save(self, directory: str | Path) -> Path:
        """Write ``cf_model.npz`` and ``cf_model.json`` (metadata and config) into ``directory``.

        Each file is written to a temporary file beside it and moved into place with
        ``os.replace``, so a reader sees the old file or the new one, never half of one.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {"item_ids": self.item_ids.astype(str), "item_factors": self.item_factors,
                  "user_keys": self.user_keys.astype(str), "user_factors": self.user_factors,
                  "popularity": self.popularity, "item_sums": self.item_sums}
        if self.content_weights is not None:
            arrays["content_weights"] = self.content_weights
        if isinstance(self.item_item, np.ndarray):
            arrays["ease"] = self.item_item
        elif self.item_item is not None:
            arrays.update(cooc_data=self.item_item.data, cooc_indices=self.item_item.indices,
                          cooc_indptr=self.item_item.indptr)
        # as load() reads it
        _replace_atomically(out / "cf_model.npz", lambda f: np.savez(f, allow_pickle=False, **arrays))
        doc = {"format_version": FORMAT_VERSION, "config": asdict(self.config), "meta": self.meta}
        _replace_atomically(out / "cf_model.json", lambda f: f.write(json.dumps(doc, indent=2).encode("utf-8")))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> CFModel:
        """Read a model written by :meth:`save`.

        Raises:
            InteractionError: files missing or of another format version.
        """
        src = Path(directory)
        try:
            doc = json.loads((src / "cf_model.json").read_text())
            data = np.load(src / "cf_model.npz", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InteractionError(f"no readable CF model in {src}: {e}", file=str(src),
                                   fix="run `osreco cf train ... --model-dir DIR` first") from e
        if doc.get("format_version") != FORMAT_VERSION:
            raise InteractionError(f"CF model in {src} has format {doc.get('format_version')}, "
                                   f"expected {FORMAT_VERSION}", file=str(src), fix="retrain the model")
        config = CFConfig(**{**doc["config"], "blend": tuple(doc["config"]["blend"])})
        item_item: np.ndarray | sparse.csr_matrix | None = data["ease"] if "ease" in data else None
        if "cooc_data" in data:
            n = len(data["item_ids"])
            item_item = sparse.csr_matrix((data["cooc_data"], data["cooc_indices"], data["cooc_indptr"]), shape=(n, n))
        content = data["content_weights"] if "content_weights" in data else None
        return cls(data["item_ids"].astype(object), data["item_factors"], data["user_keys"].astype(object),
                   data["user_factors"], data["popularity"], data["item_sums"], config, item_item, doc["meta"],
                   content)

    def without_user(self, *user_keys: str) -> CFModel:
        """A copy without the vectors of ``user_keys`` (for ``forget``); ``meta["users"]`` is recounted.

        ``meta["users_forgotten"]`` counts the users removed since training.
        """
        keep = ~np.isin(self.user_keys.astype(str), np.asarray(user_keys, dtype=str))
        removed = int((~keep).sum())
        meta = dict(self.meta)
        if removed:
            meta["users"] = int(keep.sum())
            meta["users_forgotten"] = int(str(meta.get("users_forgotten", 0))) + removed
        return CFModel(self.item_ids, self.item_factors, self.user_keys[keep], self.user_factors[keep],
                       self.popularity, self.item_sums, self.config, self.item_item, meta,
                       self.content_weights)


def _replace_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through a temporary file in its folder, fsync it, then ``os.replace`` it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private; keep the mode the old file had (readable by the sidecar)
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
