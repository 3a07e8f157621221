"""WSGI entry for production servers: ``gunicorn -w 2 --threads 8 osreco.plugin.wsgi:app``.

The configuration is read from the environment (``SidecarConfig.from_env``) once per worker.
"""

from __future__ import annotations

from osreco.plugin.app import create_app
from osreco.plugin.config import SidecarConfig

app = create_app(SidecarConfig.from_env())
