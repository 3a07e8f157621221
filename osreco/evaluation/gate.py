"""The quality gate: evaluate a candidate model against the serving one, promote only if not worse.

Flow of :func:`promote`:

1. the candidate (a Hugging Face folder, exported here into a staging bundle, or a bundle)
   and the current bundle are evaluated by the same ``Evaluator`` (bundle -> metrics);
2. :func:`decide` compares NDCG@10: a worse candidate is refused, both sets of numbers
   shown, and nothing is exported, re-indexed or switched;
3. a candidate at least as good is installed as ``<bundles_root>/<artifact>``; with an
   alias, the item index is rebuilt into a new version with the new vectors (texts and
   ``cf_vector`` are carried over from the serving version) and the alias swapped atomically;
4. last, ``<bundles_root>/current`` (a symlink) is switched to the new bundle.

Hot-reload signal for the sidecar: the alias's ``_meta.artifact_id`` changes at the swap;
the bundle with that id is already installed at :func:`bundle_path` (before the swap), and
``<bundles_root>/current`` points at it right after (for restarts: ``OSRECO_BUNDLE=<root>/current``).

It orchestrates the other parts (exporter, ingest, the sidecar's evaluation), so it lives
in the top-level package with the CLI and the demo; the parts never import it. They load
inside the functions, so ``osreco --help`` stays light.
"""

from __future__ import annotations

import math
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osreco.exporter.bundles import bundle_path, switch_current
from osreco.exporter.errors import ConfigError

__all__ = ["Decision", "decide", "Evaluator", "offline_evaluator", "harness_evaluator", "PromoteConfig",
           "PromoteResult", "promote", "reindex"]

Evaluator = Callable[[Path], dict[str, float]]
"""A bundle folder -> its metrics (must contain the gate's metric, e.g. ``ndcg``)."""


@dataclass(frozen=True)
class Decision:
    """The gate's verdict and the numbers it was based on."""

    promote: bool
    metric: str
    candidate: Mapping[str, float]
    current: Mapping[str, float]
    min_delta: float
    guards: tuple[str, ...] = ()

    @property
    def delta(self) -> float:
        """Candidate minus current on the gate's metric."""
        return float(self.candidate[self.metric]) - float(self.current[self.metric])

    def table(self) -> str:
        """A markdown table of every shared numeric metric: current, candidate, delta."""
        keys = [k for k in self.current if k in self.candidate
                and isinstance(self.current[k], (int, float)) and isinstance(self.candidate[k], (int, float))]
        lines = ["| metric | current | candidate | delta |", "|---|---|---|---|"]
        for k in keys:
            cur, cand = float(self.current[k]), float(self.candidate[k])
            mark = " (gate)" if k == self.metric else " (guard)" if k in self.guards else ""
            lines.append(f"| {k}{mark} | {cur:.4f} | {cand:.4f} | {cand - cur:+.4f} |")
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: promoted or refused, with both numbers."""
        verb = "promote" if self.promote else "refuse"
        guards = "".join(f"; {g} {float(self.candidate[g]):.4f} vs {float(self.current[g]):.4f} (must not drop)"
                         for g in self.guards)
        return (f"{verb}: candidate {self.metric} {float(self.candidate[self.metric]):.4f} vs current "
                f"{float(self.current[self.metric]):.4f} (delta {self.delta:+.4f}, needs >= {self.min_delta:+.4f})"
                + guards)


def decide(candidate: Mapping[str, float], current: Mapping[str, float], metric: str = "ndcg",
           min_delta: float = 0.0, guards: Sequence[str] = ()) -> Decision:
    """Promote when ``candidate[metric] >= current[metric] + min_delta`` and no ``guards`` metric
    is lower than the current model's (e.g. the clicks of held-out logged traffic).

    Raises:
        ConfigError: the metric or a guard is missing or not a finite number in either result.
    """
    for name, metrics in (("candidate", candidate), ("current", current)):
        for key in (metric, *guards):
            value = metrics.get(key)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"the {name}'s evaluation has no finite {key!r} (got {value!r})",
                                  fix=f"evaluate with a task that reports {key}")
    ok = float(candidate[metric]) >= float(current[metric]) + min_delta - 1e-12
    ok = ok and all(float(candidate[g]) >= float(current[g]) - 1e-12 for g in guards)
    return Decision(ok, metric, dict(candidate), dict(current), min_delta, tuple(guards))


def offline_evaluator(max_queries: int = 48, users_per_query: int = 4, k: int = 10, seed: int = 7,
                      threads: int | None = None, max_items: int | None = None,
                      rerank_bundle: Path | None = None, rerank_n: int = 50) -> Evaluator:
    """The personalized-search task of ``osreco eval``, kNN signal only, scored in memory.

    Same queries (English and Chinese templates), same time-ordered split and graded relevance
    as ``osreco eval`` (``osreco.evaluation.data``); each query's vector is compared by cosine
    with every MovieLens item's vector (exact search, no OpenSearch). It isolates what the
    encoder changes; the full sidecar numbers come from ``osreco eval``.

    Args:
        max_queries, users_per_query, seed: the size and sample of the task.
        k: the cut-off.
        threads: encoder threads.
        max_items: search only the relevant items plus a seeded sample of others, this many
            in all (a cheaper, easier task for tests; None: all 1,681 movies).
        rerank_bundle: a reranker (classification) bundle applied to the top ``rerank_n``.
        rerank_n: how many kNN candidates the reranker re-orders.

    Returns:
        bundle -> ``{"ndcg", "recall", "pairs"}``.
    """
    def evaluate(bundle: Path) -> dict[str, float]:
        import numpy as np

        from osreco.evaluation.metrics import mean, ndcg_graded_at_k, recall_capped_at_k
        from osreco.exporter import Encoder

        movies, texts, pairs = _eval_task(max_queries, users_per_query, seed)
        ids = _item_subset(sorted(texts, key=int), pairs, max_items, seed)
        encoder = Encoder(bundle, threads=threads)
        items = encoder.encode_items([texts[i] for i in ids])
        items = items / np.linalg.norm(items, axis=1, keepdims=True).clip(1e-12)
        queries = sorted({p.query.text for p in pairs})
        qv = encoder.encode_queries(queries)
        qv = qv / np.linalg.norm(qv, axis=1, keepdims=True).clip(1e-12)
        depth = max(k, rerank_n) if rerank_bundle else k
        top = {q: [ids[j] for j in np.argsort(-(items @ v), kind="stable")[:depth]] for q, v in zip(queries, qv)}
        if rerank_bundle:
            from osreco.training.reranker import rerank

            scorer = Encoder(rerank_bundle, threads=threads)
            for q, ranked in top.items():
                order, _ = rerank(scorer, q, [texts[i] for i in ranked], top_n=rerank_n)
                top[q] = [ranked[i] for i in order]
        ndcg = [ndcg_graded_at_k(top[p.query.text], p.grades, k) for p in pairs]
        recall = [recall_capped_at_k(top[p.query.text], set(p.grades), k) for p in pairs]
        return {"ndcg": mean(ndcg), "recall": mean(recall), "pairs": float(len(pairs))}

    return evaluate


def _item_subset(ids: list[str], pairs, max_items: int | None, seed: int) -> list[str]:
    """All ids, or every relevant id plus seeded others up to ``max_items``."""
    import random

    if not max_items or max_items >= len(ids):
        return ids
    relevant = sorted({i for p in pairs for i in p.grades}, key=int)
    others = [i for i in ids if i not in set(relevant)]
    extra = random.Random(seed).sample(others, max(0, min(len(others), max_items - len(relevant))))
    return sorted(relevant + extra, key=int)


def harness_evaluator(variant: str = "osreco", quick: bool = True, alias_prefix: str = "osreco-gate",
                      work_dir: Path | None = None, **overrides: Any) -> Evaluator:
    """The real ``osreco eval`` personalized-search task (sidecar + OpenSearch) as an Evaluator.

    Each bundle gets its own item index (``<alias_prefix>-<artifact>``, reused while its
    ``_meta`` matches) so the two models never share vectors.

    Args:
        variant: which search variant's numbers gate (``osreco`` = the full system, ``knn``...).
        quick: the CI-sized subset of ``osreco eval``.
        alias_prefix: prefix of the evaluation indexes.
        work_dir: where the evaluation's CF models go (default: a temporary folder).
        overrides: further ``EvalConfig`` fields (``max_queries``, ``users_per_query``...).

    Returns:
        bundle -> the variant's ``ndcg``, ``recall``, ``violation_rate`` and every variant's
        NDCG as ``<name>_ndcg``.
    """
    def evaluate(bundle: Path) -> dict[str, float]:
        import tempfile

        from osreco.evaluation.run import EvalConfig, run_eval
        from osreco.exporter import load_manifest

        short = load_manifest(bundle, verify=False).artifact_id.split(":")[-1][:12]
        alias = f"{alias_prefix}-{short}"
        cf_dir = Path(work_dir or tempfile.mkdtemp(prefix="osreco-gate-")) / f"cf-{alias}"
        config = EvalConfig.from_env(quick=quick, bundle_dir=str(bundle), tasks=("search",), alias=alias,
                                     cf_model_dir=cf_dir, **overrides)
        variants = run_eval(config)["search"]["variants"]
        if variant not in variants:
            raise ConfigError(f"unknown search variant {variant!r}", fix=f"use one of {sorted(variants)}")
        out = {k: float(v) for k, v in variants[variant].items()}
        out.update({f"{name}_ndcg": float(v["ndcg"]) for name, v in variants.items()})
        return out

    return evaluate


def _eval_task(max_queries: int, users_per_query: int, seed: int):
    """(movies, item texts, query pairs) of the evaluation's personalized-search task."""
    from osreco.evaluation.data import Movie, generate_queries, sample_pairs
    from osreco.evaluation.setup import split_ratings
    from osreco.ingest.movielens import movielens_ratings_path
    from osreco.training.data import movielens_catalog

    catalog = movielens_catalog()
    movies = {i: Movie(i, c.year, frozenset(c.genres)) for i, c in catalog.items()}
    split = split_ratings(movielens_ratings_path(), frozenset(movies))
    queries = generate_queries(movies.values())
    if max_queries and len(queries) > max_queries:
        step = len(queries) / max_queries
        queries = [queries[int(i * step)] for i in range(max_queries)]
    pairs = sample_pairs(queries, split.held_out, movies, users_per_query, seed)
    return movies, {i: c.document for i, c in catalog.items()}, pairs


@dataclass(frozen=True)
class PromoteConfig:
    """Options of :func:`promote`.

    Args:
        candidate: a fine-tuned Hugging Face folder (exported here) or a bundle folder.
        current: the serving bundle folder.
        bundles_root: where promoted bundles live (``<root>/<artifact>``, ``<root>/current``).
        quantize: precision of the candidate's export (``int8`` or None for fp32).
        alias: the item index alias to rebuild with the new vectors (None: no re-index).
        catalog: ``movielens`` or a catalog JSONL (item_id, title, text) to re-embed.
        metric: the gate's metric; ``min_delta``: how much better the candidate must be.
        threads: export threads; ``guards``: metrics that must not drop either (see :func:`decide`).
    """

    candidate: Path
    current: Path
    bundles_root: Path
    quantize: str | None = None
    alias: str | None = None
    catalog: str = "movielens"
    metric: str = "ndcg"
    min_delta: float = 0.0
    threads: int = 2
    guards: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("candidate", "current", "bundles_root"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if not (self.current / "manifest.json").is_file():
            raise ConfigError("--current is not a bundle (no manifest.json)", path=self.current,
                              fix="pass the serving bundle folder")
        if not (self.candidate / "manifest.json").is_file() and not (self.candidate / "config.json").is_file():
            raise ConfigError("--candidate is neither a bundle nor a Hugging Face folder", path=self.candidate,
                              fix="pass the output of `osreco train encoder` or a bundle")
        if self.quantize not in (None, "int8"):
            raise ConfigError(f"quantize must be int8 or None, got {self.quantize!r}")


@dataclass
class PromoteResult:
    """What the gate decided and, when it promoted, what changed."""

    decision: Decision
    bundle: Path | None = None
    artifact_id: str | None = None
    index: dict[str, object] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return self.decision.promote


def promote(config: PromoteConfig, evaluator: Evaluator, client=None,
            report: Callable[[str], None] = print) -> PromoteResult:
    """Evaluate, decide, and only for a candidate at least as good: install, re-index, switch.

    Args:
        config: what to compare and where to install.
        evaluator: bundle -> metrics, used for both models.
        client: opensearch-py client (needed when ``config.alias`` is set).
        report: receives progress lines and the comparison table.

    Returns:
        The decision, and the promoted bundle, artifact id and rebuild summary.

    Raises:
        ConfigError: an alias without a client, or a metric missing from the evaluation.
    """
    if config.alias and client is None:
        raise ConfigError("re-indexing needs an OpenSearch client", fix="pass --url or drop --alias")
    config.bundles_root.mkdir(parents=True, exist_ok=True)
    staged = _stage(config, report)
    try:
        report(f"evaluating current {config.current}")
        current = evaluator(config.current)
        report(f"evaluating candidate {staged}")
        decision = decide(evaluator(staged), current, config.metric, config.min_delta, config.guards)
    except BaseException:
        _discard(staged, config)
        raise
    report(decision.table())
    report(decision.summary())
    if not decision.promote:
        _discard(staged, config)
        return PromoteResult(decision)
    bundle, artifact_id = _install(staged, config)
    index = reindex(client, bundle, config.alias, config.catalog, report) if config.alias else {}
    switch_current(config.bundles_root, bundle)
    report(f"serving {artifact_id} from {config.bundles_root / 'current'}")
    return PromoteResult(decision, bundle, artifact_id, index)


def _stage(config: PromoteConfig, report: Callable[[str], None]) -> Path:
    """The candidate as a bundle: as given, or exported into a staging folder."""
    if (config.candidate / "manifest.json").is_file():
        return config.candidate
    from osreco.exporter import ExportOptions, export_model

    staged = config.bundles_root / f".staging-{uuid.uuid4().hex[:8]}"
    export_model(config.candidate, staged, ExportOptions(quantize=config.quantize, threads=config.threads,
                                                         model_name=config.candidate.name), report=report)
    return staged


def _discard(staged: Path, config: PromoteConfig) -> None:
    """Remove a staging bundle made here (never a bundle the caller passed)."""
    if staged != config.candidate:
        shutil.rmtree(staged, ignore_errors=True)


def _install(staged: Path, config: PromoteConfig) -> tuple[Path, str]:
    """Move (or copy) the staged bundle to ``<bundles_root>/<artifact>``."""
    from osreco.exporter import load_manifest

    artifact_id = load_manifest(staged).artifact_id
    final = bundle_path(config.bundles_root, artifact_id)
    if final.resolve() == staged.resolve() or final.exists():
        if staged != config.candidate and staged != final:
            shutil.rmtree(staged, ignore_errors=True)
        return (final if final.exists() else staged), artifact_id
    if staged == config.candidate:
        shutil.copytree(staged, final)
    else:
        staged.rename(final)
    return final, artifact_id


def reindex(client, bundle: Path, alias: str, catalog: str = "movielens",
            report: Callable[[str], None] = print) -> dict[str, object]:
    """Rebuild ``alias`` as a new version embedded with ``bundle``, then swap the alias.

    Item fields are re-read from the catalog (texts unchanged); ``cf_vector`` is carried over
    from the serving version (``WriteConfig.reuse_from``). Searches keep going through the
    alias; the old version is deleted after a short grace period.

    Returns:
        ``{"index", "previous", "indexed", "dead_lettered"}``.
    """
    from osreco.exporter import Encoder
    from osreco.ingest.catalog import FieldMap, read_catalog
    from osreco.ingest.index_spec import IndexSpec
    from osreco.ingest.movielens import read_movielens_items
    from osreco.ingest.rebuild import RebuildConfig, alias_indexes, alias_meta, rebuild_index
    from osreco.ingest.writer import IngestReport, WriteConfig, index_items

    encoder = Encoder(bundle)
    previous = alias_indexes(client, alias)
    meta: dict = {}
    if previous:
        _, meta = alias_meta(client, previous[0])
    spec = IndexSpec.from_encoder(encoder, alias=alias, cf_dim=int(meta.get("cf_dim") or 64))

    def load(name: str) -> IngestReport:
        entries = read_movielens_items() if catalog == "movielens" else read_catalog(catalog, FieldMap())
        return index_items(client, encoder, name, entries,
                           WriteConfig(reuse_from=previous[0] if previous else None), source=catalog)

    report(f"re-indexing {alias} with {encoder.artifact_id}")
    result = rebuild_index(client, spec, load, RebuildConfig(delete_old=True, grace_s=2.0))
    return {"index": result.index, "previous": result.previous, "indexed": result.report.indexed,
            "dead_lettered": result.report.dead_lettered}
