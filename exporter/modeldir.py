"""Read what a Hugging Face model folder is: family, task, pooling, normalization, limits."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from osreco.exporter.errors import ModelDirError

SUPPORTED_TYPES = ("bert", "distilbert", "roberta", "xlm-roberta", "mpnet")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model",
                   "spiece.model")
_ST_ALLOWED = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class ModelInfo:
    """What the exporter needs to know about a model folder."""

    path: Path
    model_type: str
    architecture: str
    task: str
    dim: int
    pooling: str | None
    normalize: bool
    max_length: int
    labels: tuple
    sentence_transformers: bool


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelDirError(f"cannot read JSON: {e}", path, "repair or re-save the file") from e


def _st_pooling(model_dir: Path) -> tuple[str | None, bool | None, bool]:
    """Returns: (pooling, normalize, is_sentence_transformers) from modules.json."""
    modules_path = model_dir / "modules.json"
    if not modules_path.is_file():
        return None, None, False
    modules = _read_json(modules_path)
    pooling, normalize = None, False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in _ST_ALLOWED:
            raise ModelDirError(f"sentence-transformers module {kind!r} is not supported "
                                f"(only {', '.join(_ST_ALLOWED)})", modules_path,
                                "export the plain transformer and add the layer yourself")
        if kind == "Normalize":
            normalize = True
        if kind == "Pooling":
            cfg = _read_json(model_dir / module.get("path", "") / "config.json")
            modes = [m for m, key in (("cls", "pooling_mode_cls_token"),
                                      ("mean", "pooling_mode_mean_tokens"),
                                      ("max", "pooling_mode_max_tokens")) if cfg.get(key)]
            if len(modes) != 1 or cfg.get("pooling_mode_mean_sqrt_len_tokens"):
                raise ModelDirError(f"pooling config {cfg} is not exactly one of cls/mean/max",
                                    model_dir / module.get("path", "") / "config.json",
                                    "pass --pooling mean|cls|max")
            pooling = modes[0]
    return pooling, normalize, True


def _check_tokenizer(model_dir: Path) -> None:
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise ModelDirError(f"no tokenizer in the model folder (looked for {', '.join(TOKENIZER_FILES)})",
                            model_dir, "save the tokenizer next to the model "
                            "(tokenizer.save_pretrained(MODEL_DIR))")


def inspect_model_dir(model_dir: str | Path) -> ModelInfo:
    """Read config.json, sentence-transformers config and tokenizer presence.

    Args:
        model_dir: a local Hugging Face model folder.
    Returns:
        ModelInfo with defaults: embedding models pool by the sentence-transformers config
        or ``mean`` and normalize by it or ``True``.
    Raises:
        ModelDirError: missing folder/config/tokenizer, unsupported family or head.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError("model folder does not exist", model_dir,
                            "pass a local Hugging Face model folder (hub ids are not downloaded)")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ModelDirError("model folder has no config.json", config_path,
                            "save the model with model.save_pretrained(MODEL_DIR)")
    config = _read_json(config_path)
    model_type = str(config.get("model_type", ""))
    if model_type not in SUPPORTED_TYPES:
        raise ModelDirError(f"unsupported model_type {model_type!r} (supported: {', '.join(SUPPORTED_TYPES)})",
                            config_path, "use a bert, distilbert, roberta, xlm-roberta or mpnet model")
    architecture = (config.get("architectures") or [""])[0]
    if architecture.endswith("ForSequenceClassification"):
        task = "classification"
    elif architecture == "" or architecture.endswith("Model") or architecture.endswith("ForMaskedLM"):
        task = "embedding"
    else:
        raise ModelDirError(f"unsupported architecture {architecture!r}", config_path,
                            "export a base encoder (…Model) or a …ForSequenceClassification model")
    _check_tokenizer(model_dir)
    pooling, normalize, is_st = _st_pooling(model_dir)
    max_length = int(config.get("max_position_embeddings", 512))
    if model_type in ("roberta", "xlm-roberta", "mpnet"):
        max_length -= max(int(config.get("pad_token_id") or 1), 1) + 1  # positions start after padding_idx
    st_cfg = model_dir / "sentence_bert_config.json"
    if st_cfg.is_file():
        max_length = min(max_length, int(_read_json(st_cfg).get("max_seq_length", max_length)))
    hidden = int(config.get("hidden_size", config.get("dim", 0)))
    labels = tuple(str(v) for _, v in sorted((int(k), v) for k, v in
                                             (config.get("id2label") or {}).items()))
    if task == "classification":
        labels = labels or tuple(f"LABEL_{i}" for i in range(int(config.get("num_labels", 2))))
    return ModelInfo(path=model_dir, model_type=model_type, architecture=architecture or "Model",
                     task=task, dim=len(labels) if task == "classification" else hidden,
                     pooling=None if task == "classification" else (pooling or "mean"),
                     normalize=bool(normalize) if is_st else task == "embedding",
                     max_length=max_length, labels=labels if task == "classification" else (),
                     sentence_transformers=is_st)
