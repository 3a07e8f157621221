"""Image request parsing, the image sub-searches and their explanations, the ingest image stage
and the synthetic shop — pure parts, no node, no model."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

from osreco.exporter.errors import ImageInputError
from osreco.ingest.catalog import FieldMap, validate_row
from osreco.ingest.errors import RowError
from osreco.ingest.images import ImageLimits, fetch_image, with_images
from osreco.ingest.synthetic_shop import render, shop_items, train_items
from osreco.plugin.config import Limits
from osreco.plugin.errors import PayloadTooLargeError, RequestError
from osreco.plugin.explain import signal_notes
from osreco.plugin.image_search import ImageSearch, without
from osreco.plugin.intent.types import FacetMatch, Intent, IntentFields
from osreco.plugin.query import MsearchPlan, QueryOptions
from osreco.plugin.schemas import parse_image_input, parse_page_args, parse_search, parse_search_form

LIMITS = Limits(max_image_bytes=1000)


def test_search_takes_a_base64_image_alone_or_with_words():
    raw = b"\x89PNG fake bytes"
    req = parse_search({"image": base64.b64encode(raw).decode()}, LIMITS)
    assert req.image == raw and req.q == ""
    url = "data:image/png;base64," + base64.b64encode(raw).decode()
    assert parse_search({"q": "red", "image": url}, LIMITS).image == raw
    assert parse_search({"q": "red"}, LIMITS).image is None


@pytest.mark.parametrize("value,error,words", [
    ("%%%not base64", RequestError, "base64"),
    ("", RequestError, "empty"),
    (12, RequestError, "base64 string"),
    (base64.b64encode(b"x" * 1001).decode(), PayloadTooLargeError, "1000 bytes"),
    ("A" * 5000, PayloadTooLargeError, "1000 bytes"),
])
def test_bad_image_fields_are_named(value, error, words):
    with pytest.raises(error, match=words) as e:
        parse_image_input(value, LIMITS)
    assert e.value.field == "image"


def test_no_q_and_no_image_is_still_an_error():
    with pytest.raises(RequestError, match="q is required"):
        parse_search({"k": 3}, LIMITS)


def test_multipart_form_becomes_the_same_request():
    req = parse_search_form({"q": "red", "k": "3", "filters": json.dumps({"color": "red"})},
                            {"image": io.BytesIO(b"pic")}, LIMITS)
    assert (req.q, req.k, req.image, req.filters) == ("red", 3, b"pic", (("color", ("red",)),))
    with pytest.raises(PayloadTooLargeError):
        parse_search_form({}, {"image": io.BytesIO(b"x" * 2000)}, LIMITS)
    with pytest.raises(RequestError, match="unknown file part"):
        parse_search_form({}, {"photo": io.BytesIO(b"x")}, LIMITS)
    with pytest.raises(RequestError, match="k must be an integer"):
        parse_search_form({"q": "x", "k": "many"}, {}, LIMITS)


def test_similar_by_is_checked():
    assert parse_page_args({"by": "image"}, LIMITS, need_user=False).by == "image"
    assert parse_page_args({}, LIMITS, need_user=False).by is None
    with pytest.raises(RequestError, match="by must be one of"):
        parse_page_args({"by": "colour"}, LIMITS, need_user=False)


class _FakeTower:
    """Stands in for an image–text Encoder: a fixed vector per call (no model needed here)."""

    def encode_images(self, images, batch_size=16):
        return np.ones((len(images), 4), dtype=np.float32) / 2

    def encode_queries(self, texts):
        return np.full((len(texts), 4), 0.5, dtype=np.float32)


def _photo() -> bytes:
    buf = io.BytesIO()
    render(shop_items()[0]).save(buf, format="PNG")
    return buf.getvalue()


def test_photo_only_search_drops_the_listing_and_adds_image_knn_under_filters():
    search = ImageSearch(_FakeTower(), Limits())
    options = QueryOptions(index="shop", fields=IntentFields(facets=("color",)), size=20)
    plan = MsearchPlan([{"index": "shop"}, {"query": "bm25"}, {"index": "shop"}, {"query": "cf"}], ("bm25", "cf"))
    intent = Intent(query="", text="", filters=(FacetMatch("color", "red", "request", "red"),))
    vectors = search.vectors(search.photo_vector(_photo()), "")
    assert set(vectors) == {"image"}
    out = search.extend(plan, intent, options, vectors)
    assert out.signals == ("cf", "image")
    knn = out.lines[-1]["query"]["knn"]["image_embedding"]
    assert knn["k"] == 20 and knn["filter"]["bool"]["filter"] == [{"terms": {"color": ["red"]}}]
    with_words = search.extend(plan, Intent(query="red", text="red"), options,
                               search.vectors(search.photo_vector(_photo()), "red"))
    assert with_words.signals == ("bm25", "cf", "image", "text_image")


def test_bad_photo_is_an_image_error_and_no_bundle_is_a_400():
    with pytest.raises(ImageInputError) as e:
        ImageSearch(_FakeTower(), Limits()).photo_vector(b"GIF89a....")
    assert e.value.status == 400
    with pytest.raises(RequestError, match="no image search"):
        ImageSearch(None, Limits()).photo_vector(b"x")
    assert ImageSearch(None, Limits()).vectors(None, "words") == {}


def test_without_keeps_the_other_pairs():
    plan = MsearchPlan([{"i": 1}, {"b": 1}, {"i": 2}, {"b": 2}, {"i": 3}, {"b": 3}], ("a", "b", "c"))
    assert without(plan, "b").lines == [{"i": 1}, {"b": 1}, {"i": 3}, {"b": 3}]


def test_explanations_name_the_image_signals():
    assert signal_notes({"bm25": 0.2, "image": 0.5, "text_image": 0.1}) == [
        "looks like your photo", "its picture matches your words"]
    assert signal_notes({"bm25": 0.2, "dense": 0.1}) == []


def test_image_stage_dead_letters_bad_pictures_and_reuses_unchanged_ones(tmp_path):
    (tmp_path / "a.png").write_bytes(_photo())
    (tmp_path / "b.png").write_bytes(b"not a picture")
    fields = FieldMap(image="image")
    rows = [{"item_id": "a", "title": "A", "image": "a.png"}, {"item_id": "b", "title": "B", "image": "b.png"},
            {"item_id": "c", "title": "C"}, {"item_id": "d", "title": "D", "image": str(tmp_path / "gone.png")}]
    entries = [validate_row(r, n + 1, fields) for n, r in enumerate(rows)]
    calls: list[int] = []

    class Tower(_FakeTower):
        def encode_images(self, images, batch_size=16):
            calls.append(len(images))
            return super().encode_images(images)

    out = list(with_images(entries, Tower(), base_dir=tmp_path))
    assert [type(e).__name__ for e in out] == ["CatalogItem", "RowError", "CatalogItem", "RowError"]
    assert len(out[0].fields["image_embedding"]) == 4 and "image_embedding" not in out[2].fields
    assert isinstance(out[1], RowError) and out[1].field == "image" and out[1].context["item_id"] == "b"
    assert "does not exist" in str(out[3])
    digest = out[0].fields["image_hash"]
    stored = {"a": {"image_hash": digest, "image_embedding": [9.0] * 4}}
    again = list(with_images(entries[:1], Tower(), stored=lambda ids: stored, base_dir=tmp_path))
    assert again[0].fields["image_embedding"] == [9.0] * 4 and calls == [1]


def test_fetch_refuses_oversized_files_and_unknown_schemes(tmp_path):
    (tmp_path / "big.png").write_bytes(b"x" * 2000)
    with pytest.raises(ImageInputError, match="over the limit of 1000") as e:
        fetch_image(str(tmp_path / "big.png"), ImageLimits(max_bytes=1000))
    assert e.value.problem == "too_large"
    with pytest.raises(ImageInputError, match="scheme"):
        fetch_image("ftp://host/x.png", ImageLimits())


def test_fetch_over_http_checks_type_and_size():
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            body = b"<html>" if self.path == "/page" else _photo()
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if self.path == "/page" else "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        assert fetch_image(f"{base}/shoe.png", ImageLimits()) == _photo()
        with pytest.raises(ImageInputError, match="Content-Type 'text/html'"):
            fetch_image(f"{base}/page", ImageLimits())
        with pytest.raises(ImageInputError, match="over the limit of 100 bytes"):
            fetch_image(f"{base}/shoe.png", ImageLimits(max_bytes=100))
        with pytest.raises(ImageInputError, match="cannot fetch"):
            fetch_image("http://127.0.0.1:9/none.png", ImageLimits(timeout_s=2))
    finally:
        server.shutdown()


def test_synthetic_shop_is_deterministic_and_holds_out_combinations():
    items = shop_items()
    assert len(items) == 384 and len({i.item_id for i in items}) == 384
    held = {i.combo for i in items if i.held_out}
    assert held and not held & {i.combo for i in train_items()}
    for attr in ("colour", "shape", "pattern"):  # every value is still seen in training
        assert {getattr(i, attr) for i in train_items()} == {getattr(i, attr) for i in items}
    a, b = np.asarray(render(items[5])), np.asarray(render(items[5]))
    assert (a == b).all() and not (a == np.asarray(render(items[5], seed=3))).all()


def test_image_text_batches_hold_kinds_together_and_the_image_loss_pulls_a_kind_close():
    torch = pytest.importorskip("torch")
    from osreco.training.image_text import _batches, _image_image_loss, synthetic_pairs

    pairs = synthetic_pairs(train_items())
    batches = _batches(pairs, 64, 4, np.random.default_rng(0))
    assert batches and all(len(b) == 64 and len(set(b)) == 64 for b in batches)
    kinds = [[pairs[i].kind for i in b] for b in batches]
    with_sibling = sum(ks.count(x) > 1 for ks in kinds for x in ks)
    assert with_sibling / (64 * len(batches)) > 0.8
    batch = [pairs[i] for i in batches[0]]
    names = sorted({str(p.kind) for p in batch})
    torch.manual_seed(0)
    basis = torch.nn.functional.normalize(torch.randn(len(names), 16), dim=-1)
    aligned = torch.stack([basis[names.index(str(p.kind))] for p in batch])
    scrambled = aligned[torch.randperm(len(batch))]
    assert _image_image_loss(aligned, batch, 10.0) < _image_image_loss(scrambled, batch, 10.0)
