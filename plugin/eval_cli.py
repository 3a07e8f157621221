"""Click command for `osreco eval`."""

from __future__ import annotations

import click

commands: list[click.Command] = []
