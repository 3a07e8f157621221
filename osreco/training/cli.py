"""Click commands for training (`osreco train encoder|reranker|events`); `osreco promote` is in
``osreco/evaluation/gate_cli.py``.

Nothing heavy is imported here: torch and transformers load inside the training functions,
when a command runs (this module is imported by the ``osreco`` CLI at start-up). Errors reach
the one handler of ``osreco.cli_errors`` (exit 2 bad input, 3 environment).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

from osreco.cli_errors import group


def _default_base() -> Path:
    """The packaged all-MiniLM-L6-v2 (no download)."""
    from osreco.training.loop import packaged_minilm

    return packaged_minilm()


def _load(events: str | None, catalog: str | None, max_users: int | None):
    """(events, catalog): from files, or MovieLens-derived when --events is not given."""
    from osreco.training import data as td

    cat = td.read_training_items(catalog) if catalog else td.movielens_catalog()
    if events:
        return list(td.read_events(events)), cat
    return td.movielens_events(td.MovieLensConfig(max_users=max_users), catalog=cat), cat


def _loop_options(f: Callable) -> Callable:
    """The options every trainer shares."""
    options = [
        click.option("--events", type=click.Path(dir_okay=False), default=None,
                     help="Events JSONL (user_id, item_id, kind, value, timestamp, query?). "
                          "Default: feedback derived from MovieLens-100k ratings."),
        click.option("--catalog", type=click.Path(dir_okay=False), default=None,
                     help="Catalog JSONL (item_id, title, text). Default: MovieLens-100k items."),
        click.option("--base", type=click.Path(file_okay=False), default=None,
                     help="Hugging Face model folder to start from (default: packaged all-MiniLM-L6-v2)."),
        click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
                     help="Output model folder (replaced atomically)."),
        click.option("--epochs", type=int, default=1, show_default=True),
        click.option("--batch-size", type=int, default=32, show_default=True),
        click.option("--lr", type=float, default=None, help="Peak learning rate (encoder 2e-5, reranker 3e-5)."),
        click.option("--max-steps", type=int, default=None, help="Stop after this many steps."),
        click.option("--max-length", type=int, default=None, help="Token limit."),
        click.option("--dev-fraction", type=float, default=0.1, show_default=True,
                     help="Share of users held out as the dev split."),
        click.option("--max-users", type=int, default=None, help="MovieLens-derived data: cap on users."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
        click.option("--threads", type=int, default=None, help="torch CPU threads."),
        click.option("--seed", type=int, default=13, show_default=True),
        click.option("--json", "as_json", is_flag=True, help="Print a JSON summary."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _loop(kw: dict, default_lr: float):
    """LoopConfig from the shared options."""
    from osreco.training.loop import LoopConfig

    return LoopConfig(epochs=kw["epochs"], batch_size=kw["batch_size"], lr=kw["lr"] or default_lr,
                      max_steps=kw["max_steps"], device=kw["device"], threads=kw["threads"],
                      seed=kw["seed"], progress=not kw["as_json"] and sys.stderr.isatty())


def _report(summary: dict, as_json: bool) -> None:
    """Print the summary: JSON, or the last epoch's numbers as a short table."""
    if as_json:
        click.echo(json.dumps(summary, default=str))
        return
    click.echo(f"wrote {summary['out_dir']} ({summary['device']}); metrics in "
               f"{summary['out_dir']}/training/metrics.{{csv,json,png}}")
    for row in summary["history"]:
        click.echo("  " + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in row.items()))


@group()
def train() -> None:
    """Fine-tune the encoder and the reranker on user feedback."""


@train.command("encoder")
@_loop_options
@click.option("--no-next-items", is_flag=True, help="Only query -> item pairs.")
@click.option("--no-queries", is_flag=True, help="Only item -> next item pairs.")
@click.option("--max-next-per-user", type=int, default=20, show_default=True,
              help="Cap on item -> next item pairs per user (the most recent are kept).")
def train_encoder_cmd(no_next_items: bool, no_queries: bool, max_next_per_user: int, **kw) -> None:
    """Fine-tune a bi-encoder with in-batch negatives on query->item and item->next-item pairs.

    Example: osreco train encoder --events events.jsonl --catalog items.jsonl -o models/ft
    """
    from osreco.training.encoder import EncoderTrainConfig, PairConfig, build_pairs, split_pairs, train_encoder

    events, catalog = _load(kw["events"], kw["catalog"], kw["max_users"])
    pairs = build_pairs(events, catalog, PairConfig(queries=not no_queries, next_items=not no_next_items,
                                                  max_next_per_user=max_next_per_user))
    train_set, dev = split_pairs(pairs, kw["dev_fraction"], kw["seed"])
    config = EncoderTrainConfig(Path(kw["base"]) if kw["base"] else _default_base(), Path(kw["out"]),
                                _loop(kw, 2e-5), max_length=kw["max_length"] or 64)
    result = train_encoder(config, train_set, dev)
    _report({"out_dir": str(result.out_dir), "device": result.device, "train_pairs": result.train_pairs,
             "dev_pairs": result.dev_pairs, "history": result.history}, kw["as_json"])


@train.command("reranker")
@_loop_options
@click.option("--sampled-negatives", type=int, default=1, show_default=True,
              help="Random catalog items added as negatives per positive.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False), default=None,
              help="Also export the reranker to this bundle folder (validated).")
@click.option("--quantize", type=click.Choice(["int8", "none"]), default="int8", show_default=True,
              help="Precision of the exported bundle.")
def train_reranker_cmd(sampled_negatives: int, export_dir: str | None, quantize: str, **kw) -> None:
    """Train a cross-encoder (BertForSequenceClassification, 1 logit) on (query, item) feedback.

    Example: osreco train reranker --events events.jsonl -o models/rr --export bundles/rr-int8
    """
    from osreco.training.encoder import split_pairs
    from osreco.training.reranker import RerankTrainConfig, build_rerank_examples, export_reranker, train_reranker

    events, catalog = _load(kw["events"], kw["catalog"], kw["max_users"])
    examples = build_rerank_examples(events, catalog, sampled_negatives, kw["seed"])
    train_set, dev = split_pairs(examples, kw["dev_fraction"], kw["seed"])
    config = RerankTrainConfig(Path(kw["base"]) if kw["base"] else _default_base(), Path(kw["out"]),
                               _loop(kw, 3e-5), max_length=kw["max_length"] or 96)
    result = train_reranker(config, train_set, dev)
    summary = {"out_dir": str(result.out_dir), "device": result.device,
               "train_examples": result.train_examples, "dev_examples": result.dev_examples,
               "history": result.history}
    if export_dir:
        say = None if kw["as_json"] else click.echo
        manifest = export_reranker(result.out_dir, export_dir, None if quantize == "none" else quantize,
                                   overwrite=True, report=say)
        summary["bundle"] = {"dir": export_dir, "artifact_id": manifest.artifact_id,
                             "precision": manifest.precision}
    _report(summary, kw["as_json"])


@train.command("events")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Events JSONL to write.")
@click.option("--max-users", type=int, default=None, help="Cap on users (default: all 943).")
@click.option("--queries-per-user", type=int, default=8, show_default=True)
@click.option("--seed", type=int, default=13, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def train_events_cmd(out: str, max_users: int | None, queries_per_user: int, seed: int, as_json: bool) -> None:
    """Write feedback events derived from MovieLens-100k (ratings, template-query clicks, skips).

    Each user's newest 20 % of ratings is left out, exactly as `osreco eval` holds it out.
    """
    from collections import Counter

    from osreco.training import data as td

    events = td.movielens_events(td.MovieLensConfig(max_users=max_users, queries_per_user=queries_per_user,
                                                    seed=seed))
    td.write_jsonl(events, out)
    kinds = dict(Counter(e["kind"] for e in events))
    click.echo(json.dumps({"out": out, "events": len(events), "kinds": kinds}) if as_json
               else f"wrote {len(events)} events to {out}: {kinds}")


@train.command("image-text")
@click.option("--catalog", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Catalog JSONL with item_id, title, text and an image column (default: the synthetic shop's "
                   "training items).")
@click.option("--image-field", default="image", show_default=True, help="Column with the image path or URL.")
@click.option("--base", type=click.Path(exists=True, file_okay=False), default=None,
              help="CLIP / SigLIP / VisionTextDualEncoder folder to fine-tune (default: a tiny CLIP from scratch).")
@click.option("--tokenizer", type=click.Path(exists=True, file_okay=False), default=None,
              help="Tokenizer folder of the tiny CLIP (default: the packaged MiniLM's).")
@click.option("--freeze-text", is_flag=True, help="Keep the (pretrained) text tower frozen.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: model/ (Hugging Face) and bundle/ (osreco, both towers).")
@click.option("--epochs", type=click.IntRange(1, 1000), default=40, show_default=True)
@click.option("--batch-size", type=click.IntRange(2, 4096), default=64, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=2, show_default=True)
def train_image_text_cmd(catalog: str | None, image_field: str, base: str | None, tokenizer: str | None,
                         freeze_text: bool, out: str, epochs: int, batch_size: int, lr: float, threads: int) -> None:
    """Contrastive image–text training (in-batch negatives) on a catalog's (image, title/text) pairs,
    exported through the exporter into one parity-checked two-tower bundle.

    Example: osreco train image-text --base models/clip-vit-b32 --catalog shop.jsonl --freeze-text -o out/clip
    """
    from osreco.training.image_text import ImageTextConfig, catalog_pairs, synthetic_pairs, train_image_text

    if catalog:
        pairs = catalog_pairs(catalog, image_field)
    else:
        from osreco.ingest.synthetic_shop import train_items

        pairs = synthetic_pairs(train_items())
    if base is None and tokenizer is None:
        tokenizer = str(_default_base())
    config = ImageTextConfig(epochs=epochs, batch_size=min(batch_size, len(pairs)), lr=lr, freeze_text=freeze_text,
                             threads=threads)
    bundle = train_image_text(pairs, out, base=base, tokenizer_dir=tokenizer, config=config, report=click.echo)
    click.echo(f"bundle: {bundle}")


commands: list[click.Command] = [train]
