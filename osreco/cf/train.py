"""Collaborative-filtering training: implicit ALS, EASE / co-occurrence, time-decayed popularity.

Training turns interactions into the served :class:`~osreco.cf.model.CFModel`.

Example:
    >>> model = train_models(interactions, CFConfig(factors=64))
    >>> model.save("models/cf")
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from scipy import sparse

from osreco.cf.errors import InteractionError
from osreco.cf.interactions import Interaction, InteractionMatrix, build_matrix
from osreco.cf.model import CFConfig, CFModel

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def bm25_item_user(matrix: sparse.csr_matrix, k1: float, b: float) -> tuple[sparse.csr_matrix, np.ndarray]:
    """implicit's ``bm25_weight`` applied to items x users, returned as users x items.

    Returns:
        The weighted users x items matrix and the per-item row sums (for fold-in).
    """
    coo = sparse.coo_matrix(matrix.T)  # items x users, as in implicit's examples
    n_items = float(coo.shape[0])
    idf = math.log(n_items) - np.log1p(np.bincount(coo.col, minlength=coo.shape[1]))
    item_sums = np.ravel(coo.tocsr().sum(axis=1)).astype(np.float64)
    norm = (1.0 - b) + b * item_sums / max(item_sums.mean(), 1e-12)
    data = coo.data * (k1 + 1.0) / (k1 * norm[coo.row] + coo.data) * idf[coo.col]
    weighted = sparse.coo_matrix((data.astype(np.float32), (coo.row, coo.col)), shape=coo.shape)
    return weighted.T.tocsr(), item_sums


def train_als(weighted: sparse.csr_matrix, config: CFConfig,
              progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Implicit-feedback ALS (``implicit``'s CPU solver) on an already weighted matrix.

    Returns:
        ``(user_factors, item_factors)`` as float32 arrays.
    """
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    def _callback(iteration: int, _elapsed: float, _loss: float) -> None:
        if progress:
            progress("als", iteration + 1, config.iterations)

    # implicit parallelizes over users itself; a threaded BLAS underneath slows it down.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=config.factors, regularization=config.regularization,
                                        alpha=config.alpha, iterations=config.iterations,
                                        random_state=config.seed, num_threads=config.threads)
        model.fit(weighted, show_progress=False, callback=_callback)
    return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


def train_ease(binary: sparse.csr_matrix, lam: float) -> np.ndarray:
    """EASE (Steck 2019): ``B = I - P / diag(P)`` with ``P = (X'X + lam I)^-1``, zero diagonal.

    Returns:
        Dense item x item weights (float32).
    """
    gram = (binary.T @ binary).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    inv = np.linalg.inv(gram)
    weights = -inv / np.diag(inv)[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    return weights.astype(np.float32)


def train_cooccurrence(binary: sparse.csr_matrix, neighbors: int) -> sparse.csr_matrix:
    """Cosine item-item co-occurrence, keeping the ``neighbors`` strongest per item (large catalogs).

    Returns:
        Sparse item x item weights, zero diagonal.
    """
    counts = np.sqrt(np.ravel(binary.sum(axis=0))) + 1e-9
    scaled = binary @ sparse.diags(1.0 / counts)
    sim = (scaled.T @ scaled).tocsr()
    sim.setdiag(0.0)
    sim.eliminate_zeros()
    rows, cols, vals = [], [], []
    for i in range(sim.shape[0]):
        start, end = sim.indptr[i], sim.indptr[i + 1]
        top = np.argsort(-sim.data[start:end])[:neighbors] + start
        rows.extend([i] * len(top))
        cols.extend(sim.indices[top].tolist())
        vals.extend(sim.data[top].tolist())
    return sparse.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=sim.shape)


def decayed_popularity(interactions: Iterable[Interaction], item_ids: Sequence[str],
                       half_life_days: float, now: float | None = None) -> np.ndarray:
    """Per item, the count of its events weighted by ``0.5 ** (age / half_life)``.

    Args:
        now: reference time (epoch s); default the newest event, so old datasets still rank.

    Returns:
        float64 scores aligned with ``item_ids``.
    """
    events = list(interactions)
    pos = {it: i for i, it in enumerate(item_ids)}
    ref = now if now is not None else max((e.timestamp for e in events), default=0.0)
    scores = np.zeros(len(item_ids), dtype=np.float64)
    half_life_s = half_life_days * 86400.0
    for e in events:
        i = pos.get(e.item_id)
        if i is not None:
            scores[i] += 0.5 ** (max(ref - e.timestamp, 0.0) / half_life_s)
    return scores


def train_models(interactions: list[Interaction], config: CFConfig = CFConfig(),
                 item_ids: Sequence[str] | None = None, progress: Progress | None = None) -> CFModel:
    """Train ALS, the item-item model and popularity on the same interactions.

    Args:
        interactions: validated events (user ids already pseudonymized where stored).
        config: training settings.
        item_ids: the catalog's item ids (columns); default the items seen.
        progress: called as ``(stage, done, total)``.

    Returns:
        The model with metadata (counts, data window, timings, item coverage).

    Raises:
        InteractionError: no interactions.
    """
    if not interactions:
        raise InteractionError("no interactions to train on", fix="check the interactions file or events index")
    started = time.perf_counter()
    im = build_matrix(interactions, item_ids=item_ids)
    binary = im.matrix.copy()
    binary.data[:] = 1.0
    weighted = _weighted(im, binary, config)
    item_sums = np.ravel(im.matrix.T.sum(axis=1)).astype(np.float64)
    user_f, item_f = train_als(weighted, config, progress)
    if progress:
        progress("item-item", 0, 1)
    n_items = len(im.item_ids)
    item_item = train_ease(binary, config.ease_lambda) if n_items <= config.max_ease_items \
        else train_cooccurrence(binary, config.cooc_neighbors)
    if progress:
        progress("item-item", 1, 1)
    popularity = decayed_popularity(interactions, im.item_ids.tolist(), config.half_life_days)
    meta = _train_meta(interactions, im, config, time.perf_counter() - started)
    return CFModel(im.item_ids, item_f, im.user_ids, user_f, popularity, item_sums, config, item_item, meta)


def _weighted(im: InteractionMatrix, binary: sparse.csr_matrix, config: CFConfig) -> sparse.csr_matrix:
    if config.weighting == "bm25":
        return bm25_item_user(im.matrix, config.bm25_k1, config.bm25_b)[0]
    return im.matrix if config.weighting == "alpha" else binary


def _train_meta(interactions: list[Interaction], im: InteractionMatrix, config: CFConfig,
                seconds: float) -> dict[str, object]:
    seen = int((np.ravel(im.matrix.getnnz(axis=0)) > 0).sum())
    stamps = [e.timestamp for e in interactions]
    return {"models": ["als", "ease" if len(im.item_ids) <= config.max_ease_items else "cooccurrence", "popularity"],
            "interactions": len(interactions), "users": len(im.user_ids), "items": len(im.item_ids),
            "items_with_interactions": seen, "item_coverage": seen / max(len(im.item_ids), 1),
            "data_window": {"from": min(stamps), "to": max(stamps)}, "train_seconds": round(seconds, 3),
            "factors": config.factors}
