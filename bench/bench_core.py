"""Per-request cost of the sidecar's pure core: parse, build, fuse, MMR, explain.

Run: ``python -m bench.bench_core [--rounds 30]``. Contenders of one row group run alternately
in one process after a warm-up, single-threaded; the table shows medians in microseconds and
the ratio to the group's first row.
"""

from __future__ import annotations

import os

# One BLAS thread, set before numpy loads: on a busy machine OpenBLAS's thread pool makes
# small matmuls far slower, which would be all noise (docs/benchmarks.md, "Sidecar core").
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from osreco.plugin.explain import HistoryItem, explain
from osreco.plugin.fusion import FusionSettings, fuse, mmr
from osreco.plugin.intent.parser import parse_intent
from osreco.plugin.intent.vocab import Vocabulary
from osreco.plugin.query import QueryOptions, build_msearch

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden"


def _time(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e6


def _groups() -> dict[str, dict[str, Callable[[], object]]]:
    vocabs = {k: Vocabulary.from_values(v) for k, v in json.loads((GOLDEN / "intent_vocab.json").read_text()).items()}
    big = Vocabulary.from_values({"brand": [f"brand{i:04d}" for i in range(1000)],
                                  "category": [f"category {i}" for i in range(300)], "color": ["red", "blue"]})
    cases = [json.loads(x) for x in (GOLDEN / "intents.jsonl").read_text(encoding="utf-8").splitlines() if x]
    en = [c for c in cases if c["language"] == "en"]
    zh = [c for c in cases if c["language"] == "zh"]
    rng = np.random.default_rng(0)
    hits = {s: [{"_id": str(i), "_score": float(100 - j), "_source": {"price": float(i)}}
                for j, i in enumerate(rng.permutation(300)[:100])] for s in ("bm25", "dense", "cf")}
    vecs = {str(i): v / np.linalg.norm(v) for i, v in enumerate(rng.normal(size=(300, 384)).astype(np.float32))}
    intent = parse_intent(cases[0]["q"], vocabs[cases[0]["vocab"]])
    opts = QueryOptions("items")
    qv, uv = vecs["1"], vecs["2"][:64]
    fused = fuse(hits, FusionSettings())
    history = [HistoryItem(str(i), f"t{i}", vecs[str(i)]) for i in range(20)]

    def parse_all(group, vocab=None):
        return lambda: [parse_intent(c["q"], vocab or vocabs[c["vocab"]]) for c in group]

    return {
        "parse (per query)": {"rules, English golden": parse_all(en), "rules, Chinese golden": parse_all(zh),
                              "rules, English, 1,300-value vocabulary": parse_all(en, big)},
        "build + fuse": {"build_msearch (3 signals, 384-d)": lambda: build_msearch(intent, opts, qv, uv),
                         "fuse rrf (3 x 100 hits)": lambda: fuse(hits, FusionSettings()),
                         "fuse linear (3 x 100 hits)": lambda: fuse(hits, FusionSettings(method="linear"))},
        "re-rank + explain": {"mmr top 10 of 100 (384-d)": lambda: mmr(fused, vecs, 0.7, k=10),
                              "explain 10 results (20-item history)": lambda: [
                                  explain(c, intent, vecs[c.item_id], history) for c in fused[:10]]},
    }


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    per = {"rules, English golden": 0, "rules, Chinese golden": 0, "rules, English, 1,300-value vocabulary": 0}
    cases = [json.loads(x) for x in (GOLDEN / "intents.jsonl").read_text(encoding="utf-8").splitlines() if x]
    n_en = sum(c["language"] == "en" for c in cases)
    per.update({"rules, English golden": n_en, "rules, Chinese golden": len(cases) - n_en,
                "rules, English, 1,300-value vocabulary": n_en})
    print("| group | contender | median µs | ratio |\n|---|---|---|---|")
    for group, fns in _groups().items():
        for fn in fns.values():
            fn()  # warm-up
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                times[name].append(_time(fn) / (per.get(name) or 1))
        first = statistics.median(next(iter(times.values())))
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"| {group} | {name} | {med:.1f} | {med / first:.2f} |")


if __name__ == "__main__":
    main()
