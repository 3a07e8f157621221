"""Click commands for collaborative filtering and user privacy (`osreco cf`, `osreco users`)."""

from __future__ import annotations

import click

commands: list[click.Command] = []
