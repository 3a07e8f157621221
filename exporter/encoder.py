"""The runtime: run a bundle with onnxruntime and tokenizers only (never torch).

Example:
    >>> enc = Encoder("bundles/minilm", threads=2)
    >>> enc.encode_queries(["red running shoes"]).shape
    (1, 384)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from osreco.exporter.errors import BundleError, ConfigError, RuntimeEnvError
from osreco.exporter.image import ImagePreprocessor, decode_image
from osreco.exporter.manifest import MODEL_NAME, TOKENIZER_NAME, Manifest, load_manifest

DEVICES = ("auto", "cpu", "cuda")


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str | None) -> np.ndarray:
    """Pool token vectors into one vector per text.

    Args:
        hidden: ``(batch, seq, dim)`` last hidden state.
        mask: ``(batch, seq)`` attention mask (1 = real token).
        mode: ``mean`` (masked average), ``cls`` (first token) or ``max`` (masked max).
    Returns:
        ``(batch, dim)`` float32.
    Raises:
        ConfigError: unknown mode (``None``: a classification bundle's).
    """
    hidden = hidden.astype(np.float32, copy=False)
    if hidden.ndim == 2:  # the tower pooled already (an image–text bundle's text tower)
        return np.ascontiguousarray(hidden)
    m = mask.astype(np.float32)[:, :, None]
    if mode == "mean":
        return (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    if mode == "cls":
        return np.ascontiguousarray(hidden[:, 0, :])
    if mode == "max":
        return np.where(m > 0, hidden, np.float32(-1e9)).max(axis=1)
    raise ConfigError(f"unknown pooling {mode!r}", fix="use mean, cls or max")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Args: x: ``(n, dim)``. Returns: rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.clip(norms, 1e-12, None)).astype(np.float32)


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Group indices into batches of similar token length (cuts padding).

    Args:
        lengths: token count per text.
        batch_size: texts per batch.
    Returns:
        Index arrays, longest texts first; together they cover every index once.
    """
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(encodings: Sequence, pad_id: int) -> dict[str, np.ndarray]:
    """Right-pad tokenizer encodings to the longest one.

    Args:
        encodings: ``tokenizers.Encoding`` objects (no padding applied).
        pad_id: the pad token id.
    Returns:
        ``input_ids``, ``attention_mask``, ``token_type_ids`` as int64 ``(batch, longest)``.
    """
    width = max(1, max(len(e.ids) for e in encodings))
    ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    types = np.zeros((len(encodings), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        n = len(enc.ids)
        ids[row, :n] = enc.ids
        mask[row, :n] = 1
        types[row, :n] = enc.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise RuntimeEnvError("CUDAExecutionProvider is not available in this onnxruntime",
                              fix="install osreco[gpu] (onnxruntime-gpu) on a machine with a GPU")
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class Encoder:
    """Runs a bundle: tokenization, ONNX inference, pooling and normalization.

    Args:
        bundle_dir: a folder written by ``export_model``.
        threads: CPU intra-op threads (None = onnxruntime's default).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        cache_size: entries in the query LRU cache (0 disables it).
        verify: check file hashes against the manifest when loading.
    Raises:
        BundleError: the bundle is missing, tampered with or too new.
        ConfigError: bad argument. RuntimeEnvError: onnxruntime/CUDA missing.
    """

    def __init__(self, bundle_dir: str | Path, threads: int | None = None, device: str = "auto",
                 cache_size: int = 4096, verify: bool = True):
        if device not in DEVICES:
            raise ConfigError(f"device {device!r} not in {DEVICES}", fix="use auto, cpu or cuda")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads must be a positive integer, got {threads!r}")
        if not isinstance(cache_size, int) or cache_size < 0:
            raise ConfigError(f"cache_size must be >= 0, got {cache_size!r}")
        self.bundle_dir = Path(bundle_dir)
        self.manifest: Manifest = load_manifest(self.bundle_dir, verify=verify)
        self._tokenizer = self._load_tokenizer()
        self._session = self._load_session(threads, device)
        self.providers: list[str] = self._session.get_providers()
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._image_session = self._load_session(threads, device, image["model"]) if (
            image := self.manifest.image) else None
        self._preprocess = ImagePreprocessor.from_file(self.bundle_dir / image["preprocessor"]) if image else None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """Output vector length (number of labels for classification bundles)."""
        return self.manifest.dim

    @property
    def artifact_id(self) -> str:
        """The bundle's content hash."""
        return self.manifest.artifact_id

    @property
    def device(self) -> str:
        """``cuda`` when the CUDA provider runs the session, else ``cpu``."""
        return "cuda" if self.providers and self.providers[0] == "CUDAExecutionProvider" else "cpu"

    def _load_tokenizer(self):
        from tokenizers import Tokenizer

        path = self.bundle_dir / TOKENIZER_NAME
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise BundleError(f"cannot load tokenizer: {e}", path, "re-export the bundle") from e
        tok.no_padding()
        tok.enable_truncation(max_length=self.manifest.max_length)
        return tok

    def _load_session(self, threads: int | None, device: str, name: str = MODEL_NAME):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise RuntimeEnvError("onnxruntime is not installed",
                                  fix="pip install 'osreco[cpu]' (or [gpu])") from e
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        path = self.bundle_dir / name
        try:
            return ort.InferenceSession(str(path), sess_options=opts, providers=_providers(device))
        except RuntimeEnvError:
            raise
        except Exception as e:  # onnxruntime raises its own untyped errors
            raise BundleError(f"onnxruntime cannot load the model: {e}", path,
                              "re-export the bundle") from e

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {name: feed[name] for name in self._inputs}
        if self.device == "cuda":
            binding = self._session.io_binding()
            for name, value in inputs.items():
                binding.bind_cpu_input(name, value)
            binding.bind_output(self.manifest.output_name, "cuda")
            self._session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        return self._session.run([self.manifest.output_name], inputs)[0]

    def _embed(self, encodings: Sequence) -> np.ndarray:
        feed = pad_batch(encodings, self.manifest.pad_token_id)
        hidden = self._run(feed)
        vectors = pool(hidden, feed["attention_mask"], self.manifest.pooling)
        return l2_normalize(vectors) if self.manifest.normalize else vectors.astype(np.float32)

    def _require(self, task: str) -> None:
        if self.manifest.task != task:
            raise ConfigError(f"this is a {self.manifest.task} bundle, not {task}",
                              self.bundle_dir, "use a bundle exported for this task")

    def encode_items(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed many texts, batching texts of similar length together.

        Args:
            texts: item texts.
            batch_size: texts per inference batch.
        Returns:
            ``(len(texts), dim)`` float32 in input order.
        Raises:
            ConfigError: not an embedding bundle, bad batch size or non-string input.
        """
        self._require("embedding")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        texts = _check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(texts)
        for idx in length_buckets([len(e.ids) for e in encodings], batch_size):
            out[idx] = self._embed([encodings[i] for i in idx])
        return out

    def encode_batches_naive(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts in fixed-size batches in input order (no bucketing; for benchmarks).

        Args/Returns: as ``encode_items``.
        """
        self._require("embedding")
        texts = _check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            out[start:start + batch_size] = self._embed(
                self._tokenizer.encode_batch(texts[start:start + batch_size]))
        return out

    def encode_queries(self, texts: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """Embed short query texts, answering repeats from an LRU cache.

        Args:
            texts: query texts.
            batch_size: texts per inference batch for cache misses.
        Returns:
            ``(len(texts), dim)`` float32 in input order (copies; safe to modify).
        """
        self._require("embedding")
        texts = _check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        fresh: dict[str, np.ndarray] = {}
        for start in range(0, len(missing), batch_size):
            chunk = missing[start:start + batch_size]
            vectors = self._embed(self._tokenizer.encode_batch(chunk))
            fresh.update(zip(chunk, vectors))
        with self._lock:
            for row, text in enumerate(texts):
                vec = fresh.get(text)
                if vec is None:
                    vec = self._cache[text]
                    self._cache.move_to_end(text)
                out[row] = vec
            for text, vec in fresh.items():
                if self._cache_size:
                    self._cache[text] = vec
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    @property
    def has_images(self) -> bool:
        """Whether the bundle has an image tower (``encode_images`` works)."""
        return self._image_session is not None

    def require_images(self, who: str = "embedding images") -> None:
        """Fail now (at start-up) when the bundle cannot embed images.

        Raises:
            ConfigError: the bundle has no image tower, naming it and the fix.
        """
        if self._image_session is None:
            raise ConfigError(f"{who} needs an image–text bundle, but {self.manifest.model_name!r} has no "
                              "image tower", self.bundle_dir,
                              "export a CLIP/SigLIP/VisionTextDualEncoder folder with `osreco export` "
                              "(or `osreco train image-text`) and pass that bundle")

    def encode_images(self, images: Sequence[Any], batch_size: int = 16) -> np.ndarray:
        """Embed images with the bundle's image tower (PIL + numpy preprocessing, no torch).

        Args:
            images: PIL images, or raw bytes (decoded with ``decode_image``'s default limits).
            batch_size: images per inference batch.
        Returns:
            ``(len(images), dim)`` float32, L2-normalized when the bundle normalizes.
        Raises:
            ConfigError: no image tower, bad batch size. ImageInputError: undecodable bytes.
        """
        self.require_images()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        pics = [decode_image(bytes(x), source=f"image #{i}") if isinstance(x, (bytes, bytearray)) else x
                for i, x in enumerate(images)]
        out = np.zeros((len(pics), self.dim), dtype=np.float32)
        assert self._image_session is not None and self._preprocess is not None
        spec = self.manifest.image
        for start in range(0, len(pics), batch_size):
            pixels = self._preprocess(pics[start:start + batch_size])
            vectors = self._image_session.run([spec["output_name"]], {spec["input_name"]: pixels})[0]
            vectors = vectors.astype(np.float32)
            out[start:start + len(pixels)] = l2_normalize(vectors) if self.manifest.normalize else vectors
        return out

    def cache_info(self) -> dict[str, int]:
        """Returns: ``{"size": entries, "capacity": cache_size}``."""
        return {"size": len(self._cache), "capacity": self._cache_size}

    def score_pairs(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        """Score (query, text) pairs with a classification bundle.

        One label: the logit. Two labels: logit(label 1) - logit(label 0) (log-odds of
        relevance). More labels: the last label's log-softmax.

        Args:
            pairs: (query, text) tuples.
            batch_size: pairs per inference batch.
        Returns:
            ``(len(pairs),)`` float32 scores in input order.
        """
        self._require("classification")
        pairs = [(str(a), str(b)) for a, b in pairs]
        out = np.zeros(len(pairs), dtype=np.float32)
        if not pairs:
            return out
        encodings = self._tokenizer.encode_batch(pairs)
        for idx in length_buckets([len(e.ids) for e in encodings], batch_size):
            feed = pad_batch([encodings[i] for i in idx], self.manifest.pad_token_id)
            out[idx] = logits_to_scores(self._run(feed))
        return out


def logits_to_scores(logits: np.ndarray) -> np.ndarray:
    """Args: logits: ``(n, labels)``. Returns: ``(n,)`` float32 relevance scores."""
    logits = logits.astype(np.float64)
    if logits.shape[1] == 1:
        return logits[:, 0].astype(np.float32)
    if logits.shape[1] == 2:
        return (logits[:, 1] - logits[:, 0]).astype(np.float32)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logsm = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return logsm[:, -1].astype(np.float32)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ConfigError("pass a list of texts, not a single string", fix="wrap it: [text]")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ConfigError(f"text #{i} is {type(t).__name__}, not str")
    return out
