"""OpenSearch ml-commons packaging: the model zip and its register request body.

ml-commons' ONNX text-embedding runtime reads a zip with exactly one ``.onnx`` file and
``tokenizer.json`` at its root, feeds ``input_ids``/``attention_mask`` (plus
``token_type_ids`` only for ``model_type`` bert/albert), takes the graph's first output as
token vectors and pools/normalizes them as ``model_config`` says. The zip must therefore
hold a plain graph (no ORT-only fused operators) whose first output is last_hidden_state.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from osreco.exporter.errors import MLCommonsError
from osreco.exporter.manifest import MODEL_NAME, TOKENIZER_NAME, Manifest, sha256_file

ZIP_NAME = "model.zip"
REGISTER_NAME = "register.json"
_POOLING = {"mean": "MEAN", "cls": "CLS", "max": "MAX"}
# ml-commons feeds token_type_ids only to these model types; others must not take that input.
_TOKEN_TYPE_TYPES = ("bert", "albert")


def ml_commons_model_type(manifest: Manifest) -> str:
    """The model_type to register: ``bert`` iff the graph takes token_type_ids.

    Raises:
        MLCommonsError: the graph takes token_type_ids but is no bert-like model.
    """
    takes_types = "token_type_ids" in manifest.input_names
    if takes_types:
        return manifest.model_type if manifest.model_type in _TOKEN_TYPE_TYPES else "bert"
    return manifest.model_type or "roberta"


def register_body(manifest: Manifest, zip_sha256: str, zip_size: int, url: str | None = None,
                  version: str = "1.0.0") -> dict:
    """Build the ``POST _plugins/_ml/models/_register`` body for a local ONNX model.

    Args:
        manifest: the bundle's manifest (embedding task).
        zip_sha256: SHA-256 of the zip. zip_size: its size in bytes.
        url: where ml-commons fetches the zip (e.g. ``file:///tmp/x/model.zip``); omit for
            chunk upload.
        version: the model version string.
    Returns:
        The JSON body.
    Raises:
        MLCommonsError: not an embedding bundle.
    """
    if manifest.task != "embedding":
        raise MLCommonsError("ml-commons text embedding needs an embedding bundle, not a "
                             f"{manifest.task} one", fix="export an embedding model with --ml-commons")
    assert manifest.pooling is not None, "Manifest.check: an embedding bundle names its pooling"
    body = {
        "name": manifest.model_name,
        "version": version,
        "description": f"osreco bundle {manifest.artifact_id} ({manifest.precision})",
        "function_name": "TEXT_EMBEDDING",
        "model_format": "ONNX",
        "model_content_hash_value": zip_sha256,
        "model_content_size_in_bytes": zip_size,
        "model_config": {
            "model_type": ml_commons_model_type(manifest),
            "embedding_dimension": manifest.dim,
            "framework_type": "sentence_transformers",
            "pooling_mode": _POOLING[manifest.pooling],
            "normalize_result": bool(manifest.normalize),
            "model_max_length": manifest.max_length,
            "all_config": json.dumps({"osreco_artifact_id": manifest.artifact_id,
                                      "model_type": manifest.model_type,
                                      "max_length": manifest.max_length}),
        },
    }
    if url:
        body["url"] = url
    return body


def write_ml_commons(bundle_dir: Path, out_dir: Path, manifest: Manifest) -> dict:
    """Write ``model.zip`` (model.onnx + tokenizer.json at the root) and ``register.json``.

    Args:
        bundle_dir: the bundle (model.onnx, tokenizer.json).
        out_dir: folder for the zip and body (created).
        manifest: the bundle's manifest.
    Returns:
        The register body (without ``url``: add it, or use chunk upload).
    Raises:
        MLCommonsError: classification bundle, ORT-only graph, or missing files.
    """
    if manifest.optimize in ("O2", "O3") or manifest.precision == "fp16":
        raise MLCommonsError("O2/O3 and fp16 graphs use ONNX Runtime-only operators",
                             bundle_dir, "export a plain (or O1 / int8) graph for ml-commons")
    for name in (MODEL_NAME, TOKENIZER_NAME):
        if not (Path(bundle_dir) / name).is_file():
            raise MLCommonsError(f"bundle lacks {name}", Path(bundle_dir) / name, "re-export the bundle")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir / ZIP_NAME
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(Path(bundle_dir) / MODEL_NAME, arcname=MODEL_NAME)
        zf.write(Path(bundle_dir) / TOKENIZER_NAME, arcname=TOKENIZER_NAME)
    body = register_body(manifest, sha256_file(zip_path), zip_path.stat().st_size)
    (out_dir / REGISTER_NAME).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return body


def check_zip(zip_path: Path) -> list[str]:
    """Check the ml-commons zip layout.

    Returns:
        The zip's member names.
    Raises:
        MLCommonsError: not exactly one .onnx plus tokenizer.json at the root.
    """
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    onnx_files = [n for n in names if n.endswith(".onnx")]
    if len(onnx_files) != 1 or "/" in onnx_files[0] or TOKENIZER_NAME not in names:
        raise MLCommonsError(f"zip must hold exactly one .onnx and tokenizer.json at its root, has {names}",
                             zip_path, "rebuild it with `osreco export --ml-commons`")
    return names


ML_SETTINGS = {"plugins.ml_commons.allow_registering_model_via_url": True,
               "plugins.ml_commons.only_run_on_ml_node": False,
               "plugins.ml_commons.native_memory_threshold": 100}


def wait_for_task(client, task_id: str, timeout_s: float = 180.0) -> dict:
    """Poll ``_plugins/_ml/tasks/<id>`` until it leaves CREATED/RUNNING.

    Args:
        client: an opensearch-py client. task_id: the ml-commons task.
        timeout_s: give up after this many seconds.
    Returns:
        The final task document (``state`` COMPLETED or FAILED, ``error`` when failed).
    Raises:
        MLCommonsError: the task did not finish in time.
    """
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        task = client.transport.perform_request("GET", f"/_plugins/_ml/tasks/{task_id}")
        if task.get("state") not in ("CREATED", "RUNNING"):
            return task
        if time.monotonic() > deadline:
            raise MLCommonsError(f"ml-commons task {task_id} still {task.get('state')} after {timeout_s}s",
                                 fix="check the node's log")
        time.sleep(1.0)


def register_and_deploy(client, body: dict, timeout_s: float = 180.0) -> tuple[str, dict]:
    """Register a model (body from ``register_body`` with ``url``) and deploy it.

    Args:
        client: an opensearch-py client for a node with ml-commons.
        body: the register body including ``url``.
    Returns:
        (model_id, the deploy task document — check its ``state``).
    Raises:
        MLCommonsError: registration failed (with ml-commons' error text).
    """
    task = client.transport.perform_request("POST", "/_plugins/_ml/models/_register", body=body)
    done = wait_for_task(client, task["task_id"], timeout_s)
    if done.get("state") != "COMPLETED":
        raise MLCommonsError(f"registration failed: {done.get('error')}", body.get("url"),
                             "check the zip and the ml-commons settings")
    model_id = done["model_id"]
    deploy = client.transport.perform_request("POST", f"/_plugins/_ml/models/{model_id}/_deploy")
    return model_id, wait_for_task(client, deploy["task_id"], timeout_s)
