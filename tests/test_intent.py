"""Golden and unit tests of the rules intent parser, title links and the facet vocabulary (pure,
fast), and "movies like X" end to end on a small catalog in the real node (the last section)."""

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
from osreco.plugin.intent.titles import TitleHit, TitleIndex, find_like, link_title, title_request, titles_from_response
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
TITLES = {name: TitleIndex.from_rows(rows)
          for name, rows in json.loads((GOLDEN / "intent_titles.json").read_text(encoding="utf-8")).items()}
CASES = [json.loads(line) for line in (GOLDEN / "intents.jsonl").read_text(encoding="utf-8").splitlines()
         if line.strip()]


def test_golden_set_is_large_and_bilingual():
    langs = [c["language"] for c in CASES]
    assert len(CASES) >= 60
    assert langs.count("en") >= 30 and langs.count("zh") >= 30


@pytest.mark.parametrize("case", CASES, ids=[c["q"] for c in CASES])
def test_golden_intent(case):
    intent = parse_intent(case["q"], VOCABS[case["vocab"]], titles=TITLES.get(case["vocab"]))
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


def test_a_bound_the_field_cannot_hold_is_dropped():
    from osreco.plugin.schemas import TYPE_BOUNDS

    huge = "9" * 50
    intent = parse_intent(f"shoes under ${huge}", SHOP)
    lo, hi = TYPE_BOUNDS["float"]
    assert all(lo <= v <= hi for r in intent.ranges for v in r.bounds().values())
    assert intent.ranges == ()
    # an in-range bound next to it survives
    assert parse_intent(f"over 20 but under {huge}", SHOP).ranges == (RangeFilter("price", gt=20.0),)


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


# ---- title links ----------------------------------------------------------------------------

MOVIE_TITLES = TITLES["movies"]


def _linked(q, titles=MOVIE_TITLES):
    intent = parse_intent(q, MOVIES, titles=titles)
    link = intent.linked
    return intent, (link.item_id, link.how, link.route) if link else None


@pytest.mark.parametrize("q", ["movies like Toy Story", "films like toy story", "similar to Toy Story (1995)",
                               "something like TOY STORY", "Movies like toy story 1995", "like 'toy story'"])
def test_like_phrasings_link_the_title_exactly(q):
    intent, link = _linked(q)
    assert link == ("1", "exact", "similar")
    assert intent.text == "" and intent.terms() == {}


@pytest.mark.parametrize("q", ["类似玩具总动员的电影", "像玩具总动员这样的电影", "玩具总动员 这样的",
                               "和玩具总动员差不多的", "我想看玩具总动员这样的电影", "跟玩具总动员一样的"])
def test_chinese_like_phrasings_link_the_title(q):
    intent, link = _linked(q)
    assert link == ("1001", "exact", "similar")
    assert intent.text == "" and intent.language == "zh"


def test_articles_years_and_typos_link():
    assert _linked("similar to the godfather")[1] == ("127", "exact", "similar")
    assert _linked("movies like godfather")[1] == ("127", "exact", "similar")
    assert _linked("movies like toy storry")[1] == ("1", "fuzzy", "similar")
    assert _linked("movies like toy story 2")[1] == ("1002", "exact", "similar")


def test_ambiguous_title_picks_the_most_popular_and_says_so():
    intent, link = _linked("movies like hamlet")
    assert link == ("1008", "exact", "similar") and intent.linked.alternatives == 1
    assert "most popular" in intent.linked.note
    by_year = parse_intent("movies like hamlet (1990)", MOVIES, titles=MOVIE_TITLES).linked
    assert by_year.item_id == "1007" and "1990" in by_year.note


def test_unknown_title_falls_back_to_words_and_is_reported():
    intent = parse_intent("movies like zzyzx road", MOVIES, titles=MOVIE_TITLES)
    assert intent.linked.item_id is None and intent.linked.how == "none"
    assert "zzyzx road" in intent.linked.note and intent.text == "zzyzx road"
    assert intent.to_dict()["linked"]["item_id"] is None


def test_like_keeps_the_other_constraints():
    intent, link = _linked("movies like toy story but from the 80s")
    assert link == ("1", "exact", "similar")
    assert intent.ranges == (RangeFilter("year", gte=1980.0, lte=1989.0),) and intent.text == ""
    intent, _ = _linked("something like toy story for kids, no horror")
    assert intent.terms() == {"genres": ["children's"]} and intent.excluded_terms() == {"genres": ["horror"]}


@pytest.mark.parametrize("q,item", [("Star Wars", "50"), ("Romance & Cigarettes", "1005"), ("Horror Hotel", "1006")])
def test_title_words_never_become_filters(q, item):
    intent = parse_intent(q, MOVIES, titles=MOVIE_TITLES)
    assert intent.filters == () and intent.exclusions == ()
    assert intent.linked.item_id == item and intent.linked.route == "title"
    assert intent.text == normalize_query(q).replace("&", "").replace("  ", " ")


def test_quoted_words_never_become_filters():
    intent = parse_intent('"horror hotel" from the 90s', MOVIES)
    assert intent.filters == () and intent.text == "horror hotel"
    assert intent.ranges == (RangeFilter("year", gte=1990.0, lte=1999.0),)
    assert parse_intent("《恐怖旅馆》", MOVIES).filters == ()


def test_whole_query_lookup_only_when_facet_rules_would_fire():
    calls = []

    def lookup(phrase, exact=False):
        calls.append((phrase, exact))
        return MOVIE_TITLES(phrase)

    assert parse_intent("horror movies", MOVIES, titles=lookup).terms() == {"genres": ["horror"]}
    assert parse_intent("space odyssey", MOVIES, titles=lookup).linked is None
    assert calls == [("horror movies", True)]  # "space odyssey" names no facet: no lookup; only exact titles
    assert parse_intent("i would like a comedy", MOVIES, titles=lookup).linked is None  # a verb, not a cue


def test_without_a_lookup_like_stays_words():
    intent = parse_intent("movies like toy story", MOVIES)
    assert intent.linked is None and intent.text == "toy story"


def test_find_like_and_link_title_directly():
    cue = find_like("films like toy story for kids")
    assert cue.phrase == "toy story for kids" and cue.anchor == "start"
    link = link_title(cue, [TitleHit("9", "Kids (1995)", 10.0), TitleHit("1", "Toy Story (1995)", 1.0)])
    assert link.linked.item_id == "1" and cue.query[link.start:link.end] == "toy story"
    assert find_like("horror movies") is None


def test_title_request_and_response():
    body = title_request("toy story", IntentFields(), size=5)
    assert body["size"] == 5 and body["_source"] == ["item_id", "title", "popularity"]
    kinds = [next(iter(c)) for c in body["query"]["bool"]["should"]]
    assert kinds == ["match_phrase", "match_phrase", "match", "match"]
    # without a "like" cue only an exact title links: word-pair phrases instead of the fuzzy match
    exact = title_request("red running shoes", IntentFields(), exact=True)["query"]["bool"]["should"]
    assert [c["match_phrase"]["title"]["query"] for c in exact if "title" in c.get("match_phrase", {})] == [
        "red running shoes", "red running", "running shoes"]
    assert not any("match" in c for c in exact)
    assert any("match" in c for c in title_request("红色 跑鞋", IntentFields(), exact=True)["query"]["bool"]["should"])
    resp = {"hits": {"hits": [{"_id": "1", "_source": {"item_id": "1", "title": "Toy Story (1995)", "popularity": 452}},
                              {"_id": "2", "_source": {"item_id": "2"}}]}}
    assert titles_from_response(resp) == [TitleHit("1", "Toy Story (1995)", 452.0)]


# ---- negations with articles and quantifiers ------------------------------------------------

@pytest.mark.parametrize("q,wanted,banned", [
    ("a comedy, not a romance", ["comedy"], ["romance"]),
    ("90s movies, nothing with horror", [], ["horror"]),
    ("dramas without any romance", ["drama"], ["romance"]),
    ("thrillers, not a single horror", ["thriller"], ["horror"]),
    ("westerns but not the musical kind", ["western"], ["musical"]),
    ("不要任何恐怖片的喜剧", ["comedy"], ["horror"]),
    ("别给我恐怖片", [], ["horror"]),
    ("喜剧，别要爱情片", ["comedy"], ["romance"]),
])
def test_negations_with_articles_and_quantifiers(q, wanted, banned):
    intent = parse_intent(q, MOVIES)
    assert intent.terms().get("genres", []) == wanted
    assert intent.excluded_terms() == {"genres": banned}


# ---- "movies like X" against the real node ----------------------------------------------------

_TOY = "toys come to life in an animated adventure of a cowboy doll and a space ranger"
_LIKE_CATALOG = [  # (id, title, year, popularity, what the item is about)
    ("1", "Toy Story (1995)", 1995, 452.0, _TOY),
    ("2", "A Bug's Life (1998)", 1998, 200.0, _TOY),
    ("3", "Brave Little Toaster, The (1987)", 1987, 40.0, _TOY),
    ("4", "Pinocchio (1940)", 1940, 100.0, _TOY),
    ("5", "FairyTale: A True Story (1997)", 1997, 50.0, "two girls photograph fairies in an english garden"),
    ("6", "NeverEnding Story III, The (1994)", 1994, 8.0, "a boy returns to the magic book of fantasia"),
    ("7", "A Pyromaniac's Love Story (1995)", 1995, 5.0, "a bakery fire and a tangle of lovers"),
    ("8", "Story of Women (1988)", 1988, 12.0, "a wartime drama about a woman in occupied france"),
    ("9", "Hamlet (1990)", 1990, 20.0, "the prince of denmark avenges his father"),
    ("10", "Hamlet (1996)", 1996, 90.0, "the prince of denmark avenges his father, uncut"),
]


@pytest.fixture(scope="module")
def like_app(os_client, opensearch_url, tiny_bundle):
    """A small movie catalog (Toy Story, its look-alikes, "Story" decoys, two Hamlets) behind a
    fresh alias, served by the real app."""
    import uuid

    from osreco.exporter.encoder import Encoder
    from osreco.ingest.catalog import CatalogItem
    from osreco.ingest.connection import OpenSearchConfig
    from osreco.ingest.index_spec import IndexSpec
    from osreco.ingest.rebuild import ensure_index
    from osreco.ingest.writer import WriteConfig, index_items
    from osreco.plugin.app import create_app
    from osreco.plugin.config import SidecarConfig

    alias = f"t-like-{uuid.uuid4().hex[:8]}"
    enc = Encoder(tiny_bundle, threads=1)
    items = [CatalogItem(i, n, {"item_id": i, "title": t, "year": y, "popularity": p, "text": about,
                                "genres": ["animation"] if about == _TOY else ["drama"]}, about)
             for n, (i, t, y, p, about) in enumerate(_LIKE_CATALOG, 1)]
    assert index_items(os_client, enc, ensure_index(os_client, IndexSpec.from_encoder(enc, alias)), items,
                       WriteConfig()).ok
    os_client.indices.refresh(index=alias)
    config = SidecarConfig(opensearch=OpenSearchConfig(url=opensearch_url), alias=alias, bundle_dir=str(tiny_bundle),
                           store_prefix=f"{alias}-s", dev_mode=True, facets=("genres",), embed_vocabulary=False,
                           bundle_reload_s=0)
    yield create_app(config).test_client()
    os_client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True,
                             expand_wildcards="all")


def _search(client, q, k=3):
    resp = client.post("/v1/search", json={"q": q, "k": k})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


@pytest.mark.integration
def test_like_title_returns_its_neighbours_not_title_words(like_app):
    body = _search(like_app, "movies like Toy Story")
    assert body["retrieval"] == "similar"
    assert body["intent"]["linked"]["item_id"] == "1" and body["intent"]["linked"]["how"] == "exact"
    assert {r["item_id"] for r in body["results"]} == {"2", "3", "4"}  # the look-alikes, not the "Story" titles
    fuzzy = _search(like_app, "films like toy storry")
    assert fuzzy["intent"]["linked"]["how"] == "fuzzy"
    assert [r["item_id"] for r in fuzzy["results"]] == [r["item_id"] for r in body["results"]]


@pytest.mark.integration
def test_like_title_keeps_the_other_constraints(like_app):
    body = _search(like_app, "movies like toy story but from the 80s")
    assert body["intent"]["ranges"] == {"year": {"gte": 1980.0, "lte": 1989.0}}
    assert body["results"][0]["item_id"] == "3"
    assert all(1980 <= r["source"]["year"] <= 1989 for r in body["results"])


@pytest.mark.integration
def test_ambiguous_title_picks_the_most_popular_and_unknown_falls_back(like_app):
    linked = _search(like_app, "movies like hamlet")["intent"]["linked"]
    assert linked["item_id"] == "10" and linked["alternatives"] == 1 and "most popular" in linked["note"]
    body = _search(like_app, "movies like zzyzx road")
    assert body["intent"]["linked"]["item_id"] is None and body["retrieval"] != "similar"
    assert any(d["kind"] == "title_link" and "zzyzx road" in d["message"] for d in body["degradations"])


@pytest.mark.integration
def test_like_title_honours_a_sort_cue_and_an_unlinked_title_is_searched_once(like_app):
    body = _search(like_app, "movies like toy story, newest first", k=3)
    assert body["retrieval"] == "similar" and body["intent"]["sort"] is not None
    years = [r["source"]["year"] for r in body["results"]]
    assert years == sorted(years, reverse=True), years  # the sort cue wins over similarity
    unknown = _search(like_app, "movies like zzyzx road")
    assert unknown["intent"]["text"].split().count("zzyzx") == 1  # its words once, not repeated


@pytest.mark.parametrize("q,item,kept", [
    ("Star Wars sci-fi", "50", {"genres": ["sci-fi"]}),
    ("watch Horror Hotel", "1006", {}),
    ("Romance & Cigarettes please, from the 90s", "1005", {})])
def test_a_title_inside_a_longer_query_is_words_not_filters(q, item, kept):
    intent = parse_intent(q, MOVIES, titles=MOVIE_TITLES)
    assert intent.linked is not None and intent.linked.item_id == item and intent.linked.route == "title"
    assert intent.terms() == kept and intent.exclusions == ()  # the rest of the query still filters
    assert parse_intent("horror movies from the 90s", MOVIES, titles=MOVIE_TITLES).terms() == {"genres": ["horror"]}
