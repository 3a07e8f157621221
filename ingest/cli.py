"""Click commands that osreco.ingest contributes to the `osreco` command line.

    osreco ingest CATALOG|fixture:NAME --bundle B --index NAME [--schema schema.json | field flags]
                  [--rebuild] [--sync] [--dead-letter PATH] [--checkpoint PATH] [--json]
    osreco ingest pipeline install [--name osreco-items] [--model-id ID] [--default-for INDEX]

Exit codes (``osreco.errors``): 0 every row indexed or unchanged, 1 some rows were
dead-lettered, 2 bad usage or input (schema, catalog, bundle, index built for another bundle),
3 environment (node, files). Errors reach the one handler of ``osreco.cli_errors``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click

from osreco.cli_errors import Group
from osreco.errors import EXIT_FAILURES, EXIT_OK, OsrecoError
from osreco.ingest.audio import ItemAudioLimits
from osreco.ingest.catalog import FieldMap, count_rows, read_catalog
from osreco.ingest.checkpoint import catalog_fingerprint
from osreco.ingest.errors import ConfigError, IngestError
from osreco.ingest.fixtures import ECOMMERCE_FIELDS, ecommerce_catalog_path, read_ecommerce_items
from osreco.ingest.images import ImageLimits
from osreco.ingest.index_spec import DEFAULT_FACETS, IndexSpec
from osreco.ingest.movielens import MOVIELENS_FIELDS, movielens_items_path, read_movielens_items
from osreco.ingest.pipeline import DEFAULT_PIPELINE, install_pipeline, pipeline_body
from osreco.ingest.writer import IngestReport, WriteConfig

FIXTURES = {"movielens": (movielens_items_path, read_movielens_items, MOVIELENS_FIELDS, "atomic"),
            "ecommerce": (ecommerce_catalog_path, read_ecommerce_items, ECOMMERCE_FIELDS, "jsonl")}


class _IngestGroup(Group):
    """``osreco ingest CATALOG ...`` loads a catalog; ``osreco ingest pipeline ...`` is a subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["load", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_IngestGroup)
def ingest() -> None:
    """Load catalogs into OpenSearch k-NN indexes (`osreco ingest CATALOG --bundle B --index NAME`).

    CATALOG is a JSONL, CSV, Parquet or recbole .item file, or `fixture:movielens` /
    `fixture:ecommerce`. Run `osreco ingest load --help` for every option of a load.
    """


@dataclass(frozen=True)
class LoadOptions:
    """Everything `osreco ingest CATALOG` was asked to do (validated by its parts)."""

    catalog: Path
    fixture: str | None
    bundle: Path
    index: str
    fields: FieldMap
    fmt: str | None
    write: WriteConfig
    rebuild: bool
    forcemerge: bool
    warmup: bool
    spec_overrides: dict[str, object]
    threads: int | None
    device: str
    url: str | None
    image_bundle: Path | None = None
    image_limits: ImageLimits | None = None
    named_bundles: dict[str, Path] = field(default_factory=dict)
    asr_model: Path | None = None
    audio_limits: ItemAudioLimits | None = None


def _pair(value: str) -> tuple[str, str]:
    name, _, column = value.partition("=")
    return name.strip(), (column or name).strip()


def field_map_from_flags(flags: Mapping[str, Any]) -> FieldMap:
    """Build a FieldMap from ``FIELD[=COLUMN]`` flags (numerics: ``FIELD[=COLUMN][:float|integer]``).

    Raises:
        ConfigError: an invalid combination (for example an unknown numeric type).
    """
    numeric = {}
    for value in flags["numerics"]:
        spec, _, kind = str(value).partition(":")
        name, column = _pair(spec)
        numeric[name] = (column, kind or ("integer" if name == "year" else "float"))
    return FieldMap(id=str(flags["id_field"]), title=str(flags["title_field"]),
                    text=tuple(flags["text_fields"] or ("text",)),
                    facets=dict(map(_pair, flags["facets"])), numeric=numeric,
                    dates=dict(map(_pair, flags["dates"])),
                    image=flags["image_field"] or None, audio=flags.get("audio_field") or None,
                    deleted=flags["deleted_field"] or None,
                    embed_fields=tuple(flags["embed"] or ("title", "text")),
                    list_separator=str(flags["list_separator"]))


@ingest.command("load")
@click.argument("catalog")
@click.option("--bundle", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Model bundle folder (model.onnx + tokenizer + manifest.json).")
@click.option("--bundle-zh", "bundle_zh", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Chinese encoder bundle (e.g. bge-small-zh-v1.5): items also get embedding_zh from it.")
@click.option("--index", "index", required=True, help="Alias that reads go through; versions are NAME-v<N>.")
@click.option("--schema", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON field map: {\"id\", \"title\", \"text\", \"facets\", \"numeric\", \"dates\", ...}.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet", "atomic"]), default=None,
              help="Catalog format (default: from the extension).")
@click.option("--id-field", default="item_id", show_default=True, help="Column with the item id.")
@click.option("--title-field", default="title", show_default=True, help="Column with the title.")
@click.option("--text-field", "text_fields", multiple=True, help="Column(s) joined into `text` (default: text).")
@click.option("--facet", "facets", multiple=True, help="FIELD[=COLUMN] keyword facet (repeatable).")
@click.option("--numeric", "numerics", multiple=True, help="FIELD[=COLUMN][:float|integer] (repeatable).")
@click.option("--date", "dates", multiple=True, help="FIELD[=COLUMN] date field (repeatable).")
@click.option("--image-field", default=None,
              help="Column with an image path (relative to the catalog), file:// or http(s) URL; embedded "
                   "into image_embedding when the bundle (or --image-bundle) has an image tower.")
@click.option("--image-bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Image–text bundle that embeds --image-field (default: --bundle when it has an image tower).")
@click.option("--image-max-bytes", type=int, default=10 * 1024 * 1024, show_default=True,
              help="Size cap of one item image.")
@click.option("--image-timeout", type=float, default=10.0, show_default=True,
              help="Timeout in seconds of one image download.")
@click.option("--audio-field", default=None,
              help="Column with an audio path (relative to the catalog), file:// or http(s) URL (wav, flac, "
                   "ogg, mp3): transcribed into the searched and embedded `transcript` field.")
@click.option("--asr-model", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, envvar="OSRECO_ASR_MODEL", show_envvar=True,
              help="Whisper folder in CTranslate2 format that transcribes --audio-field.")
@click.option("--audio-max-bytes", type=int, default=50 * 1024 * 1024, show_default=True,
              help="Size cap of one item recording.")
@click.option("--audio-max-seconds", type=float, default=1800.0, show_default=True,
              help="Duration cap of one item recording (checked before it is decoded).")
@click.option("--audio-timeout", type=float, default=30.0, show_default=True,
              help="Timeout in seconds of one recording download.")
@click.option("--audio-language", default=None, help="Language hint for transcription (e.g. en, zh).")
@click.option("--deleted-field", default=None, help="Column marking a row deleted (true/1/yes).")
@click.option("--embed-field", "embed", multiple=True,
              help="Index field(s) whose text is embedded (default: title, text).")
@click.option("--list-separator", default="|", show_default=True, help="Splits a facet string into values.")
@click.option("--rebuild", is_flag=True, help="Write a new version, then swap the alias to it atomically.")
@click.option("--sync", is_flag=True, help="Delete indexed items that the catalog no longer has.")
@click.option("--forcemerge", is_flag=True, help="With --rebuild: force-merge to one segment before the swap.")
@click.option("--warmup", is_flag=True, help="With --rebuild: warm up the k-NN graphs before the swap.")
@click.option("--dead-letter", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSONL of refused rows (default: ./NAME.dead-letter.jsonl).")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Resume file, removed when the load completes (default: ./.NAME.checkpoint.json).")
@click.option("--batch-size", default=256, show_default=True, help="Items per bulk request.")
@click.option("--threads", type=int, default=None, help="Encoder threads (default: onnxruntime's).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--engine", type=click.Choice(["lucene", "faiss"]), default="lucene", show_default=True)
@click.option("--m", "hnsw_m", default=16, show_default=True, help="HNSW m.")
@click.option("--ef-construction", default=128, show_default=True, help="HNSW ef_construction.")
@click.option("--cf-dim", default=64, show_default=True, help="Dimension of cf_vector (collaborative factors).")
@click.option("--replicas", default=0, show_default=True, help="Serving replicas.")
@click.option("--max-retries", default=10, show_default=True, help="Retries per request before giving up.")
@click.option("--backoff", default=0.5, show_default=True, help="First backoff in seconds (doubles, max 30).")
@click.option("--url", default=None, help="OpenSearch URL (default: OPENSEARCH_URL or the local node).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the final report as JSON.")
def load(catalog: str, **flags: Any) -> None:
    """Embed a catalog (JSONL, CSV, Parquet, recbole atomic) and write it to the index behind --index.

    CATALOG is a file, or `fixture:movielens` / `fixture:ecommerce` for the packaged catalogs
    (their field maps are built in; MovieLens gets its known title/year repair).

    Example: osreco ingest items.jsonl --bundle bundles/minilm --index products --facet brand --numeric price
    """
    opts = load_options(catalog, flags)
    show = sys.stderr.isatty() if flags["progress"] is None else bool(flags["progress"])
    partial = IngestReport(index=opts.index)
    try:
        report = run_load(opts, show_progress=show, report=partial)
    except Exception as e:
        error = _with_report(e, partial, opts, bool(flags["as_json"]))
        if error is e:
            raise
        raise error from e
    except KeyboardInterrupt:
        _print_report(partial, opts, False, failed=True)
        raise
    _print_report(report, opts, bool(flags["as_json"]))
    sys.exit(EXIT_OK if report.ok else EXIT_FAILURES)


def _with_report(error: Exception, report: IngestReport, opts: LoadOptions, as_json: bool) -> Exception:
    """The one error of a failed load, carrying the report of what was settled before it.

    Printed as text, the report comes first (stdout) and the error after it (stderr); with
    ``--json`` the report is the ``report`` member of the error's context (one JSON object).
    """
    data = _report_data(report, opts)
    if not as_json:
        _print_report(report, opts, False, failed=True)
    if isinstance(error, OsrecoError):
        error.context["report"] = data
        return error
    from opensearchpy.exceptions import OpenSearchException

    if not isinstance(error, (OpenSearchException, OSError)):
        return error
    return IngestError(f"the load into {opts.index} failed: {error}", report=data,
                       fix="check the node (`osreco opensearch url`), the files and the disk, then rerun: "
                           "a load resumes after its last checkpoint")


def load_options(catalog: str, flags: Mapping[str, Any]) -> LoadOptions:
    """Validate the flags of `osreco ingest CATALOG` into one frozen LoadOptions.

    Raises:
        ConfigError: a missing catalog, bad schema file, field flag or writer setting.
    """
    f = flags
    index = str(f["index"])
    fixture = catalog.removeprefix("fixture:") if catalog.startswith("fixture:") else None
    if fixture is not None:
        if fixture not in FIXTURES:
            raise ConfigError(f"unknown fixture {fixture!r}", field="CATALOG",
                              fix=f"use one of {', '.join('fixture:' + n for n in FIXTURES)}")
        path, _, fields, fmt = FIXTURES[fixture][0](), *FIXTURES[fixture][1:]
    else:
        path, fmt = Path(catalog), f["fmt"]
        if not path.is_file():
            raise ConfigError(f"catalog {catalog} does not exist or is not a file", field="CATALOG",
                              fix="pass a JSONL, CSV, Parquet or .item file, or fixture:movielens")
        fields = FieldMap.from_file(f["schema"]) if f["schema"] else field_map_from_flags(f)
    backoff = float(f["backoff"])
    write = WriteConfig(batch_size=int(f["batch_size"]), max_retries=int(f["max_retries"]),
                        backoff_base_s=backoff, backoff_max_s=max(30.0, backoff),
                        sync=bool(f["sync"]) and not f["rebuild"],
                        dead_letter=f["dead_letter"] or Path(f"{index}.dead-letter.jsonl"),
                        checkpoint=f["checkpoint"] or Path(f".{index}.checkpoint.json"))
    overrides = {"engine": f["engine"], "m": f["hnsw_m"], "ef_construction": f["ef_construction"],
                 "cf_dim": f["cf_dim"], "replicas": f["replicas"]}
    return LoadOptions(catalog=path, bundle=f["bundle"], index=index, fields=fields, fmt=fmt, fixture=fixture,
                       write=write, rebuild=bool(f["rebuild"]), forcemerge=bool(f["forcemerge"]),
                       warmup=bool(f["warmup"]), spec_overrides=overrides, threads=f["threads"],
                       device=str(f["device"]), url=f["url"], image_bundle=f.get("image_bundle"),
                       named_bundles={"zh": f["bundle_zh"]} if f.get("bundle_zh") else {},
                       image_limits=ImageLimits(max_bytes=int(f.get("image_max_bytes") or 10 * 1024 * 1024),
                                                timeout_s=float(f.get("image_timeout") or 10.0)),
                       asr_model=_asr_model(fields, f.get("asr_model")),
                       audio_limits=ItemAudioLimits(
                           max_bytes=int(f.get("audio_max_bytes") or 50 * 1024 * 1024),
                           max_seconds=float(f.get("audio_max_seconds") or 1800.0),
                           timeout_s=float(f.get("audio_timeout") or 30.0), language=f.get("audio_language")))


def _asr_model(fields: FieldMap, model: Path | None) -> Path | None:
    """The speech model that transcribes ``fields.audio``.

    Raises:
        ConfigError: an audio column without a model (or a model without an audio column).
    """
    if fields.audio and model is None:
        raise ConfigError("--audio-field needs a speech model to transcribe it", field="--asr-model",
                          fix="pass --asr-model DIR (a CTranslate2 Whisper folder) or set OSRECO_ASR_MODEL")
    return Path(model) if fields.audio and model is not None else None


def run_load(opts: LoadOptions, show_progress: bool = False, report: IngestReport | None = None) -> IngestReport:
    """Connect, open the bundle, then load (or rebuild) the index; returns the report.

    A version this run created and could not finish (the node went away, a write was refused
    for good, an interrupt) is deleted again unless the checkpoint lets a rerun resume it.

    Args:
        opts: the validated options.
        show_progress: draw a progress bar on stderr.
        report: the report to fill; it keeps the settled counts when the load raises.

    Raises:
        IngestError: bad input, a mismatched index, or OpenSearch refusing writes after retries.
    """
    from tqdm import tqdm

    from osreco.exporter.encoder import Encoder  # onnxruntime + tokenizers, never torch
    from osreco.ingest.connection import OpenSearchConfig, connect
    from osreco.ingest.rebuild import RebuildConfig, drop_unfinished, open_index, pending_rebuild, rebuild_index
    from osreco.ingest.writer import index_items

    client = connect(OpenSearchConfig.from_env(opts.url), max_retries=0, retry_on_timeout=False)
    base = Encoder(opts.bundle, threads=opts.threads, device=opts.device)
    encoder: Any = base
    if opts.named_bundles:
        from osreco.ingest.encoders import TextEncoders

        encoder = TextEncoders(base, {n: Encoder(p, threads=opts.threads, device=opts.device)
                                      for n, p in opts.named_bundles.items()})
    spec = IndexSpec.from_encoder(encoder, opts.index, **opts.spec_overrides).with_fields(
        tuple(opts.fields.facets), {k: v[1] for k, v in opts.fields.numeric.items()}, tuple(opts.fields.dates))
    images = _image_encoder(opts, base)
    if images is not None:
        spec = replace(spec, image_dim=images.dim, image_artifact_id=images.artifact_id)
    transcriber = None
    if opts.asr_model is not None:
        from osreco.exporter.asr import Transcriber

        # an offline job: beam search (5) for the best transcript; queries use greedy decoding for speed
        transcriber = Transcriber(opts.asr_model, threads=opts.threads or 1, beam_size=5)
    bar = tqdm(total=count_rows(opts.catalog, opts.fmt), unit="items", disable=not show_progress,
               dynamic_ncols=True, smoothing=0.1)
    fingerprint = catalog_fingerprint(opts.catalog)

    def load_into(index: str, write: WriteConfig) -> IngestReport:
        entries = (FIXTURES[opts.fixture][1]() if opts.fixture else
                   read_catalog(opts.catalog, opts.fields, opts.fmt))
        if images is not None:
            from osreco.ingest.images import stored_images, with_images

            entries = with_images(entries, images, stored_images(client, (index, write.reuse_from)),
                                  opts.image_limits, base_dir=opts.catalog.parent)
        if transcriber is not None:
            from osreco.ingest.audio import stored_transcripts, with_audio

            entries = with_audio(entries, transcriber, stored_transcripts(client, (index, write.reuse_from)),
                                 opts.audio_limits, base_dir=opts.catalog.parent)
        return index_items(client, encoder, index, entries, write, source=str(opts.catalog), progress=bar.update,
                           fingerprint=fingerprint, report=report)

    try:
        if not opts.rebuild:
            index, created = open_index(client, spec)
            try:
                return load_into(index, opts.write)
            except BaseException:
                if created:
                    drop_unfinished(client, index, opts.write.checkpoint)
                raise
        from osreco.ingest.rebuild import alias_indexes

        previous = alias_indexes(client, spec.alias)
        write = replace(opts.write, skip_unchanged=True, reuse_from=previous[0] if len(previous) == 1 else None)
        result = rebuild_index(client, spec, lambda index: load_into(index, write),
                               RebuildConfig(forcemerge=opts.forcemerge, warmup=opts.warmup),
                               resume_index=pending_rebuild(client, spec, opts.write.checkpoint),
                               checkpoint=opts.write.checkpoint)
        return result.report
    finally:
        bar.close()


def _image_encoder(opts: LoadOptions, encoder: Any) -> Any:
    """The Encoder that embeds item images, or None when images are not embedded.

    Raises:
        ConfigError: ``--image-bundle`` names a bundle without an image tower (at start-up).
    """
    from osreco.exporter.encoder import Encoder

    if opts.image_bundle is not None:
        images = Encoder(opts.image_bundle, threads=opts.threads, device=opts.device)
        images.require_images("--image-bundle")
    elif opts.fields.image and encoder.has_images:
        images = encoder
    else:
        return None
    if not opts.fields.image:
        raise ConfigError("--image-bundle needs --image-field (the column with each item's image)",
                          field="--image-field", fix="pass --image-field COLUMN")
    return images


def _report_data(report: IngestReport, opts: LoadOptions) -> dict[str, object]:
    return dict(report.to_dict(), alias=opts.index, dead_letter=str(opts.write.dead_letter))


def _print_report(report: IngestReport, opts: LoadOptions, as_json: bool, failed: bool = False) -> None:
    data = _report_data(report, opts)
    if as_json:
        click.echo(json.dumps(data))
        return
    click.echo(f"{'load failed after ' if failed else ''}"
               f"{report.rows_read} rows: {report.indexed} indexed, {report.unchanged} unchanged, "
               f"{report.deleted} deleted, {report.dead_lettered} dead-lettered"
               f"{f' (see {opts.write.dead_letter})' if report.dead_lettered or failed else ''}; "
               f"{report.embedded} embedded, {report.retries} retries, {report.deleted_missing} missing deleted; "
               f"{data['items_per_s']} items/s -> {report.index} (alias {opts.index})")


@ingest.group()
def pipeline() -> None:
    """The OpenSearch ingest pipeline for items written by other clients."""


@pipeline.command("install")
@click.option("--name", default=DEFAULT_PIPELINE, show_default=True, help="Pipeline id.")
@click.option("--facet", "facets", multiple=True,
              help=f"Facets to trim and lowercase (default: {', '.join(DEFAULT_FACETS)}).")
@click.option("--model-id", default=None, help="Deployed ml-commons model: add a text_embedding processor.")
@click.option("--default", "defaults", multiple=True, help="FIELD=VALUE set when missing (default popularity=0).")
@click.option("--default-for", default=None, help="Index or alias whose default_pipeline becomes this one.")
@click.option("--url", default=None, help="OpenSearch URL (default: OPENSEARCH_URL or the local node).")
@click.option("--json", "as_json", is_flag=True, help="Print the installed body as JSON.")
def install(name: str, facets: tuple[str, ...], model_id: str | None, defaults: tuple[str, ...],
            default_for: str | None, url: str | None, as_json: bool) -> None:
    """Create or replace the ingest pipeline (facets, defaults, timestamps, optional embedding).

    Example: osreco ingest pipeline install --model-id aBcD123 --default-for products
    """
    from osreco.ingest.connection import OpenSearchConfig, connect

    parsed = {k: _literal(v) for k, v in (d.split("=", 1) for d in defaults if "=" in d)} if defaults else None
    if defaults and len(parsed or {}) != len(defaults):
        raise ConfigError("--default takes FIELD=VALUE", field="--default")
    body = pipeline_body(facets or DEFAULT_FACETS, model_id=model_id, defaults=parsed)
    install_pipeline(connect(OpenSearchConfig.from_env(url)), name, body, default_for=default_for)
    click.echo(json.dumps({"ok": True, "name": name, "body": body}) if as_json else
               f"installed ingest pipeline {name} ({len(body['processors'])} processors"
               f"{', text_embedding with model ' + model_id if model_id else ''})")


def _literal(value: str) -> object:
    try:
        return json.loads(value)
    except ValueError:
        return value


logging.getLogger("opensearch").setLevel(logging.ERROR)  # our retries log; the client's own tracebacks are noise
commands: list[click.Command] = [ingest]
