"""Validation/test split of the users and the per-class pick of `osreco eval`'s tuning (pure)."""

from __future__ import annotations

import pytest

from osreco.evaluation.tuning import grid_name, pick_by_class, split_users


def test_split_users_is_deterministic_disjoint_and_complete():
    users = [str(u) for u in range(1, 944)]
    validation, test = split_users(users, 0.3, seed=7)
    assert set(validation).isdisjoint(test) and sorted(validation + test, key=int) == sorted(users, key=int)
    assert 0.25 < len(validation) / len(users) < 0.35
    assert split_users(reversed(users), 0.3, seed=7) == (validation, test)  # order does not matter
    assert split_users(users + users[:10], 0.3, seed=7) == (validation, test)  # duplicates counted once
    # a user's side does not depend on the other users
    sub_val, sub_test = split_users(users[:100], 0.3, seed=7)
    assert set(sub_val) == set(validation) & set(users[:100]) and set(sub_test) == set(test) & set(users[:100])
    assert split_users(users, 0.3, seed=8)[0] != validation
    assert len(split_users(users, 0.6, seed=7)[0]) > len(validation)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_users_rejects_a_bad_fraction(fraction):
    with pytest.raises(ValueError, match="validation_fraction"):
        split_users(["1", "2"], fraction)


def test_pick_by_class_takes_the_best_validation_ndcg_per_class():
    scores = {0.0: {"listing": 0.20, "text": 0.30},
              0.5: {"listing": 0.26, "text": 0.30},
              1.0: {"listing": 0.25, "text": 0.28}}
    chosen = pick_by_class(scores, ("listing", "text", "title"), {"listing": 9.0, "text": 9.0, "title": 0.1})
    # listing: the best value; text: a tie goes to less taste; title: not measured, kept
    assert chosen == {"listing": 0.5, "text": 0.0, "title": 0.1}
    assert pick_by_class({}, ("listing",), {"listing": 1.0}) == {"listing": 1.0}
    assert grid_name(0.05) == "taste=0.05"
