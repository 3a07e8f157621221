"""Click commands for collaborative filtering and user privacy (`osreco cf`, `osreco users`).

    osreco cf train clicks.csv --index movies --model-dir models/cf
    osreco cf train --from-events --index movies
    osreco cf import spark/item-factors spark/user-factors --index movies --model-dir models/cf
    osreco users forget alice --index movies
    osreco users expire --index movies --days 365

Exit codes (``osreco.errors``): 0 ok, 1 some rows were rejected or writes failed, 2 bad input or
settings, 3 OpenSearch unreachable or failing. Errors reach the one handler of ``osreco.cli_errors``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from tqdm import tqdm

from osreco.cf.interactions import (
    Interaction,
    InteractionSet,
    ReadConfig,
    collect_interactions,
    read_interactions,
)
from osreco.cli_errors import group
from osreco.errors import EXIT_FAILURES, EXIT_OK
from osreco.ingest.errors import ConfigError

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from osreco.cf.model import CFConfig
    from osreco.cf.privacy import PrivacyConfig
    from osreco.cf.store import StoreConfig


def _client() -> OpenSearch:
    from osreco.ingest.connection import OpenSearchConfig, connect

    return connect(OpenSearchConfig.from_env())


@group()
def cf() -> None:
    """Train, store and evaluate collaborative-filtering models (ALS, EASE, popularity)."""


@cf.command()
@click.argument("interactions", required=False, type=click.Path(dir_okay=False))
@click.option("--index", "index", required=True, help="Item index (or alias) that gets cf_vector.")
@click.option("--prefix", default=None, help="Prefix of the users/events/cf-meta indexes (default: --index).")
@click.option("--from-events", is_flag=True, help="Train from the <prefix>-events index instead of a file.")
@click.option("--model-dir", type=click.Path(file_okay=False), default=None,
              help="Also save the model here (npz + json) for the sidecar.")
@click.option("--factors", type=int, default=None, help="ALS factors (default: the index's cf_dim).")
@click.option("--iterations", type=int, default=15, show_default=True, help="ALS sweeps.")
@click.option("--regularization", type=float, default=None, help="ALS L2 weight (default 20).")
@click.option("--ease-lambda", type=float, default=None, help="EASE L2 weight (default 300).")
@click.option("--neighbors", type=click.IntRange(0, 1000), default=50, show_default=True,
              help="Co-engagement neighbours stored per item (cf_neighbors); 0 stores none.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def train(interactions: str | None, index: str, prefix: str | None, from_events: bool, model_dir: str | None,
          factors: int | None, iterations: int, regularization: float | None, ease_lambda: float | None,
          neighbors: int, as_json: bool) -> None:
    """Train ALS, EASE (or co-occurrence) and popularity; store factors, users and metadata.

    INTERACTIONS is a CSV/TSV/JSONL/.inter file of user_id,item_id,value,timestamp rows.
    User ids are pseudonymized with OSRECO_HMAC_KEY before anything is stored.
    """
    from osreco.cf import store as cf_store
    from osreco.cf.model import CFConfig
    from osreco.cf.privacy import PrivacyConfig

    if bool(interactions) == from_events:
        raise ConfigError("give either INTERACTIONS or --from-events", field="interactions")
    privacy = PrivacyConfig.from_env()
    store = cf_store.StoreConfig(prefix=prefix or index, item_index=index)
    client = _client()
    cf_dim = cf_store.item_cf_dim(client, index)
    if cf_dim is None:
        raise ConfigError(f"item index {index!r} has no cf_vector knn field", field="cf_vector",
                          fix="create it with IndexSpec (cf_dim set) before training")
    config = _config(CFConfig(), factors or cf_dim, iterations, regularization, ease_lambda)
    summary = _train_and_store(client, store, privacy, config, interactions, model_dir, neighbors)
    _print_summary(summary, as_json)
    sys.exit(EXIT_FAILURES if summary["rejected_rows"] or summary["write_failures"] else EXIT_OK)


def _config(base: CFConfig, factors: int, iterations: int, regularization: float | None,
            ease_lambda: float | None) -> CFConfig:
    """``base`` with the command's settings; a weight left unset keeps ``base``'s."""
    return replace(base, factors=factors, iterations=iterations,
                   regularization=base.regularization if regularization is None else regularization,
                   ease_lambda=base.ease_lambda if ease_lambda is None else ease_lambda)


def _train_and_store(client: OpenSearch, store: StoreConfig, privacy: PrivacyConfig, config: CFConfig,
                     path: str | None, model_dir: str | None, neighbors: int = 50) -> dict[str, Any]:
    """Read, train, fill cold items from content, write everything; returns the summary."""
    from osreco.cf import store as cf_store
    from osreco.cf.forget import drop_forgotten, forgotten_keys
    from osreco.cf.priors import priors_from_model, write_priors
    from osreco.cf.train import train_models

    known = cf_store.indexed_item_ids(client, store.item_index)
    data = _read(client, store, privacy, path, known)
    # A tombstone (``osreco users forget``) keeps a forgotten user out of every retrain.
    data.interactions, forgotten_dropped = drop_forgotten(data.interactions, forgotten_keys(client, store.prefix))
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = tqdm(total=total, desc=f"train {stage}", unit="step", file=sys.stderr)
        bar = bars[stage]
        bar.n = done
        bar.refresh()

    model = train_models(data.interactions, config, item_ids=sorted(known), progress=progress)
    embeddings = cf_store.read_item_embeddings(client, store.item_index)
    cold = model.fit_content(embeddings) if embeddings else []
    if not embeddings:
        click.echo("warning: the item index holds no embeddings: items without interactions keep a zero "
                   "cf_vector (ingest with an encoder to predict them from content)", err=True)
    for bar in bars.values():
        bar.close()
    with tqdm(total=len(model.item_ids), desc="write cf_vector", unit="item", file=sys.stderr) as bar:
        items = cf_store.write_item_factors(client, store, model.item_ids.tolist(), model.item_factors, bar.update)
    priors = priors_from_model(model, data.interactions, neighbors)
    with tqdm(total=len(model.item_ids), desc="write priors", unit="item", file=sys.stderr) as bar:
        prior_report = write_priors(client, store.item_index, priors, store.chunk_size, bar.update)
    histories = _histories(data.interactions)
    with tqdm(total=len(model.user_keys), desc="write users", unit="user", file=sys.stderr) as bar:
        users = cf_store.write_user_vectors(client, store, model.user_keys.tolist(), model.user_factors,
                                            histories, bar.update)
    meta = {**model.meta, "model": "als+ease+popularity", "params": _params(config),
            "items_indexed": len(known), "items_from_content": len(cold), "source": data.report.source,
            "popularity_ref": priors.ref, "popularity_half_life_days": priors.half_life_days,
            "neighbors": neighbors, "rating_avg": priors.rating_avg is not None,
            "interactions_forgotten": forgotten_dropped,
            "model_dir": str(Path(model_dir).resolve()) if model_dir else None}
    run_id = cf_store.write_meta(client, store, meta)
    if model_dir:
        model.meta = {**meta, "run_id": run_id}
        model.save(model_dir)
    return {"run_id": run_id, "read": data.report.as_dict(), "meta": meta, "items": items.as_dict(),
            "users": users.as_dict(), "priors": prior_report.as_dict(), "rejected_rows": len(data.report.rejected),
            "write_failures": len(items.failed) + len(users.failed) + len(prior_report.failed),
            "model_dir": model_dir}


def _read(client: OpenSearch, store: StoreConfig, privacy: PrivacyConfig, path: str | None,
          known: set[str]) -> InteractionSet:
    from osreco.cf.events import read_interactions_from_events

    read_config = ReadConfig(known_items=frozenset(known))
    if path:
        data = read_interactions(path, read_config)
    else:
        rows = ((n, {"user_id": e.user_id, "item_id": e.item_id, "value": e.value, "timestamp": e.timestamp})
                for n, e in enumerate(read_interactions_from_events(client, store.prefix), start=1))
        data = collect_interactions(rows, read_config, source=store.events_index)
    data.interactions = [Interaction(privacy.pseudonymize(e.user_id), e.item_id, e.value, e.timestamp)
                         for e in data.interactions]
    return data


def _histories(interactions: list[Interaction]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in sorted(interactions, key=lambda e: e.timestamp):
        out.setdefault(e.user_id, []).append(e.item_id)
    return out


def _params(config: CFConfig) -> dict[str, object]:
    from dataclasses import asdict

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, default=str))
        return
    read, meta, items = summary["read"], summary["meta"], summary["items"]
    click.echo(f"read {read['rows']} rows: kept {read['kept']}, duplicates {read['duplicates']}, "
               f"unknown items {read['unknown_items']}, rejected {len(read['rejected'])}")
    for rej in read["rejected"][:5]:
        click.echo(f"  rejected: {rej['error']}")
    if meta.get("interactions_forgotten"):
        click.echo(f"dropped {meta['interactions_forgotten']} interactions of forgotten users (tombstones)")
    click.echo(f"trained {', '.join(meta['models'])} on {meta['interactions']} interactions, {meta['users']} users, "
               f"{meta['items_with_interactions']}/{meta['items_indexed']} items "
               f"(coverage {meta['item_coverage']:.1%}) in {meta['train_seconds']} s")
    click.echo(f"cf_vector written to {items['written']} items ({meta['items_from_content']} from content, "
               f"{items['missing']} missing, {items['failed']} failed); users: {summary['users']['written']}; "
               f"metadata run {summary['run_id']}" + (f"; model saved to {summary['model_dir']}"
                                                     if summary["model_dir"] else ""))


@cf.command("import")
@click.argument("item_factors", type=click.Path())
@click.argument("user_factors", type=click.Path())
@click.option("--index", "index", required=True, help="Item index (or alias) that gets cf_vector.")
@click.option("--prefix", default=None, help="Prefix of the users/cf-meta indexes (default: --index).")
@click.option("--model-dir", type=click.Path(file_okay=False), required=True,
              help="Folder for the served model (the sidecar's OSRECO_CF_MODEL).")
@click.option("--alpha", type=float, default=1.0, show_default=True,
              help="Spark ALS implicit-feedback alpha (confidence scale; used by fold-in).")
@click.option("--regularization", type=float, default=0.1, show_default=True,
              help="Spark ALS regParam (the fold-in's L2 weight).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def import_spark(item_factors: str, user_factors: str, index: str, prefix: str | None, model_dir: str,
                 alpha: float, regularization: float, as_json: bool) -> None:
    """Import Spark MLlib ALS factors (Parquet: id int, features array<float>) as the served CF model.

    ITEM_FACTORS and USER_FACTORS are the folders (or single files) that
    ``model.itemFactors.write.parquet(...)`` and ``model.userFactors.write.parquet(...)`` wrote.
    User ids are pseudonymized with OSRECO_HMAC_KEY like `osreco cf train`; item ids must be the
    catalog's ids (ids not in the catalog are counted and skipped; exit 1 when there were any).

    Example: osreco cf import als/items als/users --index movies --model-dir models/cf
    """
    from osreco.cf import store as cf_store
    from osreco.cf.forget import forgotten_keys
    from osreco.cf.model import CFConfig
    from osreco.cf.privacy import PrivacyConfig
    from osreco.cf.spark_import import build_model, read_factor_table

    privacy = PrivacyConfig.from_env()
    items_table = read_factor_table(item_factors, "item")
    users_table = read_factor_table(user_factors, "user")
    store = cf_store.StoreConfig(prefix=prefix or index, item_index=index)
    client = _client()
    cf_dim = cf_store.item_cf_dim(client, index)
    if cf_dim != items_table.dim:
        raise ConfigError(f"item index {index!r} has cf_vector dim {cf_dim}, the Spark factors have "
                          f"{items_table.dim}", field="cf_vector",
                          fix="create the index with IndexSpec(cf_dim=<Spark ALS rank>) or retrain Spark ALS "
                              f"with rank {cf_dim}")
    config = CFConfig(factors=items_table.dim, weighting="alpha", alpha=alpha, regularization=regularization,
                      blend=(1.0, 0.0, 0.0))
    model, report = build_model(items_table, users_table, privacy, cf_store.indexed_item_ids(client, index), config)
    forgotten = forgotten_keys(client, store.prefix)
    if forgotten:  # a tombstone (`osreco users forget`) keeps a forgotten user out of every model
        model = model.without_user(*forgotten)
    embeddings = cf_store.read_item_embeddings(client, index)
    cold = model.fit_content(embeddings) if embeddings else []
    items = cf_store.write_item_factors(client, store, model.item_ids.tolist(), model.item_factors)
    users = cf_store.write_user_vectors(client, store, model.user_keys.tolist(), model.user_factors)
    meta = {**model.meta, "model": "spark-als", "params": _params(config), "items_indexed": report.catalog_items,
            "items_from_content": len(cold), "import": report.as_dict(),
            "model_dir": str(Path(model_dir).resolve())}
    run_id = cf_store.write_meta(client, store, meta)
    model.meta = {**meta, "run_id": run_id}
    model.save(model_dir)
    summary = {"run_id": run_id, **report.as_dict(), "items_from_content": len(cold),
               "users_forgotten": report.users - len(model.user_keys),
               "items": items.as_dict(), "users_written": users.as_dict(), "model_dir": model_dir}
    failures = len(items.failed) + len(users.failed)
    if as_json:
        click.echo(json.dumps(summary, default=str))
    else:
        click.echo(f"imported {report.items_kept}/{report.items_read} Spark items ({report.dim} factors), "
                   f"{report.users} users; {len(report.items_not_in_catalog)} item ids not in the catalog"
                   + (f" (e.g. {', '.join(report.items_not_in_catalog[:5])})" if report.items_not_in_catalog else "")
                   + f"; {len(cold)} catalog items predicted from content; model saved to {model_dir} "
                   f"(run {run_id})")
    sys.exit(EXIT_FAILURES if report.items_not_in_catalog or failures else EXIT_OK)


@group()
def users() -> None:
    """Privacy operations on stored users and events."""


@users.command()
@click.argument("user")
@click.option("--index", "prefix", required=True, help="Prefix of the osreco indexes (usually the item index).")
@click.option("--model-dir", type=click.Path(file_okay=False), default=None,
              help="Saved CF model to rewrite without the user (default: the folder the latest "
                   "`osreco cf train` recorded).")
@click.option("--skip-model", is_flag=True,
              help="Do not rewrite a saved CF model: only the tombstone keeps the served model from using the user.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object of what was removed.")
def forget(user: str, prefix: str, model_dir: str | None, skip_model: bool, as_json: bool) -> None:
    """Forget USER (the raw id): events, stored vector and history in every <prefix>-* index, a
    tombstone in <prefix>-forgotten, and the user's vector in the saved CF model."""
    from osreco.cf.forget import forget as forget_user
    from osreco.cf.privacy import PrivacyConfig, is_pseudonym

    if is_pseudonym(user):
        raise click.BadParameter("looks like a pseudonym (u_ + 64 hex); pass the raw user id", param_hint="USER")
    if model_dir and skip_model:
        raise click.UsageError("give --model-dir or --skip-model, not both")
    privacy = PrivacyConfig.from_env()
    client = _client()
    if not skip_model and not model_dir:
        model_dir = os.environ.get("OSRECO_CF_MODEL") or None  # the sidecar's served model folder
    folder = None if skip_model else (model_dir or _recorded_model_dir(client, prefix))
    report = forget_user(client, prefix, user, privacy, model_dir=folder)
    out = report.as_dict()
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"forgot {report.user_key}: deleted {report.total} documents "
               f"({', '.join(f'{k}: {v}' for k, v in report.deleted.items()) or 'none found'}); "
               f"tombstone in {report.tombstone}")
    if report.model:
        click.echo(f"CF model {report.model.model_dir}: " + ("user removed" if report.model.removed
                                                             else "user was not in it") +
                   f" ({report.model.users_after} users)")
    elif skip_model:
        click.echo("saved CF model not rewritten (--skip-model): the tombstone keeps sidecars from using the user")


def _recorded_model_dir(client: OpenSearch, prefix: str) -> str | None:
    """The model folder the latest training recorded, checked to be rewritable; ``None`` before
    the first training.

    Raises:
        InteractionError: a folder is recorded but holds no model this process can rewrite, or
            the training metadata records no folder (an older training, or a model served from
            elsewhere): forgetting then would silently leave the user in the saved model.
    """
    from osreco.cf.errors import InteractionError
    from osreco.cf.forget import check_model_dir
    from osreco.cf.store import StoreConfig, read_meta

    meta = read_meta(client, StoreConfig(prefix=prefix, item_index=prefix))
    if meta is None:
        return None
    recorded = meta.get("model_dir")
    if not recorded:
        raise InteractionError(f"the latest training (run {meta.get('run_id')}) recorded no CF model folder, so "
                               "this command cannot tell which saved model holds the user; nothing was forgotten",
                               field="model_dir",
                               fix="pass --model-dir PATH (where the served model is), or --skip-model to rely "
                                   "on the tombstone alone")
    try:
        check_model_dir(str(recorded))
    except InteractionError as e:
        raise InteractionError(f"the latest training (run {meta.get('run_id')}) saved the CF model in {recorded}, "
                               f"which this command cannot rewrite: {e.message}; nothing was forgotten",
                               file=str(recorded),
                               fix="pass --model-dir PATH (where the served model is), or --skip-model to rely "
                                   "on the tombstone alone") from e
    return str(recorded)


@users.command()
@click.option("--index", "prefix", required=True, help="Prefix of the osreco indexes (usually the item index).")
@click.option("--days", type=float, required=True, help="Retention window: events older than this are deleted.")
@click.option("--future-s", type=float, default=300.0, show_default=True,
              help="Events dated more than this many seconds after now are deleted too.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def expire(prefix: str, days: float, future_s: float, as_json: bool) -> None:
    """Delete events older than the retention window, and future-dated ones (run it daily, e.g. from cron)."""
    from osreco.cf.events import expire_events

    deleted = expire_events(_client(), prefix, days, future_s=future_s)
    click.echo(json.dumps({"deleted": deleted}) if as_json else
               f"expired {deleted} events older than {days:g} days or dated over {future_s:g} s ahead")


commands: list[click.Command] = [cf, users]
