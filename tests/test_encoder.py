"""The runtime Encoder on the packaged all-MiniLM-L6-v2 bundles (fp32 and int8)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from osreco.exporter import ConfigError, Encoder
from osreco.exporter.validate import LONG_TEXT

TEXTS = ["red running shoes", "", "😀🎬🍿", "像玩具总动员那样适合孩子的电影",
         "A heartwarming animated film about toys that come to life.", LONG_TEXT, "x"]


@pytest.fixture(scope="module")
def minilm(minilm_bundle):
    return Encoder(minilm_bundle, threads=2, device="cpu")


def test_matches_sentence_transformers(minilm, minilm_dir):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    st = SentenceTransformer(str(minilm_dir), device="cpu")
    ref = st.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=False)
    got = minilm.encode_items(TEXTS)
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_manifest_properties(minilm):
    assert (minilm.dim, minilm.manifest.pooling, minilm.manifest.normalize) == (384, "mean", True)
    assert minilm.manifest.max_length == 256 and minilm.manifest.model_name == "all-MiniLM-L6-v2"
    assert minilm.artifact_id.startswith("sha256:") and minilm.device == "cpu"


def test_encode_items_keeps_input_order_across_buckets(minilm):
    batched = minilm.encode_items(TEXTS * 3, batch_size=4)
    one_by_one = np.stack([minilm.encode_items([t])[0] for t in TEXTS])
    assert batched.shape == (21, 384) and batched.dtype == np.float32
    assert np.abs(batched[:7] - one_by_one).max() < 1e-5
    assert np.abs(batched[14:] - one_by_one).max() < 1e-5


def test_naive_batching_gives_the_same_vectors(minilm):
    assert np.abs(minilm.encode_batches_naive(TEXTS, 3) - minilm.encode_items(TEXTS, 3)).max() < 1e-5


def test_long_text_is_truncated(minilm):
    assert np.abs(minilm.encode_items([LONG_TEXT]) - minilm.encode_items([LONG_TEXT + " extra words"])).max() == 0


def test_query_cache_returns_copies_and_evicts(minilm_bundle):
    enc = Encoder(minilm_bundle, threads=1, cache_size=2, verify=False)
    first = enc.encode_queries(["a", "b", "a"])
    assert np.array_equal(first[0], first[2])
    first[0] = 0
    assert enc.encode_queries(["a"])[0].any()
    assert enc.cache_info() == {"size": 2, "capacity": 2}
    enc.encode_queries(["c"])
    assert enc.cache_info()["size"] == 2
    assert np.abs(enc.encode_queries(["b"]) - enc.encode_items(["b"])).max() < 1e-5


def test_empty_inputs_and_bad_arguments(minilm):
    assert minilm.encode_items([]).shape == (0, 384)
    assert minilm.encode_queries([]).shape == (0, 384)
    with pytest.raises(ConfigError, match="list of texts"):
        minilm.encode_items("just a string")
    with pytest.raises(ConfigError, match="text #1"):
        minilm.encode_items(["ok", 3])
    with pytest.raises(ConfigError, match="batch_size"):
        minilm.encode_items(["ok"], batch_size=0)
    with pytest.raises(ConfigError, match="not classification"):
        minilm.score_pairs([("a", "b")])


def test_bad_encoder_arguments(tiny_bundle):
    with pytest.raises(ConfigError):
        Encoder(tiny_bundle, device="tpu")
    with pytest.raises(ConfigError):
        Encoder(tiny_bundle, threads=0)


def test_int8_bundle_parity_and_agreement(minilm_int8_bundle, minilm):
    int8 = Encoder(minilm_int8_bundle, threads=2, device="cpu")
    m = int8.manifest
    assert m.precision == "int8"
    assert m.parity["min_cosine"] >= 0.99 and m.parity["top10_overlap"] >= 0.9
    assert m.parity["quantization"]["isa"] in ("avx512_vnni", "avx2", "other")
    cos = (int8.encode_items(TEXTS) * minilm.encode_items(TEXTS)).sum(1)
    assert cos.min() >= 0.99


def test_runtime_import_loads_no_torch(minilm_bundle):
    code = ("import sys; from osreco.exporter import Encoder; "
            f"e = Encoder({str(minilm_bundle)!r}, threads=1); e.encode_queries(['hi']); "
            "bad = [m for m in ('torch', 'transformers', 'optimum') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
