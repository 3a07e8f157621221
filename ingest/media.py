"""Reading an item's media file (a picture, a recording) by reference, under a size cap and a timeout.

One reader for every media column: a local path (relative ones are read from the catalog's
folder), a ``file://`` URL or an ``http(s)`` URL whose ``Content-Type`` must start with the
kind's MIME prefix (``image/``, ``audio/``). Problems come back as the caller's own error type
(``ImageInputError``, ``AudioInputError``) through ``error``, so each column keeps its messages.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["MediaError", "fetch_media", "stored_lookup", "by_chunks"]

MediaError = Callable[[str, str, str, str], Exception]
"""``(message, problem, ref, fix) -> the exception to raise``."""


def fetch_media(ref: str, *, kind: str, max_bytes: int, timeout_s: float, base_dir: Path | None,
                error: MediaError, cap_option: str, timeout_option: str) -> bytes:
    """The bytes ``ref`` names, never more than ``max_bytes``.

    Args:
        ref: local path, ``file://`` or ``http(s)://`` URL.
        kind: ``image`` or ``audio``: names it in messages and is the Content-Type prefix of a URL.
        max_bytes, timeout_s: the size cap and the connect/read timeout of a download.
        base_dir: folder relative paths are read from.
        error: builds the exception (problems: ``unsupported``, ``too_large``, ``not_found``,
            ``unreadable``, ``unreachable``, ``not_an_<kind>``).
        cap_option, timeout_option: the command-line options that raise the cap and the timeout.
    """
    parsed = urllib.parse.urlparse(ref)
    if parsed.scheme in ("http", "https"):
        return _fetch_url(ref, kind, max_bytes, timeout_s, error, cap_option, timeout_option)
    if parsed.scheme == "file":
        path = Path(urllib.parse.unquote(parsed.path))
    elif parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive
        raise error(f"{kind} reference scheme {parsed.scheme!r} is not supported", "unsupported", ref,
                    "use a local path, file:// or http(s):// URL")
    else:
        path = Path(ref)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{kind} is {size} bytes, over the limit of {max_bytes} bytes", "too_large", ref,
                        f"shrink the file or raise {cap_option}")
        return path.read_bytes()
    except FileNotFoundError as e:
        raise error(f"{kind} file does not exist", "not_found", ref, "fix the path in the catalog") from e
    except IsADirectoryError as e:
        raise error(f"{kind} reference is a folder, not a file", "unreadable", ref,
                    "fix the path in the catalog") from e
    except OSError as e:
        raise error(f"cannot read the {kind} file: {e}", "unreadable", ref, "check the file") from e


def _fetch_url(url: str, kind: str, max_bytes: int, timeout_s: float, error: MediaError, cap_option: str,
               timeout_option: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "osreco-ingest", "Accept": f"{kind}/*"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 (scheme checked by the caller)
            ctype = str(resp.headers.get("Content-Type", "")).split(";")[0].strip().lower()
            if not ctype.startswith(f"{kind}/"):
                raise error(f"URL answered Content-Type {ctype or 'none'!r}, not {kind}/*", f"not_an_{kind}", url,
                            f"point the column at the {kind} file itself")
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise error(f"{kind} is {length} bytes, over the limit of {max_bytes} bytes", "too_large", url,
                            f"shrink the file or raise {cap_option}")
            data = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        raise error(f"URL answered HTTP {e.code}", "unreachable", url, "fix the URL") from e
    except (OSError, ValueError) as e:  # URLError, timeouts, resets; our own errors are not OSErrors
        reason = getattr(e, "reason", e)
        raise error(f"cannot fetch the {kind} (timeout {timeout_s:g} s): {reason}", "unreachable", url,
                    f"check the URL and the network, or raise {timeout_option}") from e
    if len(data) > max_bytes:
        raise error(f"{kind} is over the limit of {max_bytes} bytes", "too_large", url,
                    f"shrink the file or raise {cap_option}")
    return data


def stored_lookup(client: Any, indexes: Iterable[str | None], fields: Iterable[str]) -> Callable[[list[str]], dict]:
    """A lookup of the already indexed ``fields`` of items by id, so unchanged media are not redone.

    Args:
        client: opensearch-py client.
        indexes: where to look (the index being written, the previous version); None skipped.
        fields: the ``_source`` fields to read (a content hash and what was derived from it).
    Returns:
        ``ids -> {id: source}``; a missing index or document is simply absent.
    """
    names = [i for i in indexes if i]
    wanted = list(fields)

    def lookup(ids: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for name in names:
            try:
                resp = client.mget(index=name, body={"ids": ids}, _source_includes=wanted)
            except Exception:  # a missing index or a node hiccup only costs redoing the work
                continue
            for doc in resp.get("docs", []):
                if doc.get("found") and doc["_id"] not in found:
                    found[doc["_id"]] = doc.get("_source") or {}
        return found

    return lookup


def by_chunks(entries: Iterable[T], size: int, work: Callable[[list[T]], Iterable[R]]) -> Iterator[R]:
    """``work`` applied to consecutive chunks of ``size`` entries (the last may be shorter), its
    outputs yielded in order: how the image and audio enrichers batch their fetches and lookups."""
    chunk: list[T] = []
    for entry in entries:
        chunk.append(entry)
        if len(chunk) >= size:
            yield from work(chunk)
            chunk = []
    if chunk:
        yield from work(chunk)
