"""Hot-reload of the query encoder when the item index is rebuilt with another bundle.

``osreco promote`` installs the new bundle at ``<bundles_root>/<artifact_id[:16]>`` before it
swaps the alias to an index whose ``_meta.artifact_id`` names it. The sidecar notices the
change two ways: a background check every ``bundle_reload_s`` seconds, and at once when a
search returns hits from an index other than the one it last checked (:meth:`saw_indexes`).
It then loads that bundle, warms it with one query and swaps the service's encoder reference
(one assignment): a request in flight keeps the encoder it started with, and none fails.

Between the alias swap and the encoder swap (normally well under a second) query vectors
would not match item vectors, so searches in that window are served without the meaning
signal (BM25 and taste only) and say so in ``degradations``; see :attr:`pending`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("osreco.plugin.reload")

__all__ = ["BundleReloader", "Periodic", "bundle_artifact_id"]


def bundle_artifact_id(path: Path) -> str | None:
    """The ``artifact_id`` in ``path/manifest.json``, or None when it is missing or unreadable."""
    try:
        return json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8")).get("artifact_id")
    except (OSError, ValueError, AttributeError):
        return None


class BundleReloader:
    """Keeps a service's encoder equal to the bundle its alias's index was built with.

    Args:
        read_alias: () -> (index name, ``_meta.artifact_id`` or None) of the alias; may raise
            when the node is unreachable (the check is then retried later).
        served: () -> the artifact id of the encoder being served (None when none is loaded).
        load: bundle folder -> a warmed encoder; may raise (counted as ``failed``).
        swap: (encoder, bundle folder) -> None; installs the encoder in one assignment.
        bundle_dir: the configured bundle folder (re-read: a moved ``current`` link counts).
        bundles_root: where promoted bundles are installed, or None.
        interval_s: seconds between background checks.
        on_result: receives each check's outcome (``loaded``, ``missing``, ``failed``).
    """

    def __init__(self, read_alias: Callable[[], tuple[str, str | None]], served: Callable[[], str | None],
                 load: Callable[[Path], Any], swap: Callable[[Any, Path], None], bundle_dir: str | None,
                 bundles_root: str | None, interval_s: float,
                 on_result: Callable[[str], None] = lambda _: None):
        self._read_alias, self._served, self._load, self._swap = read_alias, served, load, swap
        self.bundle_dir = Path(bundle_dir) if bundle_dir else None
        self.bundles_root = Path(bundles_root) if bundles_root else None
        self.interval_s, self._on_result = interval_s, on_result
        self.index: str | None = None          # the concrete index behind the alias at the last check
        self.pending: str | None = None        # the index's artifact id while the encoder does not match it
        self.last_error: str | None = None
        self._logged: str | None = None
        self._check_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def locate(self, artifact_id: str) -> Path | None:
        """The bundle folder whose manifest names ``artifact_id``, or None.

        Looks at ``<bundles_root>/<artifact_id[:16]>`` (where promote installs), the configured
        bundle folder (re-resolved: a moved ``current`` link), then ``<bundles_root>/current``.
        """
        from osreco.exporter.bundles import bundle_path  # a path rule only; no heavy imports

        places: list[Path] = []
        if self.bundles_root is not None:
            places.append(bundle_path(self.bundles_root, artifact_id))
        if self.bundle_dir is not None:
            places.append(self.bundle_dir)
        if self.bundles_root is not None:
            places.append(self.bundles_root / "current")
        for place in places:
            if bundle_artifact_id(place) == artifact_id:
                return place.resolve()
        return None

    def check(self) -> str:
        """Compare the alias's artifact with the served one; load and swap when they differ.

        Returns:
            ``current`` (nothing to do), ``loaded``, ``missing`` (no bundle with that id was
            found) or ``failed`` (it did not load); the reason is in :attr:`last_error`.

        Raises:
            whatever ``read_alias`` raises (node unreachable): the caller retries later.
        """
        with self._check_lock:
            index, artifact = self._read_alias()
            self.index = index
            if artifact is None or artifact == self._served():
                self.pending, self.last_error = None, None
                return "current"
            self.pending = artifact
            path = self.locate(artifact)
            if path is None:
                where = ", ".join(str(p) for p in (self.bundles_root, self.bundle_dir) if p is not None)
                self.last_error = (f"index {index} was built with bundle {artifact}, which is not in {where}; "
                                   f"install it there (osreco promote does) or set OSRECO_BUNDLE to it")
                return self._outcome("missing")
            try:
                encoder = self._load(path)
            except Exception as e:  # any load failure keeps the old encoder, reported
                self.last_error = f"bundle {path} for index {index} failed to load: {type(e).__name__}: {e}"
                return self._outcome("failed")
            self._swap(encoder, path)
            self.pending, self.last_error = None, None
            log.info("serving bundle %s from %s (index %s)", artifact, path, index)
            return self._outcome("loaded")

    def _outcome(self, result: str) -> str:
        if self.last_error and self.last_error != self._logged:
            log.error("bundle reload: %s", self.last_error)   # once per distinct problem, not per check
            self._logged = self.last_error
        self._on_result(result)
        return result

    def saw_indexes(self, names: set[str]) -> None:
        """Hits came from ``names``: any index other than the last checked one wakes a check."""
        if self.index is not None and any(n != self.index for n in names):
            self._wake.set()

    def start(self) -> BundleReloader:
        """Run :meth:`check` in a daemon thread every ``interval_s`` (sooner when woken)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="osreco-bundle-reload", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception as e:  # node down or similar: try again next round
                log.debug("bundle reload check failed: %s", e)
            self._wake.wait(self.interval_s)
            self._wake.clear()


class Periodic:
    """Runs ``checks`` in a daemon thread every ``interval_s`` seconds (the same timer setting as the
    bundle reload): the learned fusion weights and the CF model files (``osreco.plugin.settings_store``).
    A check that raises is logged and retried next round."""

    def __init__(self, checks: list[Callable[[], object]], interval_s: float, name: str = "osreco-learned-reload"):
        self.checks, self.interval_s, self.name = checks, interval_s, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Periodic:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for check in self.checks:
                try:
                    check()
                except Exception as e:  # one failing check must not stop the others or the timer
                    log.warning("%s: %s failed: %s", self.name, getattr(check, "__name__", check), e)
