"""Golden and unit tests of the rules intent parser and the facet vocabulary (pure, fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osreco.plugin.errors import ConfigError
from osreco.plugin.intent.parser import IntentOptions, detect_language, normalize_query, parse_intent
from osreco.plugin.intent.ranges import cn_to_int, extract_ranges
from osreco.plugin.intent.types import FacetMatch, IntentFields, RangeFilter
from osreco.plugin.intent.vocab import (
    Vocabulary,
    edit_distance,
    normalize_key,
    vocabulary_from_response,
    vocabulary_request,
)

GOLDEN = Path(__file__).parent / "golden"
VOCABS = {name: Vocabulary.from_values(v)
          for name, v in json.loads((GOLDEN / "intent_vocab.json").read_text()).items()}
CASES = [json.loads(line) for line in (GOLDEN / "intents.jsonl").read_text(encoding="utf-8").splitlines()
         if line.strip()]


def test_golden_set_is_large_and_bilingual():
    langs = [c["language"] for c in CASES]
    assert len(CASES) >= 60
    assert langs.count("en") >= 30 and langs.count("zh") >= 30


@pytest.mark.parametrize("case", CASES, ids=[c["q"] for c in CASES])
def test_golden_intent(case):
    intent = parse_intent(case["q"], VOCABS[case["vocab"]])
    assert intent.to_dict() == case["expected"]
    assert intent.language == case["language"]
    assert intent.parser == "rules"
    assert intent.query == case["q"]


SHOP, MOVIES = VOCABS["shop"], VOCABS["movies"]


def test_match_kinds_are_recorded():
    intent = parse_intent("nikey 红色 earphones", SHOP)
    assert [(m.field, m.value, m.how) for m in intent.filters] == [
        ("brand", "nike", "fuzzy"), ("color", "red", "synonym"), ("category", "headphones", "synonym")]
    assert intent.filters[0].phrase == "nikey" and intent.filters[0].score == 0.8


def test_bluetooth_is_never_blue():
    intent = parse_intent("蓝牙音箱", SHOP)
    assert intent.terms() == {"category": ["speakers"]}
    assert parse_intent("蓝牙键盘", SHOP).terms() == {}


def test_synonym_needs_the_value_in_the_vocabulary():
    only_earbuds = Vocabulary.from_values({"category": ["earbuds"]})
    assert parse_intent("蓝牙耳机", only_earbuds).terms() == {"category": ["earbuds"]}
    assert parse_intent("蓝牙耳机", Vocabulary.from_values({"category": ["phones"]})).to_dict()["text"] == "蓝牙耳机"


def test_negation_list_rules():
    assert parse_intent("not nike, red shoes", SHOP).to_dict()["filters"] == {"color": ["red"]}
    assert parse_intent("no horror, comedy", MOVIES).excluded_terms() == {"genres": ["horror", "comedy"]}
    assert parse_intent("no horror or no comedy", MOVIES).excluded_terms() == {"genres": ["horror", "comedy"]}
    assert parse_intent("不要恐怖片和喜剧", MOVIES).excluded_terms() == {"genres": ["horror", "comedy"]}


def test_negation_without_a_facet_stays_text():
    intent = parse_intent("no country for old men", MOVIES)
    assert intent.exclusions == () and intent.text == "country old men"


def test_soft_sort_cue_only_without_a_price_range():
    assert parse_intent("cheap headphones", SHOP).sort.key == "price"
    assert parse_intent("cheap headphones under 50", SHOP).sort is None
    assert parse_intent("cheapest headphones under 50", SHOP).sort.order == "asc"


def test_language_is_detected_or_given():
    assert detect_language("500元以下的sony耳机") == "zh"
    assert detect_language("sony headphones") == "en"
    assert parse_intent("sony headphones", SHOP, language="zh").language == "zh"


def test_remaining_text_keeps_content_words():
    assert parse_intent("Noise-cancelling headphones for the office", SHOP).text == "noise-cancelling office"
    assert parse_intent("2001 a space odyssey", MOVIES).text == "2001 space odyssey"


def test_field_map_renames_range_fields():
    opts = IntentOptions(fields=IntentFields(price="price_usd", year="release_year"))
    intent = parse_intent("90s films under $10", MOVIES, options=opts)
    assert intent.ranges == (RangeFilter("price_usd", lt=10.0), RangeFilter("release_year", gte=1990.0, lte=1999.0))


def test_ranges_on_one_field_intersect():
    assert parse_intent("over 20 but under 50", SHOP).ranges == (RangeFilter("price", gt=20.0, lt=50.0),)
    assert parse_intent("under 50 under 40", SHOP).ranges == (RangeFilter("price", lt=40.0),)


@pytest.mark.parametrize("text,expected", [
    ("50k", []), ("between 40 and 20", []), ("iphone 15", []),
    ("$1.5k or more", [("price", {"gte": 1500.0})]),
    ("the mid-80s", [("year", {"gte": 1983.0, "lte": 1986.0})]),
    ("before the 90s", [("year", {"lt": 1990.0})]),
    ("after the 80s", [("year", {"gte": 1990.0})]),
    ("00s", [("year", {"gte": 2000.0, "lte": 2009.0})]),
    ("90年代初", [("year", {"gte": 1990.0, "lte": 1993.0})]),
    ("早于1970年", [("year", {"lt": 1970.0})]),
    ("至少200元", [("price", {"gte": 200.0})]),
])
def test_extract_ranges(text, expected):
    assert extract_ranges(normalize_query(text))[0] == expected


@pytest.mark.parametrize("text,value", [("三百五十", 350), ("两千", 2000), ("八十", 80), ("一万二千", 12000),
                                        ("十五", 15), ("九零", 90), ("五百", 500)])
def test_cn_to_int(text, value):
    assert cn_to_int(text) == value


def test_normalize_key_and_edit_distance():
    assert normalize_key("Sci-Fi") == normalize_key("sci fi") == "scifi"
    assert normalize_key("Children's") == "children"
    assert normalize_key("comedies") == "comedy" and normalize_key("watches") == "watch"
    assert normalize_key("adidas", stem=False) == "adidas"
    assert edit_distance("nikey", "nike", 1) == 1
    assert edit_distance("samsnug", "samsung", 1) == 1
    assert edit_distance("kitten", "sitting", 2) == 3  # capped at limit + 1


def test_fuzzy_needs_five_characters():
    assert SHOP.fuzzy("nikey") == FacetMatch("brand", "nike", "fuzzy", "nikey", 0.8)
    assert SHOP.fuzzy("bled") is None and SHOP.fuzzy("12345") is None


def test_vocabulary_request_and_response():
    body = vocabulary_request(IntentFields(facets=("brand", "genres")), size=10)
    assert body == {"size": 0, "track_total_hits": False,
                    "aggs": {"brand": {"terms": {"field": "brand", "size": 10}},
                             "genres": {"terms": {"field": "genres", "size": 10}}}}
    response = {"aggregations": {"brand": {"buckets": [{"key": "Sony", "doc_count": 3},
                                                        {"key": "bose", "doc_count": 1}]}}}
    vocab = vocabulary_from_response(response, IntentFields(facets=("brand", "genres")))
    assert vocab.values == {"brand": ("bose", "sony"), "genres": ()}
    with pytest.raises(ConfigError):
        vocabulary_request(size=0)


def _toy_embed(texts):
    """Hand-made unit vectors: "sneakers"/"trainers" point the same way as "running shoes"."""
    table = {"running shoes": [1, 0, 0], "kicks": [0.9, 0.1, 0], "headphones": [0, 1, 0], "cans": [0, 0.95, 0.05]}
    rows = [np.array(table.get(t, [0, 0, 1]), dtype=np.float32) for t in texts]
    return np.stack([r / np.linalg.norm(r) for r in rows])


def test_embedding_match_with_threshold():
    vocab = Vocabulary.from_values({"category": ["headphones", "running shoes"]}).with_vectors(_toy_embed)
    intent = parse_intent("red kicks", vocab, embed=_toy_embed)
    assert [(m.field, m.value, m.how) for m in intent.filters] == [("category", "running shoes", "embedding")]
    assert intent.text == "red"
    strict = IntentOptions(embed_threshold=0.999)
    assert parse_intent("red kicks", vocab, embed=_toy_embed, options=strict).filters == ()
    assert parse_intent("red kicks", vocab).filters == ()  # no embed callable: no embedding match


def test_options_are_validated():
    with pytest.raises(ConfigError):
        IntentOptions(embed_threshold=0)
    with pytest.raises(ConfigError):
        IntentOptions(max_ngram=9)
    with pytest.raises(ConfigError):
        IntentFields(price="")


def test_intent_describe_and_range_contains():
    intent = parse_intent("sony under 50", SHOP)
    assert intent.describe()["parser"] == "rules" and intent.describe()["language"] == "en"
    r = RangeFilter("price", gte=10.0, lt=20.0)
    assert (r.contains(10.0), r.contains(19.99), r.contains(20.0)) == (True, True, False)


_ALPHABET = st.sampled_from(list("abcnikeso 0123456789$-,.'元以下不要年代科幻红色的十百") + ["not ", "under ", "90s"])


@settings(max_examples=200, deadline=None)
@given(st.lists(_ALPHABET, max_size=30).map("".join) | st.text(max_size=60))
def test_parser_never_fails_and_only_keeps_query_words(q):
    intent = parse_intent(q, SHOP)
    norm = normalize_query(q)
    for word in intent.text.split():
        assert word in norm
    for r in intent.ranges:
        assert r.bounds()
    assert intent.language in ("en", "zh")


def test_chinese_vocabulary_values_are_found_inside_chinese_text():
    vocab = Vocabulary.from_values({"brand": ["重庆出版社", "nike"], "category": ["books"]})
    intent = parse_intent("重庆出版社的图书，不要nike", vocab)
    assert intent.to_dict()["filters"] == {"brand": ["重庆出版社"], "category": ["books"]}
    assert intent.excluded_terms() == {"brand": ["nike"]}
