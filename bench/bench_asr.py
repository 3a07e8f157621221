"""Speech recognition cost: real-time factor of the Whisper base (faster-whisper, int8 on CPU).

Run: ``python -m bench.bench_asr [--queries 12] [--threads 1 2]``. The spoken queries of
``tests/golden/voice.jsonl`` are synthesized once (flite, cached), decoded, and transcribed by
each contender in turn (greedy and beam-5 decoding, per thread count), alternating so a busy
machine slows them alike; the table shows medians of the recognition time per query and of the
real-time factor (recognition seconds per second of audio), and the ratio to the first row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from osreco.evaluation.voice import speak
from osreco.exporter.asr import Transcriber, decode_audio, whisper_base_from_packages

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--queries", type=int, default=12, help="spoken queries per contender")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the queries")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    cases = [json.loads(line)["q"] for line in (GOLDEN / "voice.jsonl").read_text().splitlines() if line.strip()]
    clips = [decode_audio(speak(q)) for q in cases[: args.queries]]
    model = whisper_base_from_packages()
    contenders = {f"threads={t} beam={b}": Transcriber(model, threads=t, beam_size=b)
                  for t in args.threads for b in (1, 5)}
    for asr in contenders.values():
        asr.transcribe(clips[0], "en")   # warm-up
    ms: dict[str, list[float]] = {name: [] for name in contenders}
    rtf: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for clip in clips:
            for name, asr in contenders.items():
                t = time.perf_counter()
                asr.transcribe(clip, "en")
                seconds = time.perf_counter() - t
                ms[name].append(seconds * 1000)
                rtf[name].append(seconds / (clip.size / 16000))
    rows = [{"contender": n, "ms_p50": round(statistics.median(ms[n]), 1),
             "rtf_p50": round(statistics.median(rtf[n]), 3)} for n in contenders]
    first = rows[0]["ms_p50"]
    for r in rows:
        r["ratio"] = round(r["ms_p50"] / first, 2)
    audio_s = statistics.median(c.size / 16000 for c in clips)
    if args.json:
        print(json.dumps({"queries": len(clips), "audio_s_p50": round(audio_s, 2), "rows": rows}))
        return
    print(f"{len(clips)} spoken queries, median {audio_s:.2f} s of audio, Whisper base int8 (CPU)")
    print(f"{'contender':<22} {'ms p50':>9} {'RTF p50':>8} {'ratio':>6}")
    for r in rows:
        print(f"{r['contender']:<22} {r['ms_p50']:>9.1f} {r['rtf_p50']:>8.3f} {r['ratio']:>6.2f}")


if __name__ == "__main__":
    main()
