"""Index lifecycle: create behind an alias, full rebuilds into a new version, atomic alias swap.

A rebuild writes ``<alias>-v<N+1>`` with refresh off and 0 replicas, restores the serving
settings, optionally force-merges and warms up the k-NN graphs, swaps the alias in one
``_aliases`` call and deletes the previous version. Searches through the alias keep working.

Example:
    >>> result = rebuild_index(client, spec, lambda index: index_items(client, enc, index, entries, cfg))
    >>> result.index, result.previous
    ('products-v2', ['products-v1'])
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError, TransportError

from osreco.ingest.errors import ConfigError, IndexError_
from osreco.ingest.index_spec import IndexSpec
from osreco.ingest.writer import IngestReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RebuildConfig:
    """Options of a full rebuild.

    Args:
        forcemerge: force-merge the new index to ``max_segments`` before the swap.
        max_segments: segments to merge down to.
        warmup: load the k-NN graphs into memory (``_plugins/_knn/warmup``) before the swap.
        delete_old: delete the previous versions after the swap.
        grace_s: wait this long after the swap before deleting, so in-flight searches finish.
    """

    forcemerge: bool = False
    max_segments: int = 1
    warmup: bool = False
    delete_old: bool = True
    grace_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_segments < 1 or self.grace_s < 0:
            raise ConfigError("max_segments must be >= 1 and grace_s >= 0", field="max_segments")


@dataclass
class RebuildResult:
    """What a rebuild did: the new index, the versions it replaced, the load report."""

    index: str
    previous: list[str]
    report: IngestReport
    deleted: list[str] = field(default_factory=list)
    warmed_up: bool = False


def alias_indexes(client: OpenSearch, alias: str) -> list[str]:
    """The concrete indexes behind ``alias`` (empty when the alias does not exist).

    Raises:
        IndexError_: ``alias`` is a concrete index, not an alias.
    """
    if client.indices.exists_alias(name=alias):
        return sorted(client.indices.get_alias(name=alias))
    if client.indices.exists(index=alias):
        raise IndexError_(f"{alias} is a concrete index, not an alias", index=alias,
                          fix=f"reindex it into {alias}-v1 and add the alias, or pick another --index name")
    return []


def alias_meta(client: OpenSearch, alias: str) -> tuple[str, dict[str, Any]]:
    """The one concrete index behind ``alias`` (or ``alias`` itself when it names an index) and
    its mapping's ``_meta`` (``{}`` when it has none).

    Raises:
        IndexError_: ``alias`` points at more than one index.
        opensearchpy.NotFoundError: no index or alias of that name (left to the caller: a CLI
            creates the index, the sidecar answers "not ready").
    """
    mappings = client.indices.get_mapping(index=alias)
    if len(mappings) != 1:
        raise IndexError_(f"alias {alias!r} points at {len(mappings)} indexes", index=alias,
                          fix="point the alias at exactly one index")
    index, body = next(iter(mappings.items()))
    return str(index), dict((body.get("mappings") or {}).get("_meta") or {})


def ensure_index(client: OpenSearch, spec: IndexSpec) -> str:
    """The index to write to: the one behind ``spec.alias``, created as ``-v1`` with the alias if absent.

    Raises:
        IndexError_: the alias spans several indexes, or the index was built for another bundle.
    """
    return open_index(client, spec)[0]


def open_index(client: OpenSearch, spec: IndexSpec) -> tuple[str, bool]:
    """Like :func:`ensure_index`, and whether this call created the index (the caller removes it
    with :func:`drop_unfinished` when the first load into it fails)."""
    current = alias_indexes(client, spec.alias)
    if not current:
        name = spec.versioned_name(next_version(client, spec))
        body = dict(spec.index_body(), aliases={spec.alias: {}})
        client.indices.create(index=name, body=body)
        return name, True
    if len(current) > 1:
        raise IndexError_(f"alias {spec.alias} points at {len(current)} indexes {current}", index=spec.alias,
                          fix="run with --rebuild to write one new version and move the alias to it")
    _, meta = alias_meta(client, current[0])
    spec.check_meta(meta, current[0])
    return current[0], False


def resumable(checkpoint: Path | None, index: str) -> bool:
    """Whether ``checkpoint`` holds confirmed progress of a load into ``index`` (a rerun resumes it)."""
    if checkpoint is None or not Path(checkpoint).exists():
        return False
    try:
        data = json.loads(Path(checkpoint).read_text(encoding="utf-8"))
        return bool(data["key"]["index"] == index and int(data["rows_done"]) > 0)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def drop_unfinished(client: OpenSearch, index: str, checkpoint: Path | None) -> bool:
    """Delete ``index``, a version this run created and could not finish, unless the checkpoint says
    a rerun resumes it. Never raises (the node may be the reason the load failed); returns True
    when the index is gone."""
    if resumable(checkpoint, index):
        return False
    try:
        client.indices.delete(index=index, ignore_unavailable=True)
        return True
    except Exception as e:  # the original failure is the one to report; this one is only logged
        log.warning("could not delete the unfinished index %s (%s): delete it by hand", index, e)
        return False


def next_version(client: OpenSearch, spec: IndexSpec) -> int:
    """One more than the highest existing ``<alias>-v<N>``."""
    names = client.indices.get(index=f"{spec.alias}-v*", allow_no_indices=True, ignore_unavailable=True,
                               expand_wildcards="all")
    versions = [v for v in (spec.version_of(n) for n in names) if v is not None]
    return max(versions, default=0) + 1


def pending_rebuild(client: OpenSearch, spec: IndexSpec, checkpoint: Path | None) -> str | None:
    """The unfinished new version a checkpoint points at (to resume a killed rebuild), if any."""
    if checkpoint is None or not Path(checkpoint).exists():
        return None
    try:
        index = json.loads(Path(checkpoint).read_text(encoding="utf-8"))["key"]["index"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    live = set(alias_indexes(client, spec.alias))
    if spec.version_of(str(index)) is not None and index not in live and client.indices.exists(index=index):
        return str(index)
    return None


def rebuild_index(client: OpenSearch, spec: IndexSpec, load: Callable[[str], IngestReport],
                  config: RebuildConfig = RebuildConfig(), resume_index: str | None = None,
                  checkpoint: Path | None = None) -> RebuildResult:
    """Load a new version of the index and move the alias to it atomically.

    Args:
        client: opensearch-py client.
        spec: the index contract (alias, mapping, serving settings).
        load: writes the catalog into the index it is given and returns the report.
        config: force-merge, warm-up and clean-up options.
        resume_index: an unfinished version to load into instead of a new one (``pending_rebuild``).
        checkpoint: the load's checkpoint file; when the rebuild fails before the swap, the new
            version is deleted unless this checkpoint holds progress into it (then a rerun resumes).

    Returns:
        The new index, the versions it replaced and the load report. When the load raises,
        nothing is swapped and the alias keeps serving the previous version.
    """
    previous = alias_indexes(client, spec.alias)
    name = resume_index or spec.versioned_name(next_version(client, spec))
    if not resume_index:
        client.indices.create(index=name, body=spec.index_body(loading=True))
    try:
        report = load(name)
        client.indices.put_settings(index=name, body=spec.serving_settings())
        client.indices.refresh(index=name)
        if config.forcemerge:
            client.indices.forcemerge(index=name, max_num_segments=config.max_segments, request_timeout=3600)
        warmed = warmup_knn(client, name) if config.warmup else False
        client.cluster.health(index=name, wait_for_status="yellow" if spec.replicas else "green",
                              request_timeout=60)
        swap_alias(client, spec.alias, name, previous)
    except BaseException:  # an interrupt too: no half-built version is left behind unless resumable
        drop_unfinished(client, name, checkpoint)
        raise
    deleted: list[str] = []
    if config.delete_old and previous:
        time.sleep(config.grace_s)
        client.indices.delete(index=",".join(previous), ignore_unavailable=True)
        deleted = previous
    return RebuildResult(index=name, previous=previous, report=report, deleted=deleted, warmed_up=warmed)


def swap_alias(client: OpenSearch, alias: str, new: str, previous: list[str]) -> None:
    """Point ``alias`` at ``new`` only, removing it from ``previous`` in the same atomic call."""
    actions: list[dict[str, object]] = [{"remove": {"index": old, "alias": alias}} for old in previous if old != new]
    actions.append({"add": {"index": new, "alias": alias}})
    client.indices.update_aliases(body={"actions": actions})


def warmup_knn(client: OpenSearch, index: str) -> bool:
    """Load the index's k-NN graphs into native memory; False (logged) where the engine has none."""
    try:
        client.transport.perform_request("GET", f"/_plugins/_knn/warmup/{index}", params={"request_timeout": 600})
        return True
    except (NotFoundError, TransportError) as e:
        log.warning("k-NN warm-up of %s failed (%s); searches will load graphs on first use", index, e)
        return False
