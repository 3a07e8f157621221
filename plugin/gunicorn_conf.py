"""gunicorn settings for the sidecar: ``gunicorn -c python:osreco.plugin.gunicorn_conf osreco.plugin.wsgi:app``.

gunicorn's own request-line and header limits answer with an HTML page (414, 431/400); they are
raised here far above the app's, so requests reach the app, whose ``before_request`` check
answers a URL over ``MAX_URL_BYTES`` (8 KB) with a JSON 414 and headers over ``MAX_HEADER_BYTES``
(16 KB) with a JSON 431 (``osreco.plugin.app``). Only a request past these raised limits (one
header over 64 KB, more than 2048 headers, a request line over 1 MB) still gets gunicorn's page.
Bind, workers and threads stay on the command line (or ``GUNICORN_CMD_ARGS``); server hooks
(e.g. Prometheus multiprocess cleanup) are added below.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from typing import Any

limit_request_line = 0
"""No gunicorn limit on the request line (its fast parser stops at 1 MB): the app answers a long
URL with a JSON 414."""

limit_request_field_size = 65536
"""One header may have 64 KB before gunicorn refuses it (0 would mean gunicorn's 8190-byte
default, not "unlimited"); the app answers headers over 16 KB in all with a JSON 431."""

limit_request_fields = 2048
"""Headers gunicorn reads before refusing; together with the field size this bounds the memory
one request's headers can take in gunicorn's buffer."""

# Server hooks (post_fork, child_exit, ...) go below this line.

# ---- Prometheus multiprocess mode: /metrics sums every worker's values (plugin/metrics.py) ----
# The folder must be set before any worker imports prometheus_client (which reads it at import),
# so it is set here, when gunicorn loads this config, before it loads the app or forks workers.

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_own_multiproc_dir: str | None = None
if os.environ.get(_MULTIPROC_ENV):
    # A folder given by the operator: values of an earlier run would be summed into this one's.
    for _stale in glob.glob(os.path.join(os.environ[_MULTIPROC_ENV], "*.db")):
        os.remove(_stale)
else:
    _own_multiproc_dir = tempfile.mkdtemp(prefix="osreco-prometheus-")
    os.environ[_MULTIPROC_ENV] = _own_multiproc_dir


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: drop its live gauges (its counters stay in the sums)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """gunicorn stops: remove the metrics folder this config created (never an operator's)."""
    if _own_multiproc_dir:
        shutil.rmtree(_own_multiproc_dir, ignore_errors=True)
