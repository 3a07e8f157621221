"""MovieLens-100k evaluation: ALS and EASE beat popularity by 30 % NDCG@10 on the time-ordered split."""

from __future__ import annotations

import json
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest
from click.testing import CliRunner

from osreco.cli import cli

pytestmark = pytest.mark.slow


def test_als_and_ease_beat_popularity_by_30_percent_ndcg(ml100k_dir):
    result = CliRunner().invoke(cli, ["cf", "eval", "--data", str(ml100k_dir / "ml-100k.inter"), "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.output)
    best_pop = max(res["popularity"]["ndcg"], res["popularity (all-time)"]["ndcg"])
    assert res["als"]["ndcg"] >= 1.3 * best_pop
    assert res["item-item"]["ndcg"] >= 1.3 * best_pop
    assert res["blend"]["ndcg"] >= res["als"]["ndcg"]
    assert res["als"]["coverage"] > res["popularity"]["coverage"]
