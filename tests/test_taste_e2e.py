"""Taste in a filtered listing, end to end against the real node: a tiny catalog with known
item factors, a known user with a stored taste vector and history, the real sidecar app."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from osreco.cf import store as cf_store
from osreco.cf.privacy import pseudonymize
from osreco.exporter.encoder import Encoder
from osreco.ingest.catalog import FieldMap, read_catalog
from osreco.ingest.connection import OpenSearchConfig
from osreco.ingest.index_spec import IndexSpec
from osreco.ingest.rebuild import ensure_index
from osreco.ingest.writer import WriteConfig, index_items
from osreco.plugin.app import create_app
from osreco.plugin.config import DEV_HMAC_KEY, SidecarConfig

pytestmark = pytest.mark.integration

# shoes by popularity: s1 (most popular) ... s6; the user likes s6 (and s4, already seen)
POPULARITY = {"s1": 60, "s2": 50, "s3": 40, "s4": 30, "s5": 20, "s6": 10, "h1": 100, "h2": 90}
FACTORS = {"s1": [0.0, 1.0], "s2": [0.0, 1.0], "s3": [0.1, 1.0], "s4": [1.0, 0.0], "s5": [0.2, 1.0],
           "s6": [0.9, 0.1], "h1": [1.0, 0.0], "h2": [0.0, 1.0]}
LISTING = {"q": "shoes", "filters": {"category": ["shoes"]}, "k": 6}


@pytest.fixture(scope="module")
def taste_shop(os_client, tiny_bundle, tmp_path_factory):
    alias = f"t-taste-{uuid.uuid4().hex[:8]}"
    path = tmp_path_factory.mktemp("taste") / "items.jsonl"
    rows = [{"item_id": i, "title": f"item {i}", "text": "shoe" if i[0] == "s" else "hat",
             "category": "shoes" if i[0] == "s" else "hats", "popularity": p} for i, p in POPULARITY.items()]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    fields = FieldMap(facets={"category": "category"}, numeric={"popularity": ("popularity", "float")})
    enc = Encoder(tiny_bundle, threads=1)
    spec = IndexSpec.from_encoder(enc, alias, cf_dim=2).with_fields(facets=("category",))
    assert index_items(os_client, enc, ensure_index(os_client, spec), read_catalog(path, fields),
                       WriteConfig()).ok
    store = cf_store.StoreConfig(prefix=f"{alias}-s", item_index=alias)
    cf_store.write_item_factors(os_client, store, list(FACTORS), np.asarray(list(FACTORS.values()), np.float32))
    os_client.update(index=alias, id="s5", body={"doc": {"cf_neighbors": ["h1"], "cf_neighbor_scores": [0.9]}},
                     refresh=True)  # s5 is a co-engagement neighbour of the user's h1
    user = f"u-{uuid.uuid4().hex[:6]}"
    cf_store.write_user_vectors(os_client, store, [pseudonymize(user, DEV_HMAC_KEY)],
                                np.asarray([[1.0, 0.0]], np.float32),
                                {pseudonymize(user, DEV_HMAC_KEY): ["h1", "s4"]})
    yield SimpleNamespace(alias=alias, bundle=str(tiny_bundle), prefix=store.prefix, user=user)
    os_client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True,
                             expand_wildcards="all")


def _client(env, url: str, **fusion: Any):
    from osreco.plugin.fusion import FusionSettings

    config = SidecarConfig(opensearch=OpenSearchConfig(url=url), alias=env.alias, bundle_dir=env.bundle,
                           store_prefix=env.prefix, dev_mode=True, facets=("category",), embed_vocabulary=False,
                           bundle_reload_s=0, fusion=FusionSettings(**fusion))
    return create_app(config).test_client()


def _ids(resp) -> list[str]:
    assert resp.status_code == 200, resp.get_json()
    return [r["item_id"] for r in resp.get_json()["results"]]


def test_known_user_listing_puts_taste_first_anonymous_gets_popularity(taste_shop, opensearch_url):
    # taste alone (neighbours: below), strong enough to lift the least popular shoe past all five
    client = _client(taste_shop, opensearch_url, neighbors_weight=0.0, listing_cf_weight=1.0)
    anonymous = client.post("/v1/search", json=LISTING)
    assert anonymous.get_json()["query_class"] == "listing"
    assert _ids(anonymous) == ["s1", "s2", "s3", "s4", "s5", "s6"]  # popularity order

    known = client.post("/v1/search", json={**LISTING, "user_id": taste_shop.user})
    body = known.get_json()
    assert body["personalized"] and body["query_class"] == "listing"
    ranked = _ids(known)
    assert ranked[0] == "s6", ranked  # the least popular shoe, the one the user would like
    assert ranked[-1] == "s4", ranked  # already seen: demoted, still listed
    assert set(ranked) == {"s1", "s2", "s3", "s4", "s5", "s6"}  # the filter still holds (no hats)


def test_default_weights_lift_the_taste_item_and_demote_the_seen_one(taste_shop, opensearch_url):
    client = _client(taste_shop, opensearch_url, neighbors_weight=0.0)
    ranked = _ids(client.post("/v1/search", json={**LISTING, "user_id": taste_shop.user}))
    assert ranked.index("s6") < 5 and ranked[-1] == "s4", ranked  # anonymous: s6 last, s4 4th
    assert ranked.index("s6") < ranked.index("s2"), ranked  # past a more popular shoe the user does not like


def test_settings_switch_taste_and_demotion_off(taste_shop, opensearch_url):
    no_taste = _client(taste_shop, opensearch_url, listing_cf_weight=0.0, neighbors_weight=0.0, demote_seen=False)
    assert _ids(no_taste.post("/v1/search", json={**LISTING, "user_id": taste_shop.user})) == \
        ["s1", "s2", "s3", "s4", "s5", "s6"]
    keep_seen = _client(taste_shop, opensearch_url, neighbors_weight=0.0, demote_seen=False)
    assert _ids(keep_seen.post("/v1/search", json={**LISTING, "user_id": taste_shop.user}))[0] == "s4"


def test_an_explicit_sort_cue_wins_over_taste(taste_shop, opensearch_url):
    client = _client(taste_shop, opensearch_url)
    resp = client.post("/v1/search", json={**LISTING, "q": "most popular", "user_id": taste_shop.user})
    body = resp.get_json()
    assert body["intent"].get("sort"), body["intent"]  # the cue was parsed
    assert _ids(resp) == ["s1", "s2", "s3", "s4", "s5", "s6"]


def test_neighbours_of_the_history_join_the_listing(taste_shop, opensearch_url):
    client = _client(taste_shop, opensearch_url, listing_cf_weight=0.0, neighbors_weight=1.0)
    ranked = _ids(client.post("/v1/search", json={**LISTING, "user_id": taste_shop.user}))
    assert ranked[0] == "s5" and ranked[-1] == "s4", ranked  # h1's neighbour first; the seen shoe last
    anonymous = _ids(client.post("/v1/search", json=LISTING))
    assert anonymous == ["s1", "s2", "s3", "s4", "s5", "s6"]
