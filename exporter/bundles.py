"""Where promoted bundles live: ``<bundles_root>/<artifact>`` and the ``current`` link.

The layout ``osreco promote`` installs into and the sidecar's hot-reload reads
(``osreco.plugin.reload``): plain path rules, no model code.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["bundle_path", "switch_current"]


def bundle_path(bundles_root: Path, artifact_id: str) -> Path:
    """Where a promoted bundle lives: ``<bundles_root>/<first 16 hex digits of its artifact_id>``.

    The sidecar can find the bundle for an index's ``_meta.artifact_id`` with this, before
    and after the ``current`` link moves.
    """
    return Path(bundles_root) / artifact_id.split(":")[-1][:16]


def switch_current(bundles_root: Path, bundle: Path) -> Path:
    """Point ``<bundles_root>/current`` at ``bundle`` atomically (symlink + rename)."""
    link = Path(bundles_root) / "current"
    tmp = Path(bundles_root) / f".current-{uuid.uuid4().hex[:8]}"
    os.symlink(os.path.relpath(Path(bundle).resolve(), Path(bundles_root).resolve()), tmp)
    os.replace(tmp, link)
    return link
