"""Click commands that osreco.exporter contributes to the `osreco` command line."""

from __future__ import annotations

import click

commands: list[click.Command] = []
