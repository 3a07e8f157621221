"""The one place the command line turns an error into a message and an exit code.

Every ``osreco`` command and group is built with :func:`command` / :func:`group` (or the
classes :class:`Command` / :class:`Group`); their ``invoke`` runs the command through
:func:`handled`, which maps

- an :class:`~osreco.errors.OsrecoError` to ``e.exit_code`` (the node's log tail follows a
  :class:`~osreco.errors.NodeError`),
- an opensearch-py error (unreachable node, refused request) to 3, naming OPENSEARCH_URL,
- an ``OSError`` (a file, a socket) to 3,

and prints ``error: <message — fix: ...>`` on stderr or, for a command run with ``--json``,
one JSON object ``{"ok": false, "error", "type", "exit_code", "context"}`` on stdout.
Sub-groups get the handler too, so invoking one directly (as tests do) behaves the same.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from osreco.errors import EXIT_ENV, NodeError, OsrecoError

T = TypeVar("T")
JSON_META = "osreco.json"  # ctx.meta key: the running command prints JSON (shared with parent contexts)


def _opensearch_error(e: BaseException) -> bool:
    """Whether ``e`` comes from opensearch-py (imported only when an error happens)."""
    from opensearchpy.exceptions import OpenSearchException

    return isinstance(e, OpenSearchException)


def fail(ctx: click.Context, error: BaseException, code: int, message: str | None = None) -> NoReturn:
    """Report ``error`` (JSON on stdout with ``--json``, else one line on stderr) and exit ``code``."""
    text = message or str(error)
    if ctx.meta.get(JSON_META):
        context = getattr(error, "context", {}) or {}
        click.echo(json.dumps({"ok": False, "error": text, "type": type(error).__name__, "exit_code": code,
                               "context": {k: v for k, v in context.items() if v is not None}}, default=str))
    else:
        click.echo(f"error: {text}", err=True)
        if isinstance(error, NodeError) and error.log_tail:
            click.echo("--- tail of the node's log ---\n" + error.log_tail, err=True)
    sys.exit(code)


def handled(ctx: click.Context, run: Callable[[], T]) -> T:
    """Run ``run()``; an osreco, OpenSearch or OS error ends the command with its exit code."""
    try:
        return run()
    except OsrecoError as e:
        fail(ctx, e, e.exit_code)
    except OSError as e:
        fail(ctx, e, EXIT_ENV)
    except Exception as e:
        if not _opensearch_error(e):
            raise
        url = ctx.params.get("url") or os.environ.get("OPENSEARCH_URL") or "(OPENSEARCH_URL is unset)"
        fail(ctx, e, EXIT_ENV, f"OpenSearch at {url} failed: {e} — fix: run `osreco opensearch start` "
                               "or set OPENSEARCH_URL")


class Command(click.Command):
    """A click command whose errors go through :func:`handled`; ``--json`` (``as_json``) is honoured."""

    def invoke(self, ctx: click.Context) -> Any:
        ctx.meta[JSON_META] = bool(ctx.params.get("as_json"))
        return handled(ctx, lambda: super(Command, self).invoke(ctx))


class Group(click.Group):
    """A click group whose commands (and sub-groups) are :class:`Command` / :class:`Group`; errors
    of its own callback, or of a plain click command added to it, go through :func:`handled` too."""

    command_class = Command

    def invoke(self, ctx: click.Context) -> Any:
        return handled(ctx, lambda: super(Group, self).invoke(ctx))


Group.group_class = Group  # so sub-groups made with @a_group.group() get the handler too


def command(name: str | None = None, cls: type[Command] = Command,
            **attrs: Any) -> Callable[[Callable[..., Any]], Command]:
    """``@click.command`` with the one error handler (``cls``: a :class:`Command` subclass)."""
    return click.command(name, cls=cls, **attrs)


def group(name: str | None = None, **attrs: Any) -> Callable[[Callable[..., Any]], Group]:
    """``@click.group`` with the one error handler."""
    return click.group(name, cls=Group, **attrs)
