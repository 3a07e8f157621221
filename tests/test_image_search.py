"""Images end to end on the real node: ingest --image-field (dead letters, unchanged images
skipped), search by photo (multipart and base64), text-to-image, fusion, similar ?by=image, and
bad uploads answered with one 4xx."""

from __future__ import annotations

import base64
import io
import json
import uuid
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from osreco.cli import cli
from osreco.ingest.connection import OpenSearchConfig
from osreco.ingest.synthetic_shop import render, shop_items, write_shop
from osreco.plugin.app import create_app
from osreco.plugin.config import Limits, SidecarConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _bomb_png(side: int) -> bytes:
    """A valid PNG header claiming side × side pixels with a tiny body (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64, 9)) + chunk(b"IEND", b""))


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def image_shop(os_client, opensearch_url, tmp_path_factory):
    from osreco.training.image_text import shop_bundle

    bundle = shop_bundle()
    root = tmp_path_factory.mktemp("image-shop")
    catalog = write_shop(root / "shop")
    alias = f"t-img-{uuid.uuid4().hex[:8]}"
    args = ["ingest", "load", str(catalog), "--bundle", str(bundle), "--index", alias, "--image-field", "image",
            "--facet", "shape", "--facet", "pattern", "--url", opensearch_url, "--json",
            "--dead-letter", str(root / "dead.jsonl"), "--checkpoint", str(root / "ck.json")]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    report = json.loads(result.output.strip().splitlines()[-1])
    yield SimpleNamespace(alias=alias, bundle=str(bundle), catalog=catalog, root=root, args=args, report=report,
                          items={i.item_id: i for i in shop_items()})
    os_client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True,
                             expand_wildcards="all")


def _client(env, url, **overrides):
    config = SidecarConfig(opensearch=OpenSearchConfig(url=url), alias=env.alias, bundle_dir=env.bundle,
                           image_bundle_dir=env.bundle, dev_mode=True, bundle_reload_s=0,
                           facets=("color", "shape", "pattern", "brand", "category"), embed_vocabulary=False,
                           **overrides)
    return create_app(config).test_client()


def test_ingest_embeds_every_image_and_skips_unchanged_ones(image_shop, os_client):
    assert image_shop.report["indexed"] == len(image_shop.items)
    os_client.indices.refresh(index=image_shop.alias)
    doc = os_client.get(index=image_shop.alias, id="img-0000")["_source"]
    assert len(doc["image_embedding"]) > 0 and doc["image_hash"].startswith("sha256:")
    again = CliRunner().invoke(cli, image_shop.args, catch_exceptions=False)
    report = json.loads(again.output.strip().splitlines()[-1])
    assert report["unchanged"] == len(image_shop.items) and report["embedded"] == 0


def test_unreadable_images_are_dead_lettered_with_the_reason(image_shop, os_client, opensearch_url, tmp_path):
    good = image_shop.items["img-0000"].row(str(image_shop.root / "shop" / "images" / "img-0000.png"))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "text.png").write_text("hello")
    rows = [dict(good, item_id="bad-missing", image=str(tmp_path / "nope.png")),
            dict(good, item_id="bad-corrupt", image="corrupt.png"),
            dict(good, item_id="bad-text", image=f"file://{tmp_path / 'text.png'}"),
            dict(good, item_id="ok-one")]
    catalog = tmp_path / "c.jsonl"
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows))
    alias = f"t-imgbad-{uuid.uuid4().hex[:8]}"
    try:
        result = CliRunner().invoke(cli, ["ingest", "load", str(catalog), "--bundle", image_shop.bundle,
                                          "--index", alias, "--image-field", "image", "--url", opensearch_url,
                                          "--dead-letter", str(tmp_path / "dead.jsonl"),
                                          "--checkpoint", str(tmp_path / "ck.json"), "--json"])
        assert result.exit_code == 1
        dead = {d["item_id"]: d for d in map(json.loads, (tmp_path / "dead.jsonl").read_text().splitlines())}
        assert set(dead) == {"bad-missing", "bad-corrupt", "bad-text"}
        assert all(d["field"] == "image" for d in dead.values())
        assert "does not exist" in dead["bad-missing"]["reason"]
        assert "corrupt" in dead["bad-corrupt"]["reason"] or "not an image" in dead["bad-corrupt"]["reason"]
        os_client.indices.refresh(index=alias)
        # the item with a broken picture is not indexed at all (documented choice)
        assert os_client.count(index=alias)["count"] == 1
    finally:
        os_client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True,
                                 expand_wildcards="all")


def test_text_bundle_as_image_bundle_fails_at_start(image_shop, opensearch_url, tiny_bundle, tmp_path):
    result = CliRunner().invoke(cli, ["ingest", "load", str(image_shop.catalog), "--bundle", str(tiny_bundle),
                                      "--image-bundle", str(tiny_bundle), "--index", "t-never",
                                      "--image-field", "image", "--url", opensearch_url])
    assert result.exit_code == 2 and "no image tower" in result.output
    from osreco.errors import ConfigError

    config = SidecarConfig(opensearch=OpenSearchConfig(url=opensearch_url), alias=image_shop.alias,
                           image_bundle_dir=str(tiny_bundle), dev_mode=True, bundle_reload_s=0)
    with pytest.raises(ConfigError, match="OSRECO_IMAGE_BUNDLE.*no image tower"):
        create_app(config)


def test_search_by_photo_multipart_finds_the_same_kind_and_says_why(image_shop, opensearch_url):
    c = _client(image_shop, opensearch_url)
    held = [i for i in image_shop.items.values() if i.held_out][0]
    photo = _png(render(held, seed=123))
    resp = c.post("/v1/search", data={"image": (io.BytesIO(photo), "photo.png"), "k": "5"},
                  content_type="multipart/form-data")
    assert resp.status_code == 200, resp.get_json()
    results = resp.get_json()["results"]
    assert len(results) == 5
    # the tiny model gets colour and print right but not shape yet (docs/images.md, "Numbers")
    assert all(image_shop.items[r["item_id"]].colour == held.colour for r in results)
    assert results[0]["matched"][0] == "looks like your photo"
    assert "image" in results[0]["contributions"]


def test_photo_as_base64_with_words_and_filters(image_shop, opensearch_url):
    c = _client(image_shop, opensearch_url)
    item = image_shop.items["img-1200"]  # a green plain triangle
    body = {"q": "striped", "image": base64.b64encode(_png(render(item, seed=7))).decode(), "k": 5,
            "filters": {"pattern": "striped"}}
    resp = c.post("/v1/search", json=body)
    assert resp.status_code == 200, resp.get_json()
    results = resp.get_json()["results"]
    assert results and all(r["source"]["pattern"] in ("striped", ["striped"]) for r in results)
    assert {"image", "text_image"} & set(results[0]["contributions"])


def test_text_query_also_searches_pictures(image_shop, opensearch_url):
    c = _client(image_shop, opensearch_url)
    resp = c.post("/v1/search", json={"q": "yellow triangle", "k": 10})
    results = resp.get_json()["results"]
    assert any("text_image" in r["contributions"] for r in results)


def test_similar_by_image_and_bad_by(image_shop, opensearch_url):
    c = _client(image_shop, opensearch_url)
    resp = c.get("/v1/items/img-3100/similar?by=image&k=5")
    assert resp.status_code == 200, resp.get_json()
    results = resp.get_json()["results"]
    assert len(results) == 5 and all("image" in r["contributions"] for r in results)
    assert "img-3100" not in {r["item_id"] for r in results}
    assert c.get("/v1/items/img-3100/similar?by=smell").status_code == 400
    for by in ("text", "all"):
        assert c.get(f"/v1/items/img-3100/similar?by={by}&k=3").status_code == 200


_GOOD = _png(render(shop_items()[0]))


@pytest.mark.parametrize("payload,status,words", [
    (_GOOD[: len(_GOOD) // 2], 400, "truncated"),
    (b"GIF89a truncated", 400, "image"),
    (b"plain text, no picture", 400, "not an image"),
])
def test_bad_uploads_are_one_4xx(image_shop, opensearch_url, payload, status, words):
    c = _client(image_shop, opensearch_url)
    resp = c.post("/v1/search", data={"image": (io.BytesIO(payload), "x.png")}, content_type="multipart/form-data")
    assert resp.status_code == status
    assert words in resp.get_json()["error"]["message"]


def test_huge_and_bomb_uploads_are_413(image_shop, opensearch_url):
    c = _client(image_shop, opensearch_url, limits=Limits(max_image_bytes=50_000, max_image_pixels=1_000_000))
    big = c.post("/v1/search", data={"image": (io.BytesIO(b"\x89PNG" + b"\x00" * 60_000), "big.png")},
                 content_type="multipart/form-data")
    assert big.status_code == 413 and "50000" in big.get_json()["error"]["message"]
    bomb = c.post("/v1/search", json={"image": base64.b64encode(_bomb_png(20_000)).decode()})
    assert bomb.status_code == 413 and "pixels" in bomb.get_json()["error"]["message"]
    assert c.post("/v1/search", json={"image": "not base64!!"}).status_code == 400


def test_photo_without_image_search_is_a_400(image_shop, opensearch_url):
    config = SidecarConfig(opensearch=OpenSearchConfig(url=opensearch_url), alias=image_shop.alias,
                           bundle_dir=image_shop.bundle, dev_mode=True, bundle_reload_s=0)
    c = create_app(config).test_client()
    resp = c.post("/v1/search", json={"image": base64.b64encode(b"abc").decode()})
    assert resp.status_code == 400 and "OSRECO_IMAGE_BUNDLE" in resp.get_json()["error"]["fix"]
