"""Graph work: optimum export, ONNX Runtime optimization, int8 quantization, fp16.

All heavy imports (torch, transformers, optimum, onnx) happen inside these functions.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np

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


_GROUP_KINDS = (("attn_qkv", r"/attention/self/(query|key|value)/|/attention/(q|k|v)_lin/"),
                ("attn_out", r"/attention/output/dense/|/attention/out_lin/"),
                ("ffn_up", r"/intermediate/|/ffn/lin1/"),
                ("ffn_down", r"/layer\.\d+/output/dense/|/ffn/lin2/"))


def node_group(name: str) -> str | None:
    """``"layer.N kind"`` (kind: attn_qkv, attn_out, ffn_up, ffn_down) of a weight MatMul, or None."""
    layer = re.search(r"layer\.(\d+)", name)
    for kind, pattern in _GROUP_KINDS:
        if layer and re.search(pattern, name):
            return f"layer.{layer.group(1)} {kind}"
    return None


def layer_groups(model_path: Path) -> list[str]:
    """Args: model_path: an ONNX encoder. Returns: its weight-MatMul groups in graph order."""
    import onnx

    out: list[str] = []
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        group = node_group(node.name) if node.op_type == "MatMul" else None
        if group and group not in out:
            out.append(group)
    return out


class _TextReader:
    """onnxruntime CalibrationDataReader over texts: one text per batch, natural length."""

    def __init__(self, texts: list[str], tokenizer_path: Path, input_names: tuple[str, ...]) -> None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_path))
        self._feeds = []
        for enc in tok.encode_batch(texts):
            arrays = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
            self._feeds.append({k: np.asarray([v], dtype=np.int64) for k, v in arrays.items() if k in input_names})
        self._it = iter(self._feeds)

    def get_next(self) -> dict | None:
        """Returns: the next feed, or None at the end."""
        return next(self._it, None)

    def rewind(self) -> None:
        """Start over (ORT calls this between calibration passes)."""
        self._it = iter(self._feeds)


def quantize_static_int8(src: Path, dst: Path, texts: list[str], tokenizer_path: Path | None = None,
                         method: str = "MinMax", fmt: str = "QDQ", symmetric: bool = False,
                         reduce_range: bool = False, keep: tuple[str, ...] = (),
                         keep_groups: tuple[str, ...] = ()) -> dict:
    """Static per-channel int8 of the weight MatMuls, activation ranges calibrated on texts.

    Args:
        src: fp32 model. dst: output path. texts: calibration texts (catalog text).
        tokenizer_path: tokenizer.json (default: next to src).
        method: ``MinMax``, ``Percentile`` or ``Entropy``. fmt: ``QDQ`` or ``QOperator``.
        symmetric: symmetric activation ranges. reduce_range: 7-bit weights.
        keep: group kinds kept fp32 in every layer (attn_qkv, attn_out, ffn_up, ffn_down).
        keep_groups: exact groups kept fp32 (``"layer.5 ffn_down"``).
    Returns:
        Notes for the manifest (scheme, excluded node count, isa).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    graph = onnx.load(str(src), load_external_data=False).graph
    inputs = tuple(i.name for i in graph.input)
    excluded = _exclude_nodes(src, ())
    for node in graph.node:
        group = node_group(node.name) if node.op_type == "MatMul" else None
        if group and (group in keep_groups or group.split()[1] in keep):
            excluded.append(node.name)
    reader = _TextReader(texts, tokenizer_path or src.parent / TOKENIZER_NAME, inputs)
    quantize_static(str(src), str(dst), reader, quant_format=getattr(QuantFormat, fmt),
                    op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=reduce_range,
                    activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                    weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                    calibrate_method=getattr(CalibrationMethod, method),
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
    return {"isa": detect_isa(), "scheme": f"static-{fmt.lower()}-{method.lower()}",
            "excluded_nodes": len(excluded)}


def quantize_blockwise(src: Path, dst: Path, bits: int = 8, block_size: int = 32, accuracy_level: int = 4,
                       symmetric: bool = True) -> dict:
    """Block-wise weight quantization of the weight MatMuls (ONNX Runtime ``MatMulNBits``).

    Weights are stored in ``bits`` bits with one scale per ``block_size`` values of each
    output column. With ``accuracy_level`` 4 the CPU kernel also quantizes each activation row
    to int8 per block at run time (fine-grained scales: no per-tensor outlier problem) and
    multiplies with int8 dot products (VNNI); lower levels compute in fp32.

    Args:
        src: fp32 (optionally optimized) model. dst: output path.
        bits: 8 or 4. block_size: a power of two >= 16. accuracy_level: 0-4 (4: int8 compute).
        symmetric: symmetric weight blocks (no zero point).
    Returns:
        Notes for the manifest.
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)  # a line per node
    excluded = _exclude_nodes(src, ())
    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=symmetric,
                                          accuracy_level=accuracy_level, bits=bits)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), bits=bits, block_size=block_size,
                                     is_symmetric=symmetric, accuracy_level=accuracy_level,
                                     nodes_to_exclude=excluded, algo_config=config)
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    return {"isa": detect_isa(), "scheme": f"blockwise-int{bits}", "block_size": block_size,
            "accuracy_level": accuracy_level, "excluded_nodes": len(excluded)}


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
