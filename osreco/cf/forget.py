"""Forgetting a user, everywhere, at once: the one forget path of the CLI and the sidecar.

:func:`forget` deletes the user's documents (events, stored vector, history, any document that
holds the pseudonym as ``user_key`` or ``_id``) from every ``<prefix>-*`` index, writes a
tombstone (``<prefix>-forgotten``, ``_id`` = pseudonym, only ``forgotten_at``) and, given a
saved CF model folder, rewrites the model without the user (atomically, metadata updated).

The tombstone is what makes every other copy obey: each sidecar worker reads it with the
user's document in one ``mget`` per request (:func:`user_and_tombstone`), model loads drop
tombstoned users (:func:`forgotten_keys`), and training drops their interactions
(:func:`drop_forgotten`), so a stale model, a restarted worker or a retrain over old
interactions never personalizes a forgotten user again.

Example:
    >>> report = forget(client, "movies", "alice", privacy, model_dir="models/cf")
    >>> report.as_dict()["deleted"]
    {'movies-events': 3, 'movies-users': 1}
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensearchpy import OpenSearch, TransportError
from opensearchpy.helpers import scan

from osreco.cf.errors import InteractionError
from osreco.cf.interactions import Interaction
from osreco.cf.privacy import PrivacyConfig, is_pseudonym
from osreco.ingest.errors import BulkError, ConfigError

__all__ = ["ForgetReport", "ModelForgetReport", "check_model_dir", "drop_forgotten", "forget", "forget_in_model",
           "forgotten_index", "forgotten_keys", "user_and_tombstone", "write_tombstone"]

_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
FORGOTTEN_MAPPING: dict[str, object] = {"dynamic": "strict", "properties": {"forgotten_at": {"type": "date"}}}
RETRY_FIX = "retry `osreco users forget` (or DELETE /v1/users/{id}); the tombstone already keeps the user unserved"


def forgotten_index(prefix: str) -> str:
    """Name of the tombstone index for ``prefix``."""
    return f"{prefix}-forgotten"


@dataclass
class ModelForgetReport:
    """What :func:`forget_in_model` did to a saved CF model."""

    model_dir: str
    removed: bool
    users_before: int
    users_after: int

    def as_dict(self) -> dict[str, object]:
        return {"model_dir": self.model_dir, "removed": self.removed, "users_before": self.users_before,
                "users_after": self.users_after}


@dataclass
class ForgetReport:
    """What :func:`forget` deleted, per index, plus the tombstone and the saved model it rewrote."""

    user_key: str
    deleted: dict[str, int] = field(default_factory=dict)
    tombstone: str | None = None
    model: ModelForgetReport | None = None

    @property
    def total(self) -> int:
        return sum(self.deleted.values())

    def as_dict(self) -> dict[str, object]:
        return {"user_key": self.user_key, "deleted": self.deleted, "total": self.total,
                "tombstone": self.tombstone, "model": self.model.as_dict() if self.model else None}


def _check_prefix(prefix: str) -> None:
    if not _PREFIX_RE.match(prefix):
        raise ConfigError(f"index prefix {prefix!r} must be lowercase letters, digits, '.', '_' or '-' "
                          "(no wildcards)", field="prefix")


def write_tombstone(client: OpenSearch, prefix: str, user_key: str, forgotten_at: str) -> str:
    """Record that ``user_key`` is forgotten (``_id`` = pseudonym); returns the tombstone index.

    Raises:
        ConfigError: ``user_key`` is not a pseudonym (a raw id is never stored).
    """
    if not is_pseudonym(user_key):
        raise ConfigError("a tombstone holds a pseudonym, never a raw user id", field="user_key")
    name = forgotten_index(prefix)
    if not client.indices.exists(index=name):
        try:
            client.indices.create(index=name, body={"settings": {"number_of_replicas": 0},
                                                    "mappings": FORGOTTEN_MAPPING})
        except TransportError as e:
            if "resource_already_exists_exception" not in str(e):
                raise
    client.index(index=name, id=user_key, body={"forgotten_at": forgotten_at}, refresh=True)
    return name


def forget(client: OpenSearch, prefix: str, user_id: str, privacy: PrivacyConfig,
           model_dir: str | Path | None = None) -> ForgetReport:
    """Forget a user (raw id) in every ``<prefix>-*`` index and, given ``model_dir``, in the saved model.

    Tombstone indexes (``*-forgotten``) are never deleted from: ``<prefix>-*`` also matches a
    longer prefix's (``shop-eu-forgotten`` for ``shop``), and a tombstone must outlive forgets.

    The tombstone is written first, so a deletion that fails half-way still leaves the user
    unserved; a retry completes it. Item documents (no ``user_key``) are never touched; the raw
    id is matched only in ``user_key`` (as an ``_id`` it could be an item's id).

    Raises:
        ConfigError: the prefix is not a plain index name, or ``user_id`` is a pseudonym.
        BulkError: a delete-by-query left documents in some index.
        TransportError: the node failed.
        InteractionError: ``model_dir`` holds no readable model or cannot be rewritten.
    """
    from osreco.cf.store import now_iso

    _check_prefix(prefix)
    if is_pseudonym(user_id):
        raise ConfigError("user ids that look like pseudonyms (u_ + 64 hex) are not accepted", field="user_id",
                          fix="pass the raw user id")
    if model_dir is not None:
        check_model_dir(model_dir)
    key = privacy.pseudonymize(user_id)
    report = ForgetReport(user_key=key, tombstone=write_tombstone(client, prefix, key, now_iso()))
    query = {"query": {"bool": {"should": [{"terms": {"user_key": [key, user_id]}}, {"ids": {"values": [key]}}],
                                "minimum_should_match": 1}}}
    for index in _indices(client, f"{prefix}-*"):
        if index.endswith("-forgotten"):  # tombstones: ours was just written; another prefix's stay
            continue
        # A node error propagates as it is: the CLI and the sidecar each map it (exit 3, 503).
        # Refresh first: delete-by-query searches, and a just-written document is not searchable yet.
        client.indices.refresh(index=index)
        res = client.delete_by_query(index=index, body=query, refresh=True, conflicts="proceed")
        if res.get("failures"):
            raise BulkError(f"forget left documents in {index}: {res['failures'][:2]}", index=index, fix=RETRY_FIX)
        if res.get("deleted"):
            report.deleted[index] = int(res["deleted"])
    if model_dir is not None:
        report.model = forget_in_model(model_dir, key)
    return report


def check_model_dir(model_dir: str | Path) -> None:
    """Fail unless ``model_dir`` holds a saved CF model this process may rewrite.

    Raises:
        InteractionError: the folder or its model files are missing or not writable.
    """
    folder = Path(model_dir)
    files = [folder / "cf_model.npz", folder / "cf_model.json"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise InteractionError(f"no saved CF model in {folder} ({', '.join(missing)} missing)", file=str(folder),
                               fix="pass --model-dir PATH of the served model, or --skip-model to rely on the "
                                   "tombstone alone")
    if not os.access(folder, os.W_OK) or not all(os.access(f, os.R_OK) for f in files):
        raise InteractionError(f"the CF model folder {folder} cannot be rewritten (no write permission)",
                               file=str(folder), fix="run as a user who may write it, pass --model-dir PATH of a "
                                                     "writable copy, or --skip-model")


def forget_in_model(model_dir: str | Path, user_key: str) -> ModelForgetReport:
    """Rewrite the saved model in ``model_dir`` without ``user_key`` (atomically; metadata updated).

    Raises:
        InteractionError: no readable model there.
    """
    from osreco.cf.model import CFModel

    # One rewrite at a time: two forgets at once must not each save a copy missing only their user.
    with open(Path(model_dir) / ".cf_model.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        model = CFModel.load(model_dir)
        before = len(model.user_keys)
        removed = model.user_vector(user_key) is not None
        if removed:
            model.without_user(user_key).save(model_dir)
    return ModelForgetReport(str(model_dir), removed, before, before - int(removed))


def user_and_tombstone(client: OpenSearch, users_index: str, prefix: str,
                       user_key: str) -> tuple[dict[str, Any] | None, bool]:
    """The user's document (or ``None``) and whether a tombstone exists: one ``mget`` round-trip.

    A missing index reads as no document / no tombstone.

    Raises:
        TransportError: the node failed (the caller decides how to degrade).
    """
    docs = client.mget(body={"docs": [{"_index": users_index, "_id": user_key, "_source": True},
                                      {"_index": forgotten_index(prefix), "_id": user_key, "_source": False}]})
    user, tomb = docs["docs"]
    for doc in (user, tomb):
        error = doc.get("error")
        if error and "index_not_found" not in str(error):
            raise TransportError(500, "mget failed", error)
    return (user.get("_source") if user.get("found") else None), bool(tomb.get("found"))


def tombstoned(client: OpenSearch, prefix: str, user_keys: Iterable[str]) -> set[str]:
    """Which of ``user_keys`` have a tombstone: one ``mget`` (empty when nobody was forgotten)."""
    keys = list(dict.fromkeys(user_keys))
    if not keys:
        return set()
    name = forgotten_index(prefix)
    docs = client.mget(index=name, body={"ids": keys}, _source=False, ignore=[404])
    return {d["_id"] for d in docs.get("docs", []) if d.get("found")}


def forgotten_keys(client: OpenSearch, prefix: str) -> set[str]:
    """Every tombstoned pseudonym of ``prefix`` (empty when nobody was forgotten)."""
    name = forgotten_index(prefix)
    if not client.indices.exists(index=name):
        return set()
    return {hit["_id"] for hit in scan(client, index=name, query={"query": {"match_all": {}}}, _source=False)}


def drop_forgotten(interactions: Iterable[Interaction], forgotten: set[str]) -> tuple[list[Interaction], int]:
    """``interactions`` without those of tombstoned pseudonyms, and how many were dropped.

    ``user_id`` of each interaction must already be the pseudonym.
    """
    kept: list[Interaction] = []
    dropped = 0
    for row in interactions:
        if row.user_id in forgotten:
            dropped += 1
        else:
            kept.append(row)
    return kept, dropped


def _indices(client: OpenSearch, pattern: str) -> list[str]:
    return sorted(client.indices.get(index=pattern, ignore_unavailable=True, allow_no_indices=True).keys())
