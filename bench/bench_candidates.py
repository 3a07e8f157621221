"""Candidates per signal: ``osreco eval``'s search task at several ``OSRECO_CANDIDATES``, side by side.

    python -m bench.bench_candidates                       # 25,50,100; the full query set
    python -m bench.bench_candidates --quick --candidates 25,50

Runs the real ``osreco eval`` search task (``run_eval`` with ``--tasks search``: the same
MovieLens split, seed, queries and users, the sidecar's Flask app in process against the
node) with the full ``osreco`` variant once per candidates value (``FusionSettings.candidates``,
the setting ``OSRECO_CANDIDATES`` sets). The variants are asked each (query, user) pair in turn,
so they share the node's state and the machine's load. With ``--full-source`` one more variant
asks the node for every item's whole ``_source`` (vectors and texts included) instead of the
response's fields only: the path before the search path was trimmed, to show it ranks the same.

Besides NDCG@10 / recall@10 / the constraint violation rate (all pairs, English, Chinese), each
variant's in-process request time (Flask test client, node round trips included) and the
medians of the ``timings_ms`` stages its responses carry are reported. The eval's own tuned
and seen-kept variants still run (they are part of the task) and are listed too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

STAGES = ("parse", "embed", "search", "fuse")


class TimedClient:
    """A Flask test client that records each ``post``'s wall time and the response's ``timings_ms``."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.ms: list[float] = []
        self.stages: list[dict[str, float]] = []

    def post(self, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        resp = self.client.post(*args, **kwargs)
        self.ms.append((time.perf_counter() - t) * 1000.0)
        body = resp.get_json(silent=True) or {}
        self.stages.append({k: float(v) for k, v in (body.get("timings_ms") or {}).items()
                            if isinstance(v, (int, float))})
        return resp

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def full_source_fields(fields: Any) -> Any:
    """The same ``IntentFields`` whose ``source_fields()`` asks for the whole ``_source``."""
    cls = type(fields)
    full = type("FullSourceFields", (cls,), {"source_fields": lambda self: True})
    return full(**{f.name: getattr(fields, f.name) for f in dataclasses.fields(fields)})


def pct(xs: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank); NaN when empty."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", default="25,50,100", help="comma list of candidates per signal")
    ap.add_argument("--quick", action="store_true", help="the eval's --quick subset (16 queries, 2 users each)")
    ap.add_argument("--index", default="bench-cand-eval-ml100k", help="eval item index alias (ingested once)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--bundle", default=None, help="bundle (default: the eval's fp32 MiniLM)")
    ap.add_argument("--full-source", action="store_true",
                    help="also the variant that fetches every hit's whole _source (the untrimmed path)")
    ap.add_argument("--no-zh-encoder", action="store_true")
    ap.add_argument("--out", default=None, help="write the JSON results here")
    args = ap.parse_args()

    import logging

    from osreco.evaluation import run
    from osreco.evaluation.variants import Variant
    from osreco.plugin.fusion import FusionSettings

    values = [int(c) for c in args.candidates.split(",") if c.strip()]
    default = FusionSettings().candidates
    names = {c: "osreco" if c == default else f"osreco c{c}" for c in values}
    variants = tuple(Variant(names[c], fusion={} if c == default else {"candidates": c}) for c in values)
    if args.full_source:
        variants += (Variant("osreco (full _source)"),)
    run.SEARCH_VARIANTS = variants
    timed: dict[str, TimedClient] = {}
    original: Callable[..., dict[str, Any]] = run.variant_apps

    def variant_apps(base: Any, vs: Sequence[Variant]) -> dict[str, Any]:
        clients = original(base, vs)
        if "osreco (full _source)" in clients:
            client, v = clients["osreco (full _source)"]
            service = client.application.extensions["osreco.services"]
            service.fields = full_source_fields(service.fields)
        if any(v.name in {*names.values(), "osreco (full _source)"} for v in vs):
            for name in list(clients):
                client, v = clients[name]
                timed[name] = TimedClient(client)
                clients[name] = (timed[name], v)
        return clients

    run.variant_apps = variant_apps
    logging.getLogger("osreco.plugin.service").setLevel(logging.ERROR)
    config = run.EvalConfig.from_env(quick=args.quick, alias=args.index, bundle_dir=args.bundle, tasks=("search",),
                                     seed=args.seed, zh_encoder=not args.no_zh_encoder,
                                     cf_model_dir=Path(args.out or "/tmp/bench-cand").with_suffix("") / "cf-model")
    t0 = time.perf_counter()
    report = run.run_eval(config)
    search = report["search"]
    rows = []
    for name, metrics in search["variants"].items():
        tc = timed.get(name)
        stages = {s: statistics.median([t.get(s, 0.0) for t in tc.stages]) if tc and tc.stages else float("nan")
                  for s in STAGES}
        lang = search.get("by_language", {})
        rows.append({"variant": name, **{k: metrics[k] for k in ("ndcg", "recall", "violation_rate")},
                     "ndcg_en": lang.get("en", {}).get(name, {}).get("ndcg", float("nan")),
                     "ndcg_zh": lang.get("zh", {}).get(name, {}).get("ndcg", float("nan")),
                     "request_p50_ms": pct(tc.ms if tc else [], 50), "request_p90_ms": pct(tc.ms if tc else [], 90),
                     **{f"{s}_p50_ms": v for s, v in stages.items()}, "n": len(tc.ms) if tc else 0})
    print(f"osreco eval search task: {search['queries']} queries, {search['pairs']} query-user pairs (test users), "
          f"seed {args.seed}{', --quick' if args.quick else ''}; errors {search.get('errors') or 0}; "
          f"{time.perf_counter() - t0:.0f} s")
    print()
    print("| variant | NDCG@10 | recall@10 | violation rate | NDCG en | NDCG zh | request p50 ms | request p90 ms | "
          + " | ".join(f"{s} p50 ms" for s in STAGES) + " | n |")
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(STAGES) + "---|")
    for r in rows:
        print(f"| {r['variant']} | {r['ndcg']:.4f} | {r['recall']:.4f} | {r['violation_rate']:.4f} | "
              f"{r['ndcg_en']:.4f} | {r['ndcg_zh']:.4f} | {r['request_p50_ms']:.1f} | {r['request_p90_ms']:.1f} | "
              + " | ".join(f"{r[f'{s}_p50_ms']:.2f}" for s in STAGES) + f" | {r['n']} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "search": search}, indent=2, ensure_ascii=False))
    if search.get("errors"):
        raise SystemExit(f"requests failed ({search['errors']}): the numbers above are not valid; rerun")


if __name__ == "__main__":
    main()
