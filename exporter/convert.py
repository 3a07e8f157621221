"""Graph work: optimum export, ONNX Runtime optimization, int8 quantization, fp16.

All heavy imports (torch, transformers, optimum, onnx) happen inside these functions.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from osreco.exporter.errors import ExporterError, ModelDirError, RuntimeEnvError
from osreco.exporter.manifest import MODEL_NAME, TOKENIZER_NAME
from osreco.exporter.modeldir import ModelInfo

log = logging.getLogger(__name__)
TOKENIZER_KEEP = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def export_onnx(info: ModelInfo, work_dir: Path, opset: int | None) -> Path:
    """Export the plain encoder (or classifier) to ONNX through optimum.

    Args:
        info: the inspected model folder.
        work_dir: an empty scratch folder.
        opset: ONNX opset, or None for optimum's default.
    Returns:
        Path of the exported model.onnx.
    Raises:
        RuntimeEnvError: optimum is missing. ExporterError: the export failed.
    """
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as e:
        raise RuntimeEnvError("optimum-onnx is not installed", fix="pip install 'osreco[export]'") from e
    task = "text-classification" if info.task == "classification" else "feature-extraction"
    raw = work_dir / "raw"
    try:
        main_export(str(info.path), raw, task=task, opset=opset, library_name="transformers",
                    do_validation=False, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ExporterError(f"optimum could not export the model: {e}", info.path,
                            "check that the folder loads with transformers.AutoModel") from e
    return raw / MODEL_NAME


def save_tokenizer(info: ModelInfo, out_dir: Path, max_length: int) -> int:
    """Save a fast tokenizer (tokenizer.json + configs) with truncation and no padding.

    ml-commons and the Encoder both read tokenizer.json, so its truncation must be the
    bundle's max_length and it must not pad to a fixed width.

    Args:
        info: the inspected model folder.
        out_dir: the bundle scratch folder.
        max_length: truncation length.
    Returns:
        The pad token id.
    Raises:
        ModelDirError: no fast tokenizer can be built from the folder.
    """
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(info.path), use_fast=True, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise ModelDirError(f"cannot load the tokenizer: {e}", info.path,
                            "save a fast tokenizer with tokenizer.save_pretrained(MODEL_DIR)") from e
    if not getattr(tok, "is_fast", False):
        raise ModelDirError("only a slow tokenizer is available", info.path,
                            "install tokenizers/sentencepiece or save tokenizer.json")
    scratch = out_dir / ".tok"
    tok.save_pretrained(str(scratch))
    for name in TOKENIZER_KEEP:
        if (scratch / name).is_file():
            shutil.copyfile(scratch / name, out_dir / name)
    shutil.rmtree(scratch)
    path = out_dir / TOKENIZER_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    data["padding"] = None
    data["truncation"] = {"direction": "Right", "max_length": max_length,
                          "strategy": "LongestFirst", "stride": 0}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    cfg_path = out_dir / "tokenizer_config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["model_max_length"] = max_length
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")
    return int(tok.pad_token_id if tok.pad_token_id is not None else 0)


def optimize_onnx(src: Path, dst: Path, level: str, model_type: str) -> None:
    """Apply ONNX Runtime transformer optimizations (O1 basic, O2 + fusions, O3 + fast GELU).

    Args:
        src: input model. dst: output model path.
        level: ``O1``, ``O2`` or ``O3``.
        model_type: the Hugging Face model_type (selects the fusion patterns).
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    ort_type = {"distilbert": "bert", "xlm-roberta": "bert", "roberta": "bert", "mpnet": "bert"}.get(
        model_type, "bert")
    options = FusionOptions(ort_type)
    options.enable_gelu_approximation = level == "O3"
    if level == "O1":
        options.enable_attention = options.enable_skip_layer_norm = False
        options.enable_embed_layer_norm = options.enable_bias_skip_layer_norm = False
    model = optimize_model(str(src), model_type=ort_type, num_heads=0, hidden_size=0,
                           optimization_options=options, opt_level=1 if level == "O1" else 2,
                           use_gpu=False, only_onnxruntime=False)
    model.save_model_to_file(str(dst))


# Weight MatMuls kept in fp32 by default: the feed-forward block (up- and down-projection;
# bert/roberta/mpnet and distilbert names). The FFN up-projection reads LayerNorm outliers
# that per-tensor dynamic activation scales cannot hold, so quantizing every weight MatMul
# fails the parity gate while Q, K, V and the attention output alone pass it (parity numbers:
# docs/benchmarks.md, "Exporter / Encoder").
FP32_PATTERNS = (r"/intermediate/", r"/layer\.\d+/output/dense/", r"/ffn/lin[12]/")


def _exclude_nodes(model_path: Path, patterns: tuple[str, ...] = FP32_PATTERNS) -> list[str]:
    """Nodes kept in fp32 by int8 quantization.

    Always: MatMuls without a weight (Q·Kᵀ and softmax·V: two activations, large error for
    little speed) and embedding lookups. Also the weight MatMuls whose name matches a pattern (regular expressions).
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type == "MatMul" and not any(i in weights for i in node.input):
            keep.append(node.name)
        elif node.op_type == "MatMul" and any(re.search(p, node.name) for p in patterns):
            keep.append(node.name)
        elif node.op_type in ("Gather", "EmbedLayerNormalization", "Attention", "MultiHeadAttention"):
            keep.append(node.name)
    return keep


def quantize_int8(src: Path, dst: Path, scope: str = "attention") -> dict:
    """Dynamic per-channel int8 quantization of the weight MatMuls.

    Args:
        src: fp32 (optionally optimized) model. dst: output path.
        scope: ``attention`` (Q/K/V/output projections; FFN stays fp32) or ``all`` (every
            weight MatMul: faster, but below the parity gate on all-MiniLM-L6-v2; docs/benchmarks.md).
    Returns:
        ``{"isa": "avx512_vnni"|"avx2"|"other", "excluded_nodes": n}``.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = _exclude_nodes(src, FP32_PATTERNS if scope == "attention" else ())
    quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"], nodes_to_exclude=excluded,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return {"isa": detect_isa(), "scope": scope, "excluded_nodes": len(excluded)}


def detect_isa() -> str:
    """Returns: ``avx512_vnni``, ``avx2`` or ``other`` from /proc/cpuinfo (Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "other"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx2" if "avx2" in flags else "other"


def convert_fp16(src: Path, dst: Path) -> None:
    """Convert weights and compute to fp16, keeping float32 inputs and outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def onnx_opset(path: Path) -> int:
    """Args: path: an ONNX model. Returns: its default-domain opset."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def onnx_io(path: Path) -> tuple[tuple[str, ...], str]:
    """Args: path: an ONNX model. Returns: (input names, first output name)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return tuple(i.name for i in graph.input), graph.output[0].name
