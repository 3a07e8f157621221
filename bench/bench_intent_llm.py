"""The intent parsers on the golden intents: rules, a real local LLM, and the two combined.

    python -m bench.bench_intent_llm                    # starts SmolLM2-135M under llama.cpp's server
    python -m bench.bench_intent_llm --url http://127.0.0.1:8000/v1 --limit 30

For each of the golden cases (``tests/golden/intents.jsonl``, vocabularies and titles beside
it) each parser gives the intent; accuracy is the exact match of the filters, ranges and
exclusions (``osreco.evaluation.intent.score_intents``), latency the wall time of one parse
(p50, p95). ``llm``: the LLM for every query (schema-constrained JSON, validated, rules on
failure); ``combined``: the rules first, the LLM only when they leave words unexplained.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"


def run(url: str, limit: int | None, timeout_s: float) -> dict[str, object]:
    from osreco.evaluation.intent import read_golden, score_intents
    from osreco.plugin.intent.llm import parse_with_llm
    from osreco.plugin.intent.parser import parse_intent
    from osreco.plugin.intent.titles import TitleIndex
    from osreco.plugin.intent.vocab import Vocabulary

    cases = read_golden(GOLDEN / "intents.jsonl")[:limit]
    raw = json.loads((GOLDEN / "intent_vocab.json").read_text(encoding="utf-8"))
    vocabs = {n: Vocabulary.from_values({f: v for f, v in facets.items() if v}) for n, facets in raw.items()}
    titles = {n: TitleIndex.from_rows(rows)
              for n, rows in json.loads((GOLDEN / "intent_titles.json").read_text(encoding="utf-8")).items()}
    out: dict[str, object] = {"cases": len(cases), "url": url, "timeout_s": timeout_s}
    for mode in ("rules", "llm", "combined"):
        ms: list[float] = []
        stats = {"llm_used": 0, "fallbacks": 0}

        def parse(q: str, language: str | None, vocab: str | None, mode: str = mode, ms: list[float] = ms,
                  stats: dict[str, int] = stats) -> dict[str, object]:
            t = time.perf_counter()
            if mode == "rules":
                intent = parse_intent(q, vocabs[str(vocab)], language, titles=titles.get(str(vocab)))
            else:
                intent = parse_with_llm(q, vocabs[str(vocab)], language, url=url, timeout_s=timeout_s, mode=mode,
                                        model="smollm2", titles=titles.get(str(vocab)))
                stats["llm_used"] += intent.parser == "llm"
                stats["fallbacks"] += intent.fallback_reason is not None
            ms.append((time.perf_counter() - t) * 1000)
            return intent.to_dict()

        score = score_intents(cases, parse, "golden")
        ms_sorted = sorted(ms)
        out[mode] = {"accuracy": {k: round(v["accuracy"], 3) for k, v in score["languages"].items()},
                     "p50_ms": round(statistics.median(ms), 2),
                     "p95_ms": round(ms_sorted[min(len(ms) - 1, int(0.95 * len(ms)))], 2), **stats}
        print(json.dumps({mode: out[mode]}), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="OpenAI-compatible base URL (default: start the packaged model)")
    ap.add_argument("--limit", type=int, default=None, help="first N golden cases only")
    ap.add_argument("--timeout", type=float, default=30.0, help="LLM timeout per query, seconds")
    args = ap.parse_args()
    if args.url:
        print(json.dumps(run(args.url, args.limit, args.timeout), indent=2))
        return
    from osreco.plugin.llm_server import LocalLLM

    with LocalLLM() as llm:
        print(json.dumps(run(llm.url, args.limit, args.timeout), indent=2))


if __name__ == "__main__":
    main()
