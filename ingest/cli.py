"""Click commands that osreco.ingest contributes to the `osreco` command line."""

from __future__ import annotations

import click

commands: list[click.Command] = []
