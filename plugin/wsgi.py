"""WSGI entry for production servers:
``gunicorn -c python:osreco.plugin.gunicorn_conf -w 2 --threads 8 osreco.plugin.wsgi:app``.

The configuration is read from the environment (``SidecarConfig.from_env``) once per worker;
the ``osreco.plugin`` logger gets a stderr handler (gunicorn configures only its own), so the
dev-mode warning and API-key reload errors show in gunicorn's output. Run it with
``-c python:osreco.plugin.gunicorn_conf`` so ``/metrics`` sums every worker.
"""

from __future__ import annotations

from osreco.plugin.app import create_app
from osreco.plugin.config import SidecarConfig
from osreco.plugin.security import ensure_log_handler

ensure_log_handler()     # gunicorn configures only its own loggers: warnings must reach its stderr
app = create_app(SidecarConfig.from_env())
