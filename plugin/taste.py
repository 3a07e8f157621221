"""How strongly a known user's taste re-orders a search, per query class (pure).

A search falls in one of three classes, decided after intent parsing and retrieval:

* ``listing``: no free text is left (every word became a filter, a range or a sort cue):
  the filters already say what qualifies, so taste decides the order among what they allow
  (additive boost, weight ``listing_cf_weight``); items the user has already interacted
  with are demoted (moved after the others, never dropped) when ``demote_seen`` is on, as a
  recommender would, and the taste kNN leaves them out so it reaches unseen items;
* ``title``: the free text names a catalog title (one of the top lexical hits has that
  title): the user asked for that item, so taste only breaks near-ties
  (``title_cf_weight``) and nothing is demoted;
* ``text``: any other free text: the configured boost (``cf_weight``, ``cf_mode``), nothing
  demoted.

An explicit sort cue ("cheapest", "newest") always wins: :func:`personal_order` applies it
after taste and demotion, so they only order items the sort key ties.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from osreco.plugin.fusion import Candidate, FusionSettings, apply_sort
from osreco.plugin.intent.types import IntentFields, SortKey

__all__ = ["QUERY_CLASSES", "query_class", "taste_settings", "class_weight", "demote", "personal_order",
           "normalize_title"]

QUERY_CLASSES = ("listing", "text", "title")
TITLE_HITS = 3  # how many of the top lexical hits may be the named title
_ARTICLE_SUFFIX = re.compile(r"^(.*), (the|a|an|der|die|das|le|la|les|el|il)$")


def normalize_title(title: str) -> str:
    """A title for comparison: casefolded, parenthesized parts (a year) dropped, a trailing
    article moved to the front ("Usual Suspects, The" -> "the usual suspects"), punctuation
    dropped, spaces collapsed."""
    t = re.sub(r"\([^)]*\)|（[^）]*）", " ", title.casefold()).strip()
    m = _ARTICLE_SUFFIX.match(re.sub(r"\s+", " ", t))
    if m:
        t = f"{m.group(2)} {m.group(1)}"
    return " ".join(re.sub(r"[^\w]+", " ", t).split())


def query_class(text: str, lexical_hits: Sequence[Mapping[str, Any]], fields: IntentFields = IntentFields()) -> str:
    """The class of a search: ``listing`` (no free text), ``title`` or ``text``.

    Args:
        text: the free text left after intent parsing.
        lexical_hits: the BM25 hits, best first (their ``_source`` carries the title).
        fields: index field names (``title``).
    """
    wanted = normalize_title(text)
    if not wanted:
        return "listing"
    for hit in lexical_hits[:TITLE_HITS]:
        title = (hit.get("_source") or {}).get(fields.title)
        if isinstance(title, str) and normalize_title(title) == wanted:
            return "title"
    return "text"


def class_weight(config: FusionSettings, cls: str) -> float:
    """The taste weight of query class ``cls`` (see the module docstring)."""
    return {"listing": config.listing_cf_weight, "title": config.title_cf_weight}.get(cls, config.cf_weight)


def taste_settings(config: FusionSettings, cls: str) -> FusionSettings:
    """The fusion of a personalized search of class ``cls``: its taste weight, additive in a
    listing (no text score to multiply), demotion of seen items only in a listing.

    Raises:
        ValueError: ``cls`` is not one of :data:`QUERY_CLASSES`.
    """
    if cls not in QUERY_CLASSES:
        raise ValueError(f"query class {cls!r} is not one of {QUERY_CLASSES}")
    if cls == "listing":
        return replace(config, cf_weight=config.listing_cf_weight, cf_mode="additive")
    return replace(config, cf_weight=class_weight(config, cls), demote_seen=False)


def demote(candidates: Sequence[Candidate], seen: Iterable[str]) -> list[Candidate]:
    """``candidates`` with the ``seen`` items moved after the others (each group keeps its order)."""
    gone = set(seen)
    return [c for c in candidates if c.item_id not in gone] + [c for c in candidates if c.item_id in gone]


def personal_order(candidates: Sequence[Candidate], seen: Iterable[str], sort: SortKey | None,
                   fields: IntentFields = IntentFields()) -> list[Candidate]:
    """Demote ``seen`` items, then apply the explicit sort cue, which wins over taste and demotion."""
    return apply_sort(demote(candidates, seen), sort, fields)
