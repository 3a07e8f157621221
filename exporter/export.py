"""``export_model``: a Hugging Face folder -> a validated, self-describing ONNX bundle.

Everything is written into a temporary sibling folder and renamed into place at the end,
so a failed export never leaves a half-written bundle behind.

Example:
    >>> from osreco.exporter import ExportOptions, export_model
    >>> manifest = export_model("models/minilm", "bundles/minilm", ExportOptions(quantize="int8"))
    >>> manifest.parity["min_cosine"] >= 0.99
    True
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from osreco.exporter.errors import ConfigError, ExporterError
from osreco.exporter.manifest import MODEL_NAME, POOLINGS, Manifest, write_manifest
from osreco.exporter.modeldir import ModelInfo, inspect_model_dir

log = logging.getLogger(__name__)
OPT_LEVELS = ("O1", "O2", "O3")
INT8_SCHEMES = ("blockwise", "dynamic", "static")
INT8_BLOCKS = (32, 64, 128)


@dataclass(frozen=True)
class ExportOptions:
    """Options of one export (validated when built).

    Attributes:
        optimize: ONNX Runtime optimization level O1|O2|O3, or None (plain graph).
        quantize: ``"int8"`` (the scheme: ``int8_scheme``), or None.
        fp16: convert to float16 (for CUDA).
        pooling: override mean|cls|max (default: sentence-transformers config, else mean).
        normalize: override L2 normalization (default: sentence-transformers config, else True).
        max_length: override the truncation length.
        opset: ONNX opset (default: optimum's).
        model_name: name stored in the manifest (default: the folder name).
        min_cosine: override the pass mark for min cosine.
        threads: CPU threads for export-time validation.
        overwrite: replace an existing bundle folder.
        int8_scheme: with quantize: ``blockwise`` (default: int8 weights in blocks of 32, int8
            compute on activations quantized per row and block; passes the parity gates, see
            docs/benchmarks.md), ``dynamic`` (per-channel dynamic int8 of ``int8_scope``) or
            ``static`` (QDQ with activation ranges calibrated on ``calibration``; fails the gate
            on MiniLM, kept for other models).
        int8_scope: with the ``dynamic`` scheme: ``attention`` (FFN kept fp32) or ``all``.
        int8_block: with the ``blockwise`` scheme: weight values per scale (32, 64 or 128; coarser
            blocks are faster on long texts and a little less faithful, see docs/benchmarks.md).
        calibration: calibration texts for the ``static`` scheme (catalog text).
        calibration_source: where the calibration texts came from (recorded in the manifest).
        parity_catalog: catalog texts: the parity report adds the retrieval top-10 overlap over them.
        ml_commons: also write the ml-commons zip and register body (into BUNDLE_DIR/ml-commons).
    """

    optimize: str | None = None
    quantize: str | None = None
    fp16: bool = False
    pooling: str | None = None
    normalize: bool | None = None
    max_length: int | None = None
    opset: int | None = None
    model_name: str | None = None
    min_cosine: float | None = None
    threads: int = 2
    overwrite: bool = False
    ml_commons: bool = False
    int8_scope: str = "attention"
    int8_scheme: str = "blockwise"
    int8_block: int = 32
    calibration: tuple[str, ...] = ()
    calibration_source: str = ""
    parity_catalog: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.optimize is not None and self.optimize not in OPT_LEVELS:
            raise ConfigError(f"optimize {self.optimize!r} not in {OPT_LEVELS}", fix="use O1, O2 or O3")
        if self.quantize not in (None, "int8"):
            raise ConfigError(f"quantize {self.quantize!r} is not supported", fix="use int8")
        if self.int8_scope not in ("attention", "all"):
            raise ConfigError(f"int8_scope {self.int8_scope!r} not in ('attention', 'all')")
        if self.int8_scheme not in INT8_SCHEMES:
            raise ConfigError(f"int8_scheme {self.int8_scheme!r} not in {INT8_SCHEMES}", fix="use blockwise")
        if self.int8_block not in INT8_BLOCKS:
            raise ConfigError(f"int8_block {self.int8_block!r} not in {INT8_BLOCKS}", field="--int8-block",
                              fix="use 32, 64 or 128")
        if self.int8_block != 32 and self.int8_scheme != "blockwise":
            raise ConfigError("--int8-block applies to the blockwise int8 scheme only", field="--int8-block",
                              fix="drop --int8-block or use --int8-scheme blockwise")
        if self.ml_commons and self.quantize and self.int8_scheme == "blockwise":
            raise ConfigError("ml-commons' ONNX Runtime may lack the MatMulNBits operator of the blockwise scheme",
                              fix="use --int8-scheme dynamic with --ml-commons")
        if self.quantize and self.int8_scheme == "static" and not self.calibration:
            raise ConfigError("the static int8 scheme needs calibration texts", field="--calibration",
                              fix="pass --calibration FILE (catalog text, one per line or JSONL), "
                                  "or use --int8-scheme blockwise")
        if self.quantize and self.fp16:
            raise ConfigError("--quantize and --fp16 exclude each other", fix="pick one precision")
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ConfigError(f"pooling {self.pooling!r} not in {POOLINGS}", fix="use mean, cls or max")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ConfigError(f"max_length must be an integer >= 2, got {self.max_length!r}")
        if self.min_cosine is not None and not 0.0 < self.min_cosine <= 1.0:
            raise ConfigError(f"min_cosine must be in (0, 1], got {self.min_cosine!r}")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {self.threads!r}")
        if self.ml_commons and (self.optimize in ("O2", "O3") or self.fp16):
            raise ConfigError("ml-commons needs a plain graph: O2/O3 and fp16 use ONNX Runtime-only "
                              "operators", fix="drop --optimize O2/O3 and --fp16 with --ml-commons")

    @property
    def precision(self) -> str:
        """``int8``, ``fp16`` or ``fp32``."""
        return "int8" if self.quantize else "fp16" if self.fp16 else "fp32"


def _resolve(info: ModelInfo, options: ExportOptions) -> ModelInfo:
    """Apply the option overrides to what the folder says."""
    changes: dict = {}
    if info.task == "embedding":
        if options.pooling is not None:
            changes["pooling"] = options.pooling
        if options.normalize is not None:
            changes["normalize"] = options.normalize
    elif options.pooling is not None:
        raise ConfigError("--pooling applies to embedding models, not classifiers", info.path)
    if options.max_length is not None:
        if options.max_length > info.max_length:
            raise ConfigError(f"max_length {options.max_length} exceeds the model's {info.max_length}",
                              info.path, f"use at most {info.max_length}")
        changes["max_length"] = options.max_length
    return dataclasses.replace(info, **changes)


def _build_graph(info: ModelInfo, options: ExportOptions, work: Path, bundle: Path) -> dict:
    """Export, optimize, quantize/convert; leaves bundle/model.onnx. Returns notes."""
    from osreco.exporter import convert

    current = convert.export_onnx(info, work, options.opset)
    notes: dict = {}
    if options.optimize:
        optimized = work / "optimized.onnx"
        convert.optimize_onnx(current, optimized, options.optimize, info.model_type)
        current = optimized
    if options.quantize:
        quantized = work / "int8.onnx"
        notes["quantization"] = _quantize(current, quantized, options, bundle)
        current = quantized
    elif options.fp16:
        half = work / "fp16.onnx"
        convert.convert_fp16(current, half)
        current = half
    shutil.copyfile(current, bundle / MODEL_NAME)
    return notes


def _quantize(src: Path, dst: Path, options: ExportOptions, bundle: Path) -> dict:
    """Run the chosen int8 scheme. Returns: the manifest's ``quantization`` record."""
    from osreco.exporter import convert
    from osreco.exporter.manifest import TOKENIZER_NAME, calibration_record

    if options.int8_scheme == "blockwise":
        notes = convert.quantize_blockwise(src, dst, block_size=options.int8_block)
    elif options.int8_scheme == "dynamic":
        notes = {**convert.quantize_int8(src, dst, options.int8_scope), "scheme": f"dynamic-{options.int8_scope}"}
    else:
        notes = convert.quantize_static_int8(src, dst, list(options.calibration), bundle / TOKENIZER_NAME)
    calibration = (calibration_record(list(options.calibration), options.calibration_source or "texts")
                   if options.int8_scheme == "static" else None)
    return {**notes, "calibration": calibration}


def _install(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished scratch bundle into place (replacing an old one if allowed)."""
    if out_dir.exists():
        if not overwrite:
            raise ConfigError("output folder already exists", out_dir, "pass --overwrite or pick another -o")
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def export_model(model_dir: str | Path, out_dir: str | Path, options: ExportOptions | None = None,
                 report: Callable[[str], None] | None = None) -> Manifest:
    """Export a model folder to a validated bundle.

    Args:
        model_dir: a local Hugging Face folder (bert, distilbert, roberta, xlm-roberta, mpnet;
            an encoder or a …ForSequenceClassification model).
        out_dir: the bundle folder to create.
        options: ExportOptions (defaults: plain fp32).
        report: called with progress lines and the parity table (e.g. ``click.echo``).
    Returns:
        The written Manifest (with parity numbers and artifact_id).
    Raises:
        ModelDirError, ConfigError: bad input. ParityError: validation failed (no bundle).
        RuntimeEnvError: export dependencies missing.
    """
    from osreco.exporter import convert, validate

    options = options or ExportOptions()
    say = report or log.info
    out_dir = Path(out_dir).absolute()
    from osreco.exporter.image_export import image_text_type

    if image_text_type(model_dir):
        return _export_image_text(Path(model_dir), out_dir, options, say)
    info = _resolve(inspect_model_dir(model_dir), options)
    if out_dir.exists() and not options.overwrite:
        raise ConfigError("output folder already exists", out_dir, "pass --overwrite or pick another -o")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    bundle, work = tmp / "bundle", tmp / "work"
    try:
        bundle.mkdir(parents=True)
        work.mkdir()
        say(f"exporting {info.path} ({info.model_type}, {info.task}, {options.precision})")
        pad_id = convert.save_tokenizer(info, bundle, info.max_length)
        notes = _build_graph(info, options, work, bundle)
        inputs, output = convert.onnx_io(bundle / MODEL_NAME)
        manifest = Manifest(
            model_name=options.model_name or info.path.name, task=info.task, dim=info.dim,
            pooling=info.pooling, normalize=info.normalize if info.task == "embedding" else False,
            max_length=info.max_length, opset=convert.onnx_opset(bundle / MODEL_NAME),
            precision=options.precision, model_type=info.model_type, input_names=inputs,
            output_name=output, pad_token_id=pad_id, labels=info.labels, optimize=options.optimize,
            quantization=notes.get("quantization", {}))
        write_manifest(bundle, manifest)
        say("validating against PyTorch …")
        parity = validate.measure_parity(info, bundle, threads=options.threads, catalog=options.parity_catalog)
        parity.update(notes)
        thresholds = validate.Thresholds.for_precision(options.precision, options.min_cosine)
        say(validate.format_table({k: v for k, v in parity.items() if not isinstance(v, dict)},
                                  options.precision, thresholds))
        validate.check_parity(parity, options.precision, thresholds, out_dir)
        manifest = write_manifest(bundle, dataclasses.replace(manifest, parity=parity))
        if options.ml_commons:
            from osreco.exporter.mlcommons import write_ml_commons

            write_ml_commons(bundle, bundle / "ml-commons", manifest)
        shutil.rmtree(work)
        _install(bundle, out_dir, options.overwrite)
    except ExporterError:
        raise
    except (OSError, RuntimeError, ValueError) as e:
        raise ExporterError(f"export failed: {e}", model_dir, "see the message above") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _export_image_text(model_dir: Path, out_dir: Path, options: ExportOptions,
                       say: Callable[[str], None]) -> Manifest:
    """``export_model`` for an image–text dual encoder: two towers, one manifest, one parity gate."""
    from osreco.exporter import image_export, validate

    if out_dir.exists() and not options.overwrite:
        raise ConfigError("output folder already exists", out_dir, "pass --overwrite or pick another -o")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    bundle = tmp / "bundle"
    try:
        bundle.mkdir(parents=True)
        manifest = write_manifest(bundle, image_export.build_image_text_graphs(model_dir, bundle, options, say))
        say("validating both towers against PyTorch …")
        parity = image_export.measure_image_text_parity(model_dir, bundle, threads=options.threads)
        thresholds = validate.Thresholds.for_precision("fp32", options.min_cosine)
        say(validate.format_table(parity, "fp32", thresholds))
        validate.check_parity(parity, "fp32", thresholds, out_dir)
        manifest = write_manifest(bundle, dataclasses.replace(manifest, parity=parity))
        _install(bundle, out_dir, options.overwrite)
    except ExporterError:
        raise
    except (OSError, RuntimeError, ValueError, TypeError) as e:
        raise ExporterError(f"export failed: {e}", model_dir, "see the message above") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
