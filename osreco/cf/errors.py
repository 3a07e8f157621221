"""Errors of osreco.cf (collaborative filtering, events, privacy).

Part of the one tree rooted at ``osreco.errors.OsrecoError`` (exit codes in brackets)::

    OsrecoError
    ├── ConfigError          [2] a setting is missing or invalid (osreco.errors)
    └── InteractionError     [2] interactions, events or a saved CF model are unusable
"""

from __future__ import annotations

from osreco.errors import EXIT_USAGE, OsrecoError

__all__ = ["InteractionError"]


class InteractionError(OsrecoError):
    """Interactions for collaborative filtering, the events index or a saved CF model are unusable."""

    exit_code = EXIT_USAGE
