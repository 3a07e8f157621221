"""Click commands for the feedback loop (`osreco train encoder|reranker`, `osreco promote`)."""

from __future__ import annotations

import click

commands: list[click.Command] = []
