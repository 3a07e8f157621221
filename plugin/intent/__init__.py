"""osreco.plugin.intent: a query's text into an ``Intent`` (filters, negations, ranges, sort, free text).

``types`` holds the values; ``lexicon`` and ``ranges`` the rules; ``vocab`` the catalog's own
facet values; ``parser`` the rule-based parser; ``llm`` the optional LLM backend.
"""

from osreco.plugin.intent.parser import IntentOptions, detect_language, parse_intent
from osreco.plugin.intent.types import FacetMatch, Intent, IntentFields, RangeFilter

__all__ = ["IntentOptions", "detect_language", "parse_intent", "FacetMatch", "IntentFields", "Intent", "RangeFilter"]
