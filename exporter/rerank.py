"""Runtime reranking with a cross-encoder bundle: numpy and onnxruntime only, no torch.

The sidecar calls :func:`rerank` on its top N fused candidates when ``OSRECO_RERANK_BUNDLE``
is set; training lives in ``osreco.training.reranker``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from osreco.exporter.errors import ConfigError

__all__ = ["rerank"]


def rerank(encoder, query: str, candidate_texts: Sequence[str], top_n: int | None = None,
           batch_size: int = 32) -> tuple[list[int], np.ndarray]:
    """Re-order the first ``top_n`` candidates by the cross-encoder's relevance score.

    Pure runtime: ``encoder`` is an ``osreco.exporter.Encoder`` over a classification bundle
    (anything with ``score_pairs``). Candidates after ``top_n`` keep their order, below the
    reranked ones; ties keep the incoming order (stable sort).

    Args:
        encoder: the reranker bundle's Encoder.
        query: the search text (the intent's remaining text, or the raw query).
        candidate_texts: the fused candidates' item texts, best first.
        top_n: how many to rescore (None: all).
        batch_size: pairs per inference batch.

    Returns:
        (new order as indexes into ``candidate_texts``, scores of the rescored head).

    Raises:
        ConfigError: ``top_n`` < 1.
    """
    if top_n is not None and top_n < 1:
        raise ConfigError(f"top_n must be >= 1, got {top_n}")
    n = len(candidate_texts) if top_n is None else min(top_n, len(candidate_texts))
    if n == 0:
        return list(range(len(candidate_texts))), np.zeros(0, dtype=np.float32)
    scores = np.asarray(encoder.score_pairs([(query, t) for t in candidate_texts[:n]],
                                            batch_size=batch_size), dtype=np.float32)
    head = sorted(range(n), key=lambda i: -float(scores[i]))
    return head + list(range(n, len(candidate_texts))), scores
