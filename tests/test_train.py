"""Training pairs, the bi-encoder fine-tuning loop, curves and the `osreco train` CLI (tiny BERT, CPU)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from osreco.exporter.errors import ConfigError
from osreco.ingest.catalog import read_catalog
from osreco.training.curves import tensorboard_available, write_curves
from osreco.training.data import (
    TRAINING_FIELDS,
    MovieLensConfig,
    TrainingDataError,
    TrainingItem,
    movielens_catalog,
    movielens_events,
    query_matches,
    read_events,
    read_training_items,
    write_jsonl,
)
from osreco.training.encoder import Pair, PairConfig, build_pairs, split_pairs

CATALOG = {
    "a": TrainingItem("a", "Alpha", "Alpha. comedy. 1995", ("comedy",), 1995),
    "b": TrainingItem("b", "Beta", "space opera", ("sci-fi",), 1982),
    "c": TrainingItem("c", "Gamma", "", ("drama",), 1990),
}


def ev(user, item, kind, ts, value=1.0, query=None):
    row = {"user_id": user, "item_id": item, "kind": kind, "value": value, "timestamp": ts}
    if query:
        row["query"] = query
    return row


def test_build_pairs_exact():
    events = [
        ev("u1", "a", "click", 1, query="funny film"),
        ev("u1", "a", "click", 2, query="funny film"),       # duplicate query pair: dropped
        ev("u1", "b", "rating", 3, value=5.0),
        ev("u1", "c", "rating", 4, value=2.0),               # low rating: not positive
        ev("u1", "a", "purchase", 5),
        ev("u2", "zzz", "click", 1),                          # unknown item: ignored
        ev("u2", "b", "skip", 2, value=0.0, query="space"),  # skip: not a pair
    ]
    pairs = build_pairs(events, CATALOG)
    assert pairs == [
        Pair("funny film", "Alpha. comedy. 1995", "query", "u1", "a"),
        Pair("Beta. space opera", "Alpha. comedy. 1995", "next_item", "u1", "a"),
    ]
    assert build_pairs(events, CATALOG, PairConfig(next_items=False)) == pairs[:1]


def test_catalog_document_text():
    assert CATALOG["a"].document == "Alpha. comedy. 1995"   # text already starts with the title
    assert CATALOG["b"].document == "Beta. space opera"
    assert CATALOG["c"].document == "Gamma"


def test_split_pairs_holds_out_whole_users():
    pairs = [Pair(f"q{i}", f"d{i}", "query", f"u{i % 20}", str(i)) for i in range(200)]
    train, dev = split_pairs(pairs, 0.25, seed=1)
    assert len(train) + len(dev) == 200 and dev
    assert not {p.user_id for p in train} & {p.user_id for p in dev}
    assert split_pairs(pairs, 0.25, seed=1) == (train, dev)
    with pytest.raises(ConfigError):
        split_pairs(pairs, 1.0)


def test_pair_config_rejects_nothing_to_do():
    with pytest.raises(ConfigError):
        PairConfig(queries=False, next_items=False)


def test_read_events_reports_the_bad_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(ev("u", "a", "click", 1)) + "\n\n{not json\n", encoding="utf-8")
    with pytest.raises(TrainingDataError) as e:
        list(read_events(path))
    assert e.value.line == 3 and "events.jsonl:3" in str(e.value)
    path.write_text(json.dumps(ev("u", "a", "teleport", 1)) + "\n", encoding="utf-8")
    with pytest.raises(TrainingDataError, match="unknown event kind"):
        list(read_events(path))
    with pytest.raises(TrainingDataError, match="not found"):
        list(read_events(tmp_path / "missing.jsonl"))


def test_read_training_items_reads_through_ingest(tmp_path):
    path = tmp_path / "items.jsonl"
    write_jsonl([{"item_id": 7, "title": "Seven", "text": "a thriller", "genres": ["Thriller"], "year": 1995}], path)
    items = read_training_items(path)
    assert items == {"7": TrainingItem("7", "Seven", "Seven. a thriller", ("thriller",), 1995)}
    expected = next(read_catalog(path, TRAINING_FIELDS))
    assert items["7"].document == expected.embed_text == "Seven. a thriller"  # trained text = indexed text
    write_jsonl([{"item_id": 8, "title": ""}], path)
    with pytest.raises(TrainingDataError) as e:
        read_training_items(path)
    assert e.value.line == 1 and "items.jsonl:1" in str(e.value)


def test_query_matches_genre_decade_and_negation():
    item = TrainingItem("1", "Toy Story", "", ("animation", "children's", "comedy"), 1995)
    assert query_matches("a 90s comedy", item)
    assert not query_matches("an 80s comedy", item)
    assert not query_matches("a horror movie", item)
    assert query_matches("comedy but not horror", item)
    assert not query_matches("drama without comedy", item)
    assert query_matches("90年代的喜剧", item) and not query_matches("不要喜剧的动画片", item)


def test_movielens_events_clicks_satisfy_and_skips_violate_the_query():
    catalog = movielens_catalog()
    assert len(catalog) == 1681
    events = movielens_events(MovieLensConfig(max_users=5, queries_per_user=3), catalog=catalog)
    clicks = [e for e in events if e["kind"] == "click"]
    skips = [e for e in events if e["kind"] == "skip"]
    assert len(clicks) == 15 and skips
    assert all(query_matches(e["query"], catalog[e["item_id"]]) for e in clicks)
    assert not any(query_matches(e["query"], catalog[e["item_id"]]) for e in skips)
    assert {e["user_id"] for e in events} == {"1", "2", "3", "4", "5"}


def test_write_curves(tmp_path):
    history = [{"epoch": 0, "step": 0, "dev_loss": 2.0, "dev_mrr": 0.25},
               {"epoch": 1, "step": 4, "train_loss": 1.5, "dev_loss": 1.0, "dev_mrr": 0.5}]
    files = write_curves(history, tmp_path, "m", "t")
    with files.csv.open() as fh:
        rows = list(csv.reader(fh))
    assert rows == [["epoch", "step", "dev_loss", "dev_mrr", "train_loss"],
                    ["0", "0", "2.0", "0.25", ""], ["1", "4", "1.0", "0.5", "1.5"]]
    assert json.loads(files.json.read_text()) == history
    assert files.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (files.tensorboard_dir is not None) == tensorboard_available()


def test_tensorboard_event_files_hold_every_scalar(tmp_path):
    """`make setup` installs tensorboard (the export extra): the event files must read back."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert tensorboard_available()
    history = [{"epoch": 0, "step": 0, "dev_loss": 2.0, "dev_mrr": 0.25},
               {"epoch": 1, "step": 4, "train_loss": 1.5, "dev_loss": 1.0, "dev_mrr": 0.5},
               {"epoch": 2, "step": 8, "train_loss": 0.75, "dev_loss": 0.5, "dev_mrr": 0.625}]
    files = write_curves(history, tmp_path, "metrics", "t")
    acc = EventAccumulator(str(files.tensorboard_dir))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"metrics/dev_loss", "metrics/dev_mrr", "metrics/train_loss"}
    assert [(e.step, e.value) for e in acc.Scalars("metrics/dev_mrr")] == [(0, 0.25), (1, 0.5), (2, 0.625)]
    assert [(e.step, e.value) for e in acc.Scalars("metrics/train_loss")] == [(1, 1.5), (2, 0.75)]


# --- training on MovieLens-derived pairs, tiny BERT ---------------------------------------------

@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory, minilm_dir):
    from osreco.training.loop import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert", minilm_dir, seed=0)


@pytest.fixture(scope="module")
def ml_pairs():
    catalog = movielens_catalog()
    events = movielens_events(MovieLensConfig(max_users=12, queries_per_user=4), catalog=catalog)
    return build_pairs(events, catalog, PairConfig(max_next_per_user=3))


def test_a_few_steps_lower_the_loss(tiny_encoder_dir, ml_pairs, tmp_path):
    import torch

    from osreco.training.encoder import EncoderTrainConfig, load_bi_encoder, pair_loss, train_encoder
    from osreco.training.loop import LoopConfig

    torch.set_num_threads(1)
    train, dev = split_pairs(ml_pairs, 0.2, seed=3)
    train = train[:32]
    probe = train[:16]

    def loss_of(model_dir):
        model, tok = load_bi_encoder(model_dir, "cpu")
        model.eval()
        with torch.no_grad():
            return float(pair_loss(model, tok, probe, 32, 20.0, "cpu"))

    config = EncoderTrainConfig(tiny_encoder_dir, tmp_path / "ft",
                                LoopConfig(epochs=3, batch_size=16, lr=2e-3, threads=1, progress=False, seed=3),
                                max_length=32, dev_max=32)
    result = train_encoder(config, train, dev)
    before, after = loss_of(tiny_encoder_dir), loss_of(result.out_dir)
    assert after < before - 0.05, (before, after)
    assert [row["epoch"] for row in result.history] == [0, 1, 2, 3]
    assert result.history[-1]["step"] == 6 and result.device == "cpu"
    assert {"dev_loss", "dev_mrr", "dev_acc1"} <= set(result.history[0])
    assert result.history[-1]["train_loss"] < result.history[1]["train_loss"]
    out = result.out_dir
    for name in ("config.json", "model.safetensors", "tokenizer.json", "modules.json", "1_Pooling/config.json",
                 "training/metrics.csv", "training/metrics.json", "training/metrics.png",
                 "training/training.json", "training/steps.csv", "training/steps.png"):
        assert (out / name).is_file(), name
    assert not list(tmp_path.glob(".ft.tmp-*"))
    steps = json.loads((out / "training" / "steps.json").read_text())
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5, 6]


def test_saved_model_loads_in_sentence_transformers_like_our_pooling(tiny_encoder_dir, ml_pairs, tmp_path):
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from osreco.training.encoder import EncoderTrainConfig, embed_texts, load_bi_encoder, train_encoder
    from osreco.training.loop import LoopConfig

    config = EncoderTrainConfig(tiny_encoder_dir, tmp_path / "ft",
                                LoopConfig(epochs=1, batch_size=8, lr=1e-3, max_steps=1, threads=1,
                                           progress=False), max_length=32, dev_max=8)
    out = train_encoder(config, ml_pairs[:16], ml_pairs[16:24]).out_dir
    texts = ["a 90s comedy", "Toy Story. animation, children's, comedy. 1995"]
    st = SentenceTransformer(str(out), device="cpu").encode(texts, normalize_embeddings=True)
    model, tok = load_bi_encoder(out, "cpu")
    model.eval()
    with torch.no_grad():
        ours = embed_texts(model, tok, texts, 128, "cpu").numpy()
    assert np.allclose(st, ours, atol=1e-5)


def test_too_few_pairs_is_a_config_error(tiny_encoder_dir, tmp_path):
    from osreco.training.encoder import EncoderTrainConfig, train_encoder

    with pytest.raises(ConfigError, match="at least 2"):
        train_encoder(EncoderTrainConfig(tiny_encoder_dir, tmp_path / "x"), [Pair("a", "b", "query", "u", "1")], [])


def test_cli_train_encoder(tiny_encoder_dir, tmp_path):
    from click.testing import CliRunner

    from osreco.cli import cli

    events = tmp_path / "events.jsonl"
    runner = CliRunner()
    res = runner.invoke(cli, ["train", "events", "-o", str(events), "--max-users", "6", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["events"] > 0
    res = runner.invoke(cli, ["train", "encoder", "--events", str(events), "--base", str(tiny_encoder_dir),
                              "-o", str(tmp_path / "ft"), "--max-steps", "2", "--batch-size", "8",
                              "--threads", "1", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["history"][-1]["step"] == 2 and summary["train_pairs"] > 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user_id": "u"}\n', encoding="utf-8")
    res = runner.invoke(cli, ["train", "encoder", "--events", str(bad), "--base", str(tiny_encoder_dir),
                              "-o", str(tmp_path / "ft2")])
    assert res.exit_code == 2 and "bad.jsonl:1" in res.output


def test_train_cli_and_rerank_import_no_torch():
    code = ("import sys, osreco.cli, osreco.training.reranker, osreco.training.cli; "
            "print([m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
