"""A hand-made e-commerce catalog for tests and demos (MovieLens-100k is :mod:`osreco.ingest.movielens`).

``ecommerce.jsonl`` (50 items) is designed so that each query in ``ECOMMERCE_QUERIES`` has
exactly one item that meets all of its constraints. Prices are in the item's ``currency``
(``usd`` for the English-titled items, ``cny`` for the Chinese-titled ones).

Example:
    >>> items = list(read_ecommerce_items())
    >>> sum(isinstance(e, CatalogItem) for e in items)
    50
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from osreco.ingest.catalog import CatalogEntry, FieldMap, read_catalog

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


def ecommerce_catalog_path() -> Path:
    """Path of the packaged ``ecommerce.jsonl``."""
    return Path(__file__).with_name("fixtures") / "ecommerce.jsonl"


def read_ecommerce_items() -> Iterator[CatalogEntry]:
    """The e-commerce fixture as validated entries (all 50 are valid)."""
    return read_catalog(ecommerce_catalog_path(), ECOMMERCE_FIELDS)
