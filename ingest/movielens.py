"""MovieLens-100k: where it is, how its items map to the index, how its files are read.

The data comes from the ``recbole`` wheel's ``dataset_example/ml-100k`` folder, found with
``importlib.util.find_spec`` so recbole itself is never imported. ``ml-100k.item`` holds the
movies (item 267 is a junk row: ``unkonwn`` title and year, so validation dead-letters it;
:func:`read_movielens_items` yields 1,681 items and that one RowError); ``ml-100k.inter``
holds the 100,000 ratings.

Example:
    >>> items = [e for e in read_movielens_items() if isinstance(e, CatalogItem)]
    >>> len(items)
    1681
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

from osreco.ingest.catalog import CatalogEntry, FieldMap, validate_row
from osreco.ingest.errors import CatalogError, RowError
from osreco.ingest.rows import read_rows

__all__ = ["MOVIELENS_ITEMS", "MOVIELENS_JUNK_ITEM", "MOVIELENS_FIELDS", "movielens_dir",
           "movielens_items_path", "movielens_ratings_path", "read_movielens_items",
           "read_movielens_ratings", "repair_movielens_row"]

_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")

MOVIELENS_ITEMS = 1682
MOVIELENS_JUNK_ITEM = "267"

MOVIELENS_FIELDS = FieldMap(id="item_id", title="movie_title", text=(), facets={"genres": "class"},
                            numeric={"year": ("release_year", "integer")},
                            embed_fields=("title", "genres", "year"))
"""Field map for ``ml-100k.item`` (recbole atomic file: ``item_id``, ``movie_title``,
``release_year``, ``class`` as space-separated genres)."""


def movielens_dir() -> Path:
    """The MovieLens-100k folder, ``recbole/dataset_example/ml-100k`` inside the installed wheel
    (recbole is not imported).

    Raises:
        CatalogError: recbole is not installed or the folder is missing.
    """
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise CatalogError("the recbole wheel is not installed (it carries MovieLens-100k)",
                           fix="pip install --no-deps recbole")
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    if not folder.is_dir():
        raise CatalogError(f"{folder} does not exist", file=str(folder), fix="reinstall recbole 1.2.x")
    return folder


def movielens_items_path(ml_dir: str | Path | None = None) -> Path:
    """Path of ``ml-100k.item`` in ``ml_dir`` (default: :func:`movielens_dir`)."""
    return Path(ml_dir or movielens_dir()) / "ml-100k.item"


def movielens_ratings_path(ml_dir: str | Path | None = None) -> Path:
    """Path of ``ml-100k.inter`` in ``ml_dir`` (default: :func:`movielens_dir`); read it with
    ``osreco.cf.interactions.read_interactions`` or :func:`read_movielens_ratings`."""
    return Path(ml_dir or movielens_dir()) / "ml-100k.inter"


def read_movielens_items(path: str | Path | None = None) -> Iterator[CatalogEntry]:
    """MovieLens-100k items as validated entries; item 267 comes out as a RowError.

    One known split error is repaired: item 1412 has its year inside the title
    (``... (1995)``) and ``V`` as the year; the year is taken from the title.

    Args:
        path: an ``ml-100k.item`` file (default: the one in the recbole wheel).
    """
    for line, row in read_rows(path or movielens_items_path(), "atomic"):
        if isinstance(row, RowError):
            yield row
            continue
        try:
            yield validate_row(repair_movielens_row(row), line, MOVIELENS_FIELDS)
        except RowError as e:
            e.context.setdefault("item_id", str(row.get("item_id") or "") or None)
            yield e


def read_movielens_ratings(path: str | Path | None = None) -> Iterator[dict[str, str]]:
    """The raw rating rows of ``ml-100k.inter`` (``user_id``, ``item_id``, ``rating``,
    ``timestamp``, all strings), in file order; rows that cannot be parsed are skipped.

    Args:
        path: an ``ml-100k.inter`` file (default: the one in the recbole wheel).
    """
    for _, row in read_rows(path or movielens_ratings_path(), "atomic"):
        if not isinstance(row, RowError):
            yield {k: str(v) for k, v in row.items()}


def repair_movielens_row(row: dict[str, object]) -> dict[str, object]:
    """Join the title's tokens (``token_seq``) and move a ``(YYYY)`` suffix of the title into a
    non-numeric year."""
    raw_title = row.get("movie_title", "")
    title = " ".join(raw_title) if isinstance(raw_title, list) else str(raw_title)  # token_seq is split
    year = str(row.get("release_year", ""))
    match = _TITLE_YEAR.search(title)
    if not year.isdigit() and match:
        return dict(row, movie_title=title[:match.start()].strip(), release_year=match.group(1))
    return dict(row, movie_title=title)
