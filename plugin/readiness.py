"""Readiness (``/readyz``) and the hot-reload's wiring (see ``osreco.plugin.reload``).

Ready means: the node answers, the alias points at exactly one index, an encoder is loaded
and its bundle ``artifact_id`` equals the index's ``_meta.artifact_id`` (else query vectors
would not match item vectors), and the CF model's dimension equals ``_meta.cf_dim``. When the
bundles differ and the hot-reload is wired, readiness first tries to switch to the index's
bundle.
"""

from __future__ import annotations

from typing import Any

from osreco.ingest.errors import IndexError_
from osreco.ingest.rebuild import alias_meta
from osreco.plugin.config import SidecarConfig
from osreco.plugin.errors import NodeUnavailableError, NotReadyError
from osreco.plugin.models import ServedModels, load_encoder
from osreco.plugin.reload import BundleReloader
from osreco.plugin.transport import NodeTransport
from osreco.plugin.users import Users

__all__ = ["Readiness"]


class Readiness:
    """Checks readiness and owns the bundle reloader (None until :meth:`watch_bundles`).

    Args:
        transport: the node.
        models: the served encoder and reranker.
        users: the served CF model.
    """

    def __init__(self, transport: NodeTransport, models: ServedModels, users: Users):
        self.transport, self.models, self.users = transport, models, users
        self.reloader: BundleReloader | None = None

    @property
    def pending(self) -> str | None:
        """The bundle the alias's index was rebuilt with while it is not served yet."""
        return self.reloader.pending if self.reloader is not None else None

    def alias_artifact(self) -> tuple[str, str | None]:
        """The concrete index behind the alias and its ``_meta.artifact_id``.

        Raises:
            whatever the node raises, and ``IndexError_`` while the alias spans several
            indexes: the reloader checks again later.
        """
        index, meta = alias_meta(self.transport.client, self.transport.alias)
        return index, meta.get("artifact_id")

    def watch_bundles(self, config: SidecarConfig) -> BundleReloader:
        """The reloader that keeps the encoder equal to the alias's ``_meta.artifact_id``;
        searches that see hits from another index wake it. Not started here."""
        threads = config.encoder_threads
        self.reloader = BundleReloader(
            read_alias=self.alias_artifact, served=lambda: self.models.artifact_id,
            load=lambda path: load_encoder(path, threads, warm=True), swap=lambda enc, _path: self.models.swap(enc),
            bundle_dir=config.bundle_dir, bundles_root=config.effective_bundles_root,
            interval_s=config.bundle_reload_s or 5.0,
            on_result=lambda r: self.transport.metrics.bundle_reloads.labels(r).inc())
        self.transport.on_indexes = self.reloader.saw_indexes
        return self.reloader

    def check(self) -> dict[str, Any]:
        """Node reachable, alias on one index, bundle and CF model matching its ``_meta``.

        Returns:
            the index, alias, served ``artifact_id``, whether a CF model is loaded, the reranker's id.

        Raises:
            NotReadyError: naming what does not match and how to fix it.
        """
        alias, models = self.transport.alias, self.models
        try:
            self.transport.call("ping", self.transport.client.info)
            index, meta = self.transport.call("readiness", alias_meta, self.transport.client, alias)
        except NodeUnavailableError as e:
            raise NotReadyError(str(e)) from e
        except IndexError_ as e:
            raise NotReadyError(str(e.args[0]), fix=e.fix) from e
        if models.encoder is None:
            raise NotReadyError(f"the encoder is not loaded: {models.encoder_error}",
                                fix="set OSRECO_BUNDLE to the bundle the index was built with")
        if meta.get("artifact_id") != models.encoder.artifact_id and self.reloader is not None:
            served = models.encoder.artifact_id
            if self.reloader.check() != "loaded":
                raise NotReadyError(
                    f"bundle artifact_id {served} != index {index} _meta.artifact_id {meta.get('artifact_id')}, "
                    f"and the hot-reload could not switch: {self.reloader.last_error}",
                    fix="install the bundle the index was built with where the sidecar looks "
                        "(OSRECO_BUNDLES_ROOT), or re-ingest with the served bundle")
        encoder = models.encoder
        if meta.get("artifact_id") != encoder.artifact_id:
            raise NotReadyError(
                f"bundle artifact_id {encoder.artifact_id} != index {index} _meta.artifact_id "
                f"{meta.get('artifact_id')}: the query vectors would not match the item vectors",
                fix="serve the bundle the index was built with, or re-ingest with this bundle")
        cf_model = self.users.cf_model
        if cf_model is not None and meta.get("cf_dim") not in (None, cf_model.dim):
            raise NotReadyError(f"CF model dim {cf_model.dim} != index {index} _meta.cf_dim "
                                f"{meta.get('cf_dim')}", fix="train the CF model with --factors <cf_dim>")
        return {"index": index, "alias": alias, "artifact_id": encoder.artifact_id,
                "cf_model": cf_model is not None, "reranker": getattr(models.reranker, "artifact_id", None)}
