"""The bundle's manifest: what the model is, how it was checked, and the hashes of its files.

A bundle folder holds ``model.onnx``, the tokenizer files and ``manifest.json``. The
manifest's ``artifact_id`` is a content hash over the model and tokenizer files, so two
bundles with the same id compute the same thing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from osreco.exporter.errors import BundleError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.onnx"
TOKENIZER_NAME = "tokenizer.json"
TASKS = ("embedding", "classification")
POOLINGS = ("mean", "cls", "max")
PRECISIONS = ("fp32", "int8", "fp16")
IMAGE_KEYS = ("model", "input_name", "output_name", "preprocessor")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Manifest:
    """Self-description of a model bundle (see docs/contracts.md).

    ``pooling`` is ``None`` for classification bundles; ``labels`` names their outputs.
    ``language`` is the language an encoder is for (``en``, ``zh``; empty: any), which picks
    the encoder a query in that language is embedded by.
    ``image`` is empty for text bundles; an image–text bundle describes its image tower there
    (``model``, ``input_name``, ``output_name``, ``preprocessor``, ``family``) and its text
    tower is the bundle's ``model.onnx`` (already pooled: ``output_name`` is 2-D).
    ``quantization`` is empty unless int8: the ``scheme`` and its settings, and ``calibration``
    (``source``, ``n_texts``, ``sha256`` of the texts; ``None`` for schemes that need none).
    """

    model_name: str
    task: str
    dim: int
    pooling: str | None
    normalize: bool
    max_length: int
    opset: int
    precision: str
    parity: dict = field(default_factory=dict)
    artifact_id: str = ""
    files: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    model_type: str = ""
    input_names: tuple = ("input_ids", "attention_mask")
    output_name: str = "last_hidden_state"
    pad_token_id: int = 0
    labels: tuple = ()
    optimize: str | None = None
    created_by: str = "osreco.exporter"
    language: str = ""
    image: dict = field(default_factory=dict)
    quantization: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Returns: a JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["input_names"] = list(self.input_names)
        d["labels"] = list(self.labels)
        return d

    @classmethod
    def from_dict(cls, data: dict, path: str | Path = MANIFEST_NAME) -> Manifest:
        """Build from a parsed manifest.json.

        Args:
            data: the parsed JSON object.
            path: the file it came from, for error messages.
        Returns:
            The Manifest.
        Raises:
            BundleError: newer format version, missing or invalid fields.
        """
        if not isinstance(data, dict):
            raise BundleError("manifest is not a JSON object", path, "re-export the bundle")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise BundleError("manifest has no integer format_version", path, "re-export the bundle")
        if version > FORMAT_VERSION:
            raise BundleError(
                f"bundle format_version {version} is newer than this osreco supports ({FORMAT_VERSION})",
                path, "upgrade osreco, or re-export the model with this version")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for key in ("input_names", "labels"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        try:
            manifest = cls(**kwargs)
        except TypeError as e:
            raise BundleError(f"manifest is missing fields: {e}", path, "re-export the bundle") from e
        manifest.check(path)
        return manifest

    def check(self, path: str | Path = MANIFEST_NAME) -> None:
        """Validate field values.

        Raises:
            BundleError: a field has a value outside its domain.
        """
        problems = []
        if self.task not in TASKS:
            problems.append(f"task {self.task!r} not in {TASKS}")
        if self.task == "embedding" and self.pooling not in POOLINGS:
            problems.append(f"pooling {self.pooling!r} not in {POOLINGS}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} not in {PRECISIONS}")
        if not isinstance(self.dim, int) or self.dim <= 0:
            problems.append(f"dim {self.dim!r} is not a positive integer")
        if not isinstance(self.max_length, int) or self.max_length <= 0:
            problems.append(f"max_length {self.max_length!r} is not a positive integer")
        if self.image:
            missing = [k for k in IMAGE_KEYS if not self.image.get(k)]
            if missing:
                problems.append(f"image tower lacks {', '.join(missing)}")
        if problems:
            raise BundleError("invalid manifest: " + "; ".join(problems), path, "re-export the bundle")


def sha256_file(path: Path) -> str:
    """Args: path: a file. Returns: its SHA-256 as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def hash_files(bundle_dir: Path) -> dict[str, str]:
    """Hash every regular file of a bundle except the manifest.

    Args:
        bundle_dir: the bundle folder.
    Returns:
        ``{file name: sha256}``, sorted by name.
    """
    return {p.name: sha256_file(p) for p in sorted(Path(bundle_dir).iterdir())
            if p.is_file() and p.name != MANIFEST_NAME}


def calibration_record(texts: list[str], source: str) -> dict:
    """What a calibrated int8 export records about its calibration data.

    Args:
        texts: the calibration texts, in the order used. source: where they came from.
    Returns:
        ``{"source", "n_texts", "sha256"}`` (the hash of the texts joined by newlines).
    """
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
    return {"source": source, "n_texts": len(texts), "sha256": digest}


def compute_artifact_id(files: dict[str, str]) -> str:
    """Content hash of a bundle: SHA-256 over the sorted ``name:sha256`` lines.

    Args:
        files: ``{file name: sha256}``.
    Returns:
        ``"sha256:"`` followed by 64 hex digits.
    """
    lines = "".join(f"{name}:{digest}\n" for name, digest in sorted(files.items()))
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def write_manifest(bundle_dir: Path, manifest: Manifest) -> Manifest:
    """Hash the bundle's files, fill in ``files`` and ``artifact_id``, write manifest.json.

    Args:
        bundle_dir: folder holding model.onnx and tokenizer files.
        manifest: the manifest without hashes.
    Returns:
        The manifest as written.
    """
    files = hash_files(bundle_dir)
    final = dataclasses.replace(manifest, files=files, artifact_id=compute_artifact_id(files))
    final.check(Path(bundle_dir) / MANIFEST_NAME)
    text = json.dumps(final.to_dict(), indent=2, sort_keys=True, ensure_ascii=False)
    (Path(bundle_dir) / MANIFEST_NAME).write_text(text + "\n", encoding="utf-8")
    return final


def load_manifest(bundle_dir: str | Path, verify: bool = True) -> Manifest:
    """Read a bundle's manifest and (by default) check its files against their hashes.

    Args:
        bundle_dir: the bundle folder.
        verify: hash model.onnx and the tokenizer files and compare with the manifest.
    Returns:
        The Manifest.
    Raises:
        BundleError: missing folder/manifest/file, bad JSON, hash mismatch, newer format.
    """
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not bundle_dir.is_dir():
        raise BundleError("bundle folder does not exist", bundle_dir,
                          "export one with `osreco export MODEL_DIR -o BUNDLE_DIR`")
    if not path.is_file():
        raise BundleError("bundle has no manifest.json", path,
                          "point at a folder written by `osreco export`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BundleError(f"cannot read manifest: {e}", path, "re-export the bundle") from e
    manifest = Manifest.from_dict(data, path)
    if verify:
        verify_files(bundle_dir, manifest)
    return manifest


def verify_files(bundle_dir: Path, manifest: Manifest) -> None:
    """Check that every file listed in the manifest exists and has its recorded hash.

    Raises:
        BundleError: naming the first missing or modified file.
    """
    for required in (MODEL_NAME, TOKENIZER_NAME, *(manifest.image[k] for k in ("model", "preprocessor")
                                                    if manifest.image)):
        if required not in manifest.files:
            raise BundleError(f"manifest lists no {required}", bundle_dir / MANIFEST_NAME,
                              "re-export the bundle")
    for name, digest in sorted(manifest.files.items()):
        file = Path(bundle_dir) / name
        if not file.is_file():
            raise BundleError("file listed in manifest.json is missing", file, "re-export the bundle")
        actual = sha256_file(file)
        if actual != digest:
            raise BundleError(
                f"file does not match manifest.json (sha256 {actual[:12]}… != {digest[:12]}…)",
                file, "the bundle was modified or corrupted: re-export it")
    if compute_artifact_id(manifest.files) != manifest.artifact_id:
        raise BundleError("artifact_id does not match the listed file hashes",
                          Path(bundle_dir) / MANIFEST_NAME, "re-export the bundle")
