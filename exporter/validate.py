"""Parity of an exported bundle against the PyTorch model it came from.

Embeddings: min / mean cosine over held-out texts (English, Chinese, short, long, empty,
emoji only, a 1,000-word text that must truncate) and mean top-10 overlap of retrieval over
a small corpus. Classifiers: max absolute score difference and pairwise rank agreement.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from osreco.exporter.encoder import Encoder, l2_normalize, logits_to_scores
from osreco.exporter.errors import ParityError
from osreco.exporter.modeldir import ModelInfo

_WORDS = ("film story family space music night city river light history love war robot "
          "dream ocean winter garden train forest school").split()
LONG_TEXT = " ".join(_WORDS[i % len(_WORDS)] for i in range(1000))

PARITY_TEXTS: tuple[str, ...] = (
    "red running shoes",
    "90s sci-fi, no horror",
    "A heartwarming animated film about toys that come to life when nobody is watching.",
    "像玩具总动员那样适合孩子的电影",
    "便宜的红色跑鞋，不要耐克",
    "",
    "😀🎬🍿",
    "The quick brown fox jumps over the lazy dog. " * 12,
    "一部关于太空探索和家庭的科幻电影，讲述了宇航员在遥远星球上的冒险故事。" * 3,
    "x",
    LONG_TEXT,
)

_TOPICS = {
    "space": "astronauts travel to a distant planet aboard a starship",
    "toys": "toys come alive and go on an adventure with a boy",
    "war": "soldiers fight a brutal battle on the western front",
    "romance": "two strangers fall in love in paris one summer",
    "horror": "a haunted house terrifies a family at night",
    "crime": "a detective hunts a serial killer in a rainy city",
    "sports": "an underdog boxer trains for the fight of his life",
    "music": "a young drummer pushes himself under a harsh teacher",
    "nature": "a documentary about whales and the deep ocean",
    "cooking": "a rat dreams of becoming a chef in a famous restaurant",
}
_STYLES = ("A film where {}.", "Story: {}, told with humour.", "Classic drama: {}.",
           "In this animated movie {}.", "一部电影：{}。", "Based on true events, {}.")
RETRIEVAL_DOCS: tuple[str, ...] = tuple(s.format(t) for t in _TOPICS.values() for s in _STYLES)
RETRIEVAL_QUERIES: tuple[str, ...] = (
    "space adventure", "toys that talk", "world war battle", "love story in paris",
    "scary ghost house", "detective murder mystery", "boxing movie", "jazz drummer",
    "ocean animals documentary", "cooking rat", "太空冒险电影", "适合孩子的动画片")


@dataclass(frozen=True)
class Thresholds:
    """Pass marks. Embeddings: min cosine and mean top-10 overlap; classifiers: rank agreement
    and max absolute score difference."""

    min_cosine: float
    min_overlap: float
    min_rank_agreement: float
    max_abs_diff: float

    @classmethod
    def for_precision(cls, precision: str, min_cosine: float | None = None) -> Thresholds:
        """Args: precision: fp32|int8|fp16; min_cosine: override. Returns: the thresholds."""
        if precision == "fp32":
            return cls(min_cosine if min_cosine is not None else 0.9999, 0.9, 0.99, 1e-3)
        return cls(min_cosine if min_cosine is not None else 0.99, 0.9, 0.9, float("inf"))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Args: a, b: ``(n, dim)``. Returns: ``(n,)`` row-wise cosine (1.0 where both rows are 0)."""
    num = (a.astype(np.float64) * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)


def topk_overlap(ref_q: np.ndarray, ref_d: np.ndarray, got_q: np.ndarray, got_d: np.ndarray,
                 k: int = 10) -> float:
    """Mean fraction of each query's top-k documents (by cosine) that both sides share.

    Returns:
        A value in [0, 1].
    """
    def top(q: np.ndarray, d: np.ndarray) -> np.ndarray:
        scores = l2_normalize(q) @ l2_normalize(d).T
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]

    a, b = top(ref_q, ref_d), top(got_q, got_d)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))


def rank_agreement(ref: np.ndarray, got: np.ndarray) -> float:
    """Fraction of score pairs ordered the same way by both (ties in ref skipped).

    Returns:
        A value in [0, 1] (1.0 when there is nothing to compare).
    """
    i, j = np.triu_indices(len(ref), k=1)
    dr, dg = np.sign(ref[i] - ref[j]), np.sign(got[i] - got[j])
    valid = dr != 0
    return float((dr[valid] == dg[valid]).mean()) if valid.any() else 1.0


def _feed(batch: dict, input_names: tuple) -> dict:
    """Keep only the inputs the exported graph takes (distilbert/roberta have no token types)."""
    return {k: v for k, v in batch.items() if k in input_names}


def _torch_embed(info: ModelInfo, texts: list[str], max_length: int, pooling: str,
                 normalize: bool, input_names: tuple) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(info.path), local_files_only=True)
    model = AutoModel.from_pretrained(str(info.path), local_files_only=True).eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(texts), 16):
            batch = tok(texts[start:start + 16], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
            hidden = model(**_feed(batch, input_names)).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            if pooling == "mean":
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            elif pooling == "cls":
                vec = hidden[:, 0]
            else:
                vec = hidden.masked_fill(mask == 0, -1e9).max(1).values
            if normalize:
                vec = torch.nn.functional.normalize(vec, p=2, dim=1)
            outs.append(vec.float().numpy())
    return np.concatenate(outs)


def _torch_scores(info: ModelInfo, pairs: list[tuple[str, str]], max_length: int,
                  input_names: tuple) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(info.path), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(info.path), local_files_only=True).eval()
    with torch.no_grad():
        batch = tok([a for a, _ in pairs], [b for _, b in pairs], padding=True, truncation=True,
                    max_length=max_length, return_tensors="pt")
        return logits_to_scores(model(**_feed(batch, input_names)).logits.float().numpy())


def measure_parity(info: ModelInfo, bundle_dir: Path, threads: int = 2,
                   catalog: tuple[str, ...] = ()) -> dict:
    """Compare the bundle (through the runtime Encoder, on CPU) with PyTorch.

    Args:
        info: the source model folder. bundle_dir: the scratch bundle with its manifest.
        threads: CPU threads for both engines.
        catalog: optional catalog texts: adds ``catalog_top10_overlap``, the retrieval queries'
            top-10 overlap over these documents (reported, not gated: near-duplicate catalogs
            have many near-ties).
    Returns:
        Embeddings: ``min_cosine``, ``mean_cosine``, ``top10_overlap``, ``n_texts``;
        classifiers: ``max_abs_diff``, ``rank_agreement``, ``n_pairs``.
    """
    import torch

    torch.set_num_threads(threads)
    enc = Encoder(bundle_dir, threads=threads, device="cpu", cache_size=0)
    m = enc.manifest
    if m.task == "classification":
        pairs = [(q, d) for q in RETRIEVAL_QUERIES[:6] for d in RETRIEVAL_DOCS[::6]]
        pairs += [("", ""), ("😀", LONG_TEXT)]
        ref, got = _torch_scores(info, pairs, m.max_length, m.input_names), enc.score_pairs(pairs)
        return {"max_abs_diff": float(np.abs(ref - got).max()),
                "rank_agreement": rank_agreement(ref, got), "n_pairs": len(pairs)}
    assert m.pooling is not None, "Manifest.check: an embedding bundle names its pooling"
    texts = list(PARITY_TEXTS)
    queries, docs = list(RETRIEVAL_QUERIES), list(RETRIEVAL_DOCS)
    ref = _torch_embed(info, texts + queries + docs, m.max_length, m.pooling, m.normalize, m.input_names)
    # Each text alone (how queries run) and all in naive mixed batches of 64 (worst padding):
    # dynamic int8 scales activations per batch, so batch company changes its output.
    alone = np.stack([enc.encode_items([t])[0] for t in texts + queries])
    mixed = enc.encode_batches_naive(texts + queries + docs, batch_size=64)
    n, nq = len(texts), len(queries)
    all_cos = np.concatenate([cosine_rows(ref[:n + nq], alone), cosine_rows(ref, mixed)])
    out = {"min_cosine": float(all_cos.min()), "mean_cosine": float(all_cos.mean()),
           "top10_overlap": topk_overlap(ref[n:n + nq], ref[n + nq:], alone[n:], mixed[n + nq:], k=10),
           "n_texts": n + nq + len(docs), "n_queries": nq, "n_docs": len(docs)}
    if catalog:
        ref_docs = _torch_embed(info, list(catalog), m.max_length, m.pooling, m.normalize, m.input_names)
        out["catalog_top10_overlap"] = topk_overlap(ref[n:n + nq], ref_docs, alone[n:],
                                                    enc.encode_items(list(catalog)), k=10)
        out["n_catalog_docs"] = len(catalog)
    return out


def check_parity(parity: dict, precision: str, thresholds: Thresholds, bundle_dir: Path) -> None:
    """Raise when the measured parity is below the pass marks.

    Raises:
        ParityError: naming each failed measure and its threshold.
    """
    failed = []
    if "min_cosine" in parity:
        if parity["min_cosine"] < thresholds.min_cosine:
            failed.append(f"min cosine {parity['min_cosine']:.6f} < {thresholds.min_cosine}")
        if parity.get("image_min_cosine", 1.0) < thresholds.min_cosine:
            failed.append(f"image tower min cosine {parity['image_min_cosine']:.6f} < {thresholds.min_cosine}")
        if precision != "fp32" and parity["top10_overlap"] < thresholds.min_overlap:
            failed.append(f"top-10 overlap {parity['top10_overlap']:.3f} < {thresholds.min_overlap}")
    else:
        if parity["rank_agreement"] < thresholds.min_rank_agreement:
            failed.append(f"rank agreement {parity['rank_agreement']:.3f} < {thresholds.min_rank_agreement}")
        if parity["max_abs_diff"] > thresholds.max_abs_diff:
            failed.append(f"max abs diff {parity['max_abs_diff']:.2e} > {thresholds.max_abs_diff}")
    if failed:
        fix = {"int8": "use --int8-scheme blockwise (the default), or export fp32",
               "fp16": "export fp32 (fp16 overflows in this model)"}.get(
            precision, "use --optimize O2 or no --optimize (O3 approximates GELU)")
        raise ParityError(f"{precision} export failed validation: " + "; ".join(failed), parity,
                          bundle_dir, fix)


def format_table(parity: dict, precision: str, thresholds: Thresholds) -> str:
    """Args: parity: measured numbers. Returns: a markdown table with pass marks."""
    rows = ["| measure | value | pass mark |", "|---|---|---|"]
    marks = {"min_cosine": f">= {thresholds.min_cosine}", "image_min_cosine": f">= {thresholds.min_cosine}",
             "top10_overlap": f">= {thresholds.min_overlap}" if precision != "fp32" else "(reported)",
             "catalog_top10_overlap": "(reported)",
             "rank_agreement": f">= {thresholds.min_rank_agreement}",
             "max_abs_diff": f"<= {thresholds.max_abs_diff}"}
    for key, value in parity.items():
        shown = f"{value:.6f}" if isinstance(value, float) else str(value)
        rows.append(f"| {key} | {shown} | {marks.get(key, '')} |")
    return "\n".join(rows)
