"""Query templates, constraints and relevance of `osreco eval` (pure)."""

from __future__ import annotations

import pytest

from osreco.evaluation.data import Constraints, EvalQuery, Movie, generate_queries, relevant_grades, sample_pairs

SCIFI_90 = Movie("1", 1995, frozenset({"sci-fi"}))
SCIFI_HORROR = Movie("2", 1996, frozenset({"sci-fi", "horror"}))
COMEDY_85 = Movie("3", 1985, frozenset({"comedy"}))
COMEDY_ROM = Movie("4", 1993, frozenset({"comedy", "romance"}))
NO_YEAR = Movie("5", None, frozenset({"comedy"}))
MOVIES = {m.item_id: m for m in (SCIFI_90, SCIFI_HORROR, COMEDY_85, COMEDY_ROM, NO_YEAR)}


def test_constraints_genres_exclusions_and_years():
    scifi_not_horror = Constraints(frozenset({"sci-fi"}), frozenset({"horror"}))
    assert scifi_not_horror.satisfied_by(SCIFI_90)
    assert not scifi_not_horror.satisfied_by(SCIFI_HORROR)
    eighties = Constraints(frozenset({"comedy"}), year_min=1980, year_max=1989)
    assert eighties.satisfied_by(COMEDY_85)
    assert not eighties.satisfied_by(COMEDY_ROM)
    assert not eighties.satisfied_by(NO_YEAR)
    assert Constraints(frozenset({"comedy"})).satisfied_by(NO_YEAR)
    assert Constraints(year_min=1990).satisfied_by(SCIFI_90)


def test_generated_queries_include_the_documented_examples():
    catalog = [Movie(str(i), 1900 + i % 100, frozenset(g)) for i, g in enumerate(
        [{"comedy"}, {"sci-fi"}, {"action"}, {"comedy", "romance"}, {"horror", "sci-fi"}] * 400)]
    queries = {q.text: q for q in generate_queries(catalog, min_matches=1)}
    assert queries["a 90s comedy"].constraints == Constraints(frozenset({"comedy"}), year_min=1990,
                                                              year_max=1999)
    assert queries["sci-fi but not horror"].constraints == Constraints(frozenset({"sci-fi"}),
                                                                       frozenset({"horror"}))
    assert queries["80年代的动作片"].constraints == Constraints(frozenset({"action"}), year_min=1980,
                                                          year_max=1989)
    assert queries["不要爱情片的喜剧"].constraints == Constraints(frozenset({"comedy"}), frozenset({"romance"}))
    assert queries["不要爱情片的喜剧"].language == "zh"
    assert queries["an 80s action movie"].language == "en"
    assert len({q.qid for q in queries.values()}) == len(queries)


def test_min_matches_drops_queries_nothing_satisfies():
    assert generate_queries([SCIFI_90], min_matches=2) == []
    texts = [q.text for q in generate_queries([SCIFI_90], min_matches=1)]
    assert texts == ["a 90s sci-fi movie", "90年代的科幻片", "sci-fi but not horror", "不要恐怖片的科幻片",
                     "sci-fi from the 90s without horror", "90年代的科幻片，不要恐怖片"]


def test_relevance_is_held_out_items_meeting_constraints_graded_by_rating():
    q = EvalQuery("q0", "comedy", "en", "t", Constraints(frozenset({"comedy"}), frozenset({"romance"})))
    held_out = {"3": 4.0, "4": 5.0, "1": 5.0, "99": 3.0, "5": 2.0}
    assert relevant_grades(q, held_out, MOVIES) == {"3": 4.0, "5": 2.0}


def test_sample_pairs_keeps_only_users_with_relevant_items_and_is_reproducible():
    q = EvalQuery("q0", "sci-fi", "en", "t", Constraints(frozenset({"sci-fi"})))
    held_out = {"u1": {"1": 4.0}, "u2": {"3": 5.0}, "u3": {"2": 3.0, "1": 1.0}}
    pairs = sample_pairs([q], held_out, MOVIES, users_per_query=5)
    assert sorted(p.user_id for p in pairs) == ["u1", "u3"]
    assert dict(next(p for p in pairs if p.user_id == "u3").grades) == {"2": 3.0, "1": 1.0}
    one = sample_pairs([q], held_out, MOVIES, users_per_query=1, seed=3)
    assert one == sample_pairs([q], held_out, MOVIES, users_per_query=1, seed=3) and len(one) == 1
    with pytest.raises(ValueError):
        sample_pairs([q], held_out, MOVIES, users_per_query=0)
