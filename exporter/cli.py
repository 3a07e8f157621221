"""Click commands that osreco.exporter contributes to the `osreco` command line.

Exit codes (``osreco.errors``): 0 ok, 1 the export ran but failed validation (or failed midway),
2 bad usage or input (model folder, options, bundle), 3 environment (missing dependencies /
providers). Errors reach the one handler of ``osreco.cli_errors``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from osreco.cli_errors import command


@command("export")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Bundle folder to create (written atomically).")
@click.option("--optimize", type=click.Choice(["O1", "O2", "O3"]), default=None,
              help="ONNX Runtime graph optimization (O2/O3 use ORT-only fused operators).")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Dynamic per-channel int8 of the weight MatMuls (avx2/avx512_vnni detected).")
@click.option("--int8-scope", type=click.Choice(["attention", "all"]), default="attention",
              show_default=True, help="Which MatMuls int8 quantizes: attention projections only "
              "(FFN fp32; passes the 0.99 gate) or all (faster, lower parity).")
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
def export_command(model_dir: Path, out_dir: Path, optimize: str | None, quantize: str | None,
                   int8_scope: str, min_cosine: float | None, fp16: bool, pooling: str | None, normalize: bool | None,
                   max_length: int | None,
                   opset: int | None, model_name: str | None, threads: int, overwrite: bool,
                   ml_commons: bool, as_json: bool) -> None:
    """Export a local Hugging Face model folder to a validated ONNX bundle.

    Validates the bundle against PyTorch (English, Chinese, edge cases, a retrieval corpus),
    prints the parity table and stores it in manifest.json. A failed validation exits 1 and
    leaves no bundle.

    Example: osreco export ./my-model -o ./bundles/my-model --quantize int8
    """
    from osreco.exporter.export import ExportOptions, export_model

    def report(line: str) -> None:
        click.echo(line, err=as_json)

    options = ExportOptions(optimize=optimize, quantize=quantize, fp16=fp16, pooling=pooling,
                            normalize=normalize, max_length=max_length, opset=opset,
                            model_name=model_name, threads=threads, overwrite=overwrite,
                            ml_commons=ml_commons, int8_scope=int8_scope, min_cosine=min_cosine)
    manifest = export_model(model_dir, out_dir, options, report=report)
    if as_json:
        click.echo(json.dumps({"ok": True, "bundle": str(out_dir), **manifest.to_dict()}, default=str))
    else:
        click.echo(f"wrote {out_dir} ({manifest.precision}, dim {manifest.dim}, {manifest.artifact_id})")


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


commands: list[click.Command] = [export_command, verify_bundle_command]
