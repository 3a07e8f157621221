"""``import_onnx``: an ONNX encoder someone else exported (folder, zip or jar) -> a validated bundle.

The source graph is copied byte for byte, so the bundle computes exactly what the source
computes; what the bundle adds is a manifest (pooling, normalization, dimension, max length,
precision, hashes). Those are read from the graph and from config files next to it
(``config.json``, ``modules.json`` + ``1_Pooling/config.json``, ``sentence_bert_config.json``,
the tokenizer's truncation) and otherwise taken from the options. The bundle is then checked
against the source model's own outputs (run by onnxruntime on the source file, each text
alone, pooled here) and by a retrieval smoke test.

Example:
    >>> manifest = import_onnx("bge-small-zh-v15.jar", "bundles/bge-zh",
    ...                        ImportOptions(pooling="cls", normalize=True, language="zh"))
    >>> manifest.dim
    512
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osreco.exporter.errors import ConfigError, ExporterError, ModelDirError, RuntimeEnvError
from osreco.exporter.manifest import MODEL_NAME, POOLINGS, TOKENIZER_NAME, Manifest, write_manifest
from osreco.exporter.onnx_parity import check, measure

log = logging.getLogger(__name__)
ALLOWED_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings")
CONFIG_FILES = ("config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json")
_INT8_OPS = frozenset({"MatMulInteger", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear",
                       "QLinearMatMul", "DynamicQuantizeMatMul", "QAttention", "MatMulIntegerToFloat"})


@dataclass(frozen=True)
class ImportOptions:
    """What the files do not say, and how to import.

    Attributes:
        pooling: mean|cls|max; needed when no ``1_Pooling/config.json`` is there.
        normalize: L2-normalize; needed when no ``modules.json`` is there.
        max_length: truncation length (default: tokenizer / config / position table).
        dim: the dimension the bundle must have (e.g. the index's knn field), checked.
        model_name: the manifest's name (default: the ONNX file's stem).
        language: the language the encoder is for (``en``, ``zh``, ...; empty = any).
        threads: CPU threads for validation.
        overwrite: replace an existing bundle folder.
    """

    pooling: str | None = None
    normalize: bool | None = None
    max_length: int | None = None
    dim: int | None = None
    model_name: str | None = None
    language: str = ""
    threads: int = 2
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ConfigError(f"pooling {self.pooling!r} not in {POOLINGS}", fix="use mean, cls or max")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ConfigError(f"max_length must be an integer >= 2, got {self.max_length!r}")
        if self.dim is not None and (not isinstance(self.dim, int) or self.dim < 1):
            raise ConfigError(f"dim must be a positive integer, got {self.dim!r}")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {self.threads!r}")


@dataclass(frozen=True)
class OnnxSource:
    """The files found in the source, unpacked into a scratch folder."""

    origin: Path
    onnx: Path
    tokenizer: Path
    configs: dict[str, Path]
    shown: str = ""

    @property
    def graph(self) -> str:
        """The graph as the user knows it: ``archive.jar!/member.onnx`` or its path."""
        return self.shown or str(self.onnx)


def _pick(names: list[str], origin: Path, what: str, preferred: str, fix: str) -> str | None:
    if not names:
        return None
    if len(names) == 1:
        return names[0]
    exact = [n for n in names if Path(n).name == preferred]
    if len(exact) == 1:
        return exact[0]
    raise ModelDirError(f"several {what} files: {', '.join(sorted(names))}", origin, fix)


def locate(source: str | Path, scratch: Path) -> OnnxSource:
    """Find the ONNX graph, the tokenizer and config files in a folder or a zip/jar.

    Args:
        source: a folder, or a .zip/.jar archive.
        scratch: an empty folder; archive members are unpacked into it.
    Returns:
        The located files (archive members unpacked).
    Raises:
        ModelDirError: no such path, not an archive, no or several ONNX graphs, no tokenizer.
    """
    origin = Path(source)
    if origin.is_dir():
        names = [str(p.relative_to(origin)) for p in sorted(origin.rglob("*")) if p.is_file()]
        root = origin
    elif origin.is_file():
        try:
            with zipfile.ZipFile(origin) as z:
                names = [n for n in z.namelist() if not n.endswith("/")]
        except (zipfile.BadZipFile, OSError) as e:
            raise ModelDirError(f"not a folder or a zip/jar archive: {e}", origin,
                                "pass a folder or a .zip/.jar holding an .onnx and tokenizer.json") from e
        root = scratch
    else:
        raise ModelDirError("no such file or folder", origin,
                            "pass a folder or a .zip/.jar holding an .onnx and tokenizer.json")
    onnx = _pick([n for n in names if n.lower().endswith(".onnx")], origin, "ONNX", MODEL_NAME,
                 "leave one .onnx file in the folder or archive (or name it model.onnx)")
    if onnx is None:
        raise ModelDirError("no .onnx file in it", origin, "add the exported ONNX encoder (model.onnx)")
    tokenizer = _pick([n for n in names if n.lower().endswith("tokenizer.json")], origin, "tokenizer",
                      TOKENIZER_NAME, "leave one tokenizer.json next to the .onnx file")
    if tokenizer is None:
        raise ModelDirError("no tokenizer.json in it (a Hugging Face fast tokenizer is needed)", origin,
                            "add the model's tokenizer.json (tokenizer.save_pretrained writes it) "
                            "next to the .onnx file")
    # config files at the root or next to the graph (the graph often sits in onnx/)
    near = (Path(), Path(onnx).parent, Path(onnx).parent.parent)
    configs = {}
    for c in CONFIG_FILES:
        found = [n for n in names if Path(n) in {d / c for d in near}]
        if found:
            configs[c] = found[0]
    wanted = [onnx, tokenizer, *configs.values()]
    if root is scratch:
        with zipfile.ZipFile(origin) as z:
            for n in wanted:
                z.extract(n, scratch)
    return OnnxSource(origin=origin, onnx=root / onnx, tokenizer=root / tokenizer,
                      configs={c: root / n for c, n in configs.items()},
                      shown=f"{origin}!/{onnx}" if root is scratch else str(origin / onnx))


def _json(path: Path) -> Any:
    """The parsed JSON object or list in ``path`` ({} for anything else)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelDirError(f"cannot read JSON: {e}", path, "repair the file or remove it") from e
    return data if isinstance(data, (dict, list)) else {}


def _session(path: Path, threads: int, shown: str):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise RuntimeEnvError("onnxruntime is not installed", fix="pip install 'osreco[cpu]'") from e
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors
        raise ModelDirError(f"onnxruntime cannot load the graph: {e}", shown,
                            "pass a valid ONNX encoder graph") from e


def check_graph(session, path: str) -> tuple[tuple[str, ...], str, int | None]:
    """Check the graph's inputs and outputs.

    Returns:
        (input names, the token-level output name, its static dimension or None).
    Raises:
        ModelDirError: inputs outside input_ids/attention_mask/token_type_ids (or not int64),
            input_ids or attention_mask missing, no ``(batch, seq, dim)`` output.
    """
    inputs = session.get_inputs()
    names = tuple(i.name for i in inputs)
    odd = [f"{i.name} ({i.type})" for i in inputs if i.name not in ALLOWED_INPUTS or i.type != "tensor(int64)"]
    missing = [n for n in ALLOWED_INPUTS[:2] if n not in names]
    if odd or missing:
        raise ModelDirError(
            f"unexpected graph inputs: {', '.join(odd) or 'none'}; missing: {', '.join(missing) or 'none'} "
            f"(an encoder takes int64 {', '.join(ALLOWED_INPUTS)})", path,
            "export the plain encoder (optimum feature-extraction) with these inputs")
    outputs = {o.name: o.shape for o in session.get_outputs()}
    token = [n for n in TOKEN_OUTPUTS if n in outputs and len(outputs[n]) == 3]
    token = token or [n for n, shape in outputs.items() if len(shape) == 3]
    if len(token) != 1:
        shown = ", ".join(f"{n} {s}" for n, s in outputs.items())
        raise ModelDirError(
            f"unexpected graph outputs: {shown} (need exactly one token-level (batch, seq, dim) output, "
            f"e.g. last_hidden_state)", path,
            "export the encoder without its pooling or task head (optimum feature-extraction)")
    dim = outputs[token[0]][2]
    return names, token[0], dim if isinstance(dim, int) and dim > 0 else None


def graph_facts(path: Path) -> tuple[str, int | None, int]:
    """Read the precision, the position table's length and the opset from the graph.

    Returns:
        (``int8``|``fp16``|``fp32``, rows of a ``position_embeddings`` weight or None, opset).
    Raises:
        RuntimeEnvError: the onnx package is missing.
    """
    try:
        import onnx
    except ImportError as e:
        raise RuntimeEnvError("the onnx package is not installed", fix="pip install 'osreco[export]'") from e
    model = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    types = {t.data_type for t in model.graph.initializer}
    precision = ("int8" if ops & _INT8_OPS or types & {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
                 else "fp16" if onnx.TensorProto.FLOAT16 in types else "fp32")
    rows = [int(t.dims[0]) for t in model.graph.initializer
            if "position_embeddings" in t.name and len(t.dims) == 2]
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return precision, (rows[0] if rows else None), opset


def _st_settings(src: OnnxSource) -> tuple[str | None, bool | None]:
    """Pooling and normalization from sentence-transformers files, where present."""
    pooling = None
    if "1_Pooling/config.json" in src.configs:
        cfg = _json(src.configs["1_Pooling/config.json"])
        modes = [m for m, key in (("cls", "pooling_mode_cls_token"), ("mean", "pooling_mode_mean_tokens"),
                                  ("max", "pooling_mode_max_tokens")) if cfg.get(key)]
        pooling = modes[0] if len(modes) == 1 else None
    normalize = None
    if "modules.json" in src.configs:
        modules = _json(src.configs["modules.json"])
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules if isinstance(m, dict)]
        normalize = "Normalize" in kinds
    return pooling, normalize


def _max_length(src: OnnxSource, tok: dict, positions: int | None, option: int | None) -> int:
    """The truncation length: the option, else (first found) sentence_bert_config.json's, the
    tokenizer's truncation, config.json's positions, or the graph's position table."""
    found: list[int] = []
    if "sentence_bert_config.json" in src.configs:
        value = _json(src.configs["sentence_bert_config.json"]).get("max_seq_length")
        found += [value] if isinstance(value, int) else []
    trunc = tok.get("truncation") or {}
    if isinstance(trunc, dict) and isinstance(trunc.get("max_length"), int):
        found.append(trunc["max_length"])
    if "config.json" in src.configs:
        cfg = _json(src.configs["config.json"])
        value = cfg.get("max_position_embeddings")
        if isinstance(value, int):
            offset = max(int(cfg.get("pad_token_id") or 1), 1) + 1 if cfg.get("model_type") in (
                "roberta", "xlm-roberta", "mpnet") else 0
            found.append(value - offset)
    if positions is not None:
        found.append(positions)
    if option is not None:
        if positions is not None and option > positions:
            raise ConfigError(f"max_length {option} exceeds the graph's {positions} positions", src.graph,
                              f"use --max-length {positions} or less")
        return option
    if found:
        return min(found[0], positions) if positions is not None else found[0]
    raise ConfigError("cannot tell the model's max length (no tokenizer truncation, config.json or "
                      "position table)", src.graph, "pass --max-length N")


def _pad_id(tok_path: Path, tok: dict) -> int:
    from tokenizers import Tokenizer

    padding = tok.get("padding") or {}
    if isinstance(padding, dict) and isinstance(padding.get("pad_id"), int):
        return int(padding["pad_id"])
    tokenizer = Tokenizer.from_file(str(tok_path))
    for name in ("[PAD]", "<pad>", "<PAD>"):
        token_id = tokenizer.token_to_id(name)
        if token_id is not None:
            return int(token_id)
    return 0


def _write_tokenizer(src: Path, dst: Path, max_length: int) -> dict:
    """Copy tokenizer.json with no padding and truncation at max_length (what ml-commons reads)."""
    data = _json(src)
    try:
        from tokenizers import Tokenizer

        Tokenizer.from_str(json.dumps(data))
    except Exception as e:  # tokenizers raises a bare Exception on bad files
        raise ModelDirError(f"not a Hugging Face tokenizer.json: {e}", src,
                            "pass the model's fast tokenizer (tokenizer.json)") from e
    original = dict(data)
    data["padding"] = None
    data["truncation"] = {"direction": "Right", "max_length": max_length, "strategy": "LongestFirst",
                          "stride": 0}
    dst.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return original


def import_onnx(source: str | Path, out_dir: str | Path, options: ImportOptions | None = None,
                report: Callable[[str], None] | None = None) -> Manifest:
    """Turn an ONNX encoder plus tokenizer.json (folder or zip/jar) into a validated bundle.

    Args:
        source: the folder or archive.
        out_dir: the bundle folder to create (written in a scratch sibling, renamed at the end).
        options: what the files do not tell (ImportOptions).
        report: called with progress lines.
    Returns:
        The written Manifest (parity numbers, precision, artifact id).
    Raises:
        ModelDirError: bad source (no tokenizer, unexpected inputs/outputs). ConfigError: an
        option is missing, out of range or disagrees with the graph (``dim``). ParityError:
        validation failed (no bundle is left).
    """
    from osreco.exporter.export import _install

    options = options or ImportOptions()
    say = report or log.info
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not options.overwrite:
        raise ConfigError("output folder already exists", out_dir, "pass --overwrite or pick another -o")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    bundle, scratch = tmp / "bundle", tmp / "src"
    try:
        bundle.mkdir(parents=True)
        scratch.mkdir()
        src = locate(source, scratch)
        say(f"importing {src.onnx.name} and {src.tokenizer.name} from {src.origin}")
        session = _session(src.onnx, options.threads, src.graph)
        inputs, output, static_dim = check_graph(session, src.graph)
        precision, positions, opset = graph_facts(src.onnx)
        st_pooling, st_normalize = _st_settings(src)
        pooling = options.pooling or st_pooling
        normalize = options.normalize if options.normalize is not None else st_normalize
        if pooling is None:
            raise ConfigError("cannot tell the pooling (no 1_Pooling/config.json)", src.origin,
                              "pass --pooling cls|mean|max as the model card says")
        if normalize is None:
            raise ConfigError("cannot tell whether vectors are normalized (no modules.json)", src.origin,
                              "pass --normalize or --no-normalize as the model card says")
        tok_data = _json(src.tokenizer)
        max_length = _max_length(src, tok_data, positions, options.max_length)
        _write_tokenizer(src.tokenizer, bundle / TOKENIZER_NAME, max_length)
        probe = session.run([output], {n: np.ones((1, 2), dtype=np.int64) for n in inputs})[0]
        dim = int(probe.shape[-1])
        if static_dim is not None and static_dim != dim:
            raise ModelDirError(f"graph declares dim {static_dim} but computes {dim}", src.graph,
                                "re-export the encoder")
        if options.dim is not None and options.dim != dim:
            raise ConfigError(f"the encoder's dimension is {dim}, the index expects {options.dim}", src.graph,
                              f"import an encoder with {options.dim}-d vectors, or rebuild the index for "
                              f"{dim}-d vectors (`--rebuild`)")
        shutil.copyfile(src.onnx, bundle / MODEL_NAME)
        config = _json(src.configs["config.json"]) if "config.json" in src.configs else {}
        manifest = Manifest(
            model_name=options.model_name or src.onnx.stem, task="embedding", dim=dim, pooling=pooling,
            normalize=bool(normalize), max_length=max_length, opset=opset, precision=precision,
            model_type=str(config.get("model_type", "")), input_names=inputs, output_name=output,
            pad_token_id=_pad_id(src.tokenizer, tok_data), language=options.language,
            created_by="osreco.exporter.onnx_import")
        write_manifest(bundle, manifest)
        say(f"validating against the source graph ({precision}, dim {dim}, {pooling} pooling, "
            f"normalize={bool(normalize)}, max_length {max_length}) …")
        parity = measure(src.onnx, src.tokenizer, bundle, options.threads)
        parity["source"] = src.origin.name
        say(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in parity.items()))
        check(parity, precision, out_dir)
        manifest = write_manifest(bundle, dataclasses.replace(manifest, parity=parity))
        _install(bundle, out_dir, options.overwrite)
    except ExporterError:
        raise
    except (OSError, RuntimeError, ValueError) as e:
        raise ExporterError(f"import failed: {e}", source, "see the message above") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
