"""Validation of an imported ONNX encoder: does the bundle reproduce its source, and can it retrieve?

The reference is the source graph itself, run by onnxruntime on its own tokenizer one text at a
time (no padding) and pooled here; the bundle runs through the runtime ``Encoder`` alone (the
query path) and in one padded batch (the ingest path). The smoke test asks each topic query of
the exporter's retrieval corpus for its nearest document.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from osreco.exporter.errors import ParityError
from osreco.exporter.manifest import Manifest

MAX_ABS_DIFF = 1e-5
MIN_SMOKE_ACCURACY = 0.5


def reference_embeddings(onnx: Path, tokenizer: Path, texts: list[str], manifest: Manifest,
                         threads: int) -> np.ndarray:
    """The source model's own vectors: its graph on its tokenizer, one text at a time (no padding)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    session = ort.InferenceSession(str(onnx), sess_options=opts, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(str(tokenizer))
    tok.no_padding()
    tok.enable_truncation(max_length=manifest.max_length)
    out = []
    for text in texts:
        enc = tok.encode(text)
        ids = np.asarray([enc.ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                "token_type_ids": np.asarray([enc.type_ids], dtype=np.int64)}
        hidden = session.run([manifest.output_name], {n: feed[n] for n in manifest.input_names})[0][0]
        vec = {"cls": hidden[0], "mean": hidden.mean(axis=0), "max": hidden.max(axis=0)}[str(manifest.pooling)]
        vec = vec.astype(np.float64)
        if manifest.normalize:
            vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
        out.append(vec)
    return np.stack(out)


def smoke_accuracy(query_vecs: np.ndarray, doc_vecs: np.ndarray, query_topics: list[int],
                   doc_topics: list[int]) -> float:
    """Fraction of queries whose nearest document (cosine) is about the query's topic."""
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)

    best = np.argmax(unit(query_vecs) @ unit(doc_vecs).T, axis=1)
    return float(np.mean([doc_topics[b] == q for b, q in zip(best, query_topics)]))


def measure(onnx: Path, tokenizer: Path, bundle: Path, threads: int) -> dict:
    """Compare the bundle's runtime with the source graph and run the retrieval smoke test.

    Returns:
        ``max_abs_diff`` (each text alone, the query path), ``batched_max_abs_diff`` and
        ``min_cosine`` (mixed batches with padding, the ingest path), ``smoke_top1``, counts.
    """
    from osreco.exporter.encoder import Encoder
    from osreco.exporter.validate import PARITY_TEXTS, RETRIEVAL_DOCS, RETRIEVAL_QUERIES, cosine_rows

    enc = Encoder(bundle, threads=threads, device="cpu", cache_size=0)
    texts = list(PARITY_TEXTS) + list(RETRIEVAL_QUERIES)
    ref = reference_embeddings(onnx, tokenizer, texts, enc.manifest, threads)
    alone = np.stack([enc.encode_queries([t])[0] for t in texts])
    batched = enc.encode_batches_naive(texts, batch_size=len(texts))
    n_topics = len(RETRIEVAL_DOCS) // 6
    docs = enc.encode_items(list(RETRIEVAL_DOCS))
    queries = enc.encode_items(list(RETRIEVAL_QUERIES[:n_topics]))
    return {"max_abs_diff": float(np.abs(ref - alone).max()),
            "batched_max_abs_diff": float(np.abs(ref - batched).max()),
            "min_cosine": float(cosine_rows(ref, batched).min()),
            "smoke_top1": smoke_accuracy(queries, docs, list(range(n_topics)),
                                         [i // 6 for i in range(len(RETRIEVAL_DOCS))]),
            "n_texts": len(texts), "n_queries": n_topics, "n_docs": len(RETRIEVAL_DOCS)}


def check(parity: dict, precision: str, bundle_dir: Path) -> None:
    """Raise ParityError when the bundle does not reproduce its source or fails the smoke test."""
    failed = []
    if parity["max_abs_diff"] > MAX_ABS_DIFF:
        failed.append(f"max abs diff {parity['max_abs_diff']:.2e} > {MAX_ABS_DIFF}")
    # int8 sources scale activations per batch, so batch company moves their vectors: reported only.
    min_cos = {"fp32": 0.9999, "fp16": 0.99}.get(precision)
    if min_cos is not None and parity["min_cosine"] < min_cos:
        failed.append(f"batched min cosine {parity['min_cosine']:.6f} < {min_cos}")
    if parity["smoke_top1"] < MIN_SMOKE_ACCURACY:
        failed.append(f"retrieval smoke top-1 {parity['smoke_top1']:.2f} < {MIN_SMOKE_ACCURACY}")
    if failed:
        raise ParityError("imported encoder failed validation: " + "; ".join(failed), parity, bundle_dir,
                          "check --pooling/--normalize/--max-length against the model card "
                          "(a wrong pooling fails the smoke test)")
