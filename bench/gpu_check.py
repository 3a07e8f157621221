"""One prepared GPU check: training steps/s of `osreco train encoder` on CUDA vs CPU, and export time.

Runs the real commands as subprocesses (small config: MovieLens-derived pairs from a few
users, a fixed number of steps) on every device torch offers, then times `osreco export` of
the trained folder (fp32 and int8) and prints one JSON object. Without CUDA it measures the
CPU path alone and says so (``"cuda": {"skipped": ...}``); ``--dry-run`` shrinks everything
(2 steps, 20 users, no export) so tests can run it in seconds.

Run on a CUDA machine: ``python -m bench.gpu_check --steps 30 --out gpu.json`` (each
subprocess is capped by ``--timeout``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def environment() -> dict:
    """torch / CUDA / ONNX Runtime facts of this machine."""
    import onnxruntime as ort
    import torch

    cuda = torch.cuda.is_available()
    return {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cuda_available": cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "onnxruntime": ort.__version__, "ort_providers": ort.get_available_providers(),
            "cpu_count": os.cpu_count()}


def _osreco(*args: str, timeout: float) -> tuple[dict, float]:
    """Run ``python -m osreco.cli ARGS --json``; returns (its JSON summary, wall seconds)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "osreco.cli", *args, "--json"], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"osreco {' '.join(args[:2])} exited {proc.returncode}: {proc.stderr[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), seconds


def train_run(device: str, out: Path, args: argparse.Namespace) -> dict:
    """One `osreco train encoder` run; steps/s from the loop's own epoch timer."""
    cmd = ["train", "encoder", "-o", str(out), "--device", device, "--max-steps", str(args.steps),
           "--max-users", str(args.users), "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    if args.base:
        cmd += ["--base", str(args.base)]
    summary, wall = _osreco(*cmd, timeout=args.timeout)
    last = summary["history"][-1]
    loop_s = float(last.get("seconds") or wall)
    return {"device": summary["device"], "steps": int(last["step"]), "loop_seconds": round(loop_s, 3),
            "steps_per_s": round(int(last["step"]) / loop_s, 3) if loop_s else None,
            "wall_seconds": round(wall, 2)}


def export_run(model: Path, out: Path, quantize: str | None, args: argparse.Namespace) -> dict:
    """Time `osreco export` of the trained folder (includes validation against PyTorch)."""
    cmd = ["export", str(model), "-o", str(out), "--threads", str(args.threads)]
    if quantize:
        cmd += ["--quantize", quantize]
    summary, wall = _osreco(*cmd, timeout=args.timeout)
    return {"precision": summary["precision"], "seconds": round(wall, 2),
            "min_cosine": summary.get("parity", {}).get("min_cosine")}


def main(argv: list[str] | None = None) -> dict:
    """Parse flags, measure, print (and optionally write) the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="training steps per device")
    parser.add_argument("--users", type=int, default=200, help="MovieLens users the pairs come from")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--base", type=Path, default=None, help="model folder (default: packaged MiniLM)")
    parser.add_argument("--timeout", type=float, default=540.0, help="seconds per subprocess")
    parser.add_argument("--dry-run", action="store_true", help="2 steps, 20 users, CPU only, no export")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.steps, args.users = 2, 20
    env = environment()
    report: dict = {"environment": env, "config": {k: str(v) for k, v in vars(args).items()}, "train": {}}
    devices = ["cpu"] + (["cuda"] if env["cuda_available"] and not args.dry_run else [])
    if "cuda" not in devices:
        report["cuda"] = {"skipped": "dry run" if args.dry_run else "torch sees no CUDA device"}
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            report["train"][device] = train_run(device, Path(tmp) / f"ft-{device}", args)
        if "cuda" in report["train"] and report["train"]["cpu"]["steps_per_s"]:
            report["cuda_vs_cpu_steps"] = round(report["train"]["cuda"]["steps_per_s"] /
                                                report["train"]["cpu"]["steps_per_s"], 2)
        if not args.dry_run:
            model = Path(tmp) / f"ft-{devices[-1]}"
            report["export"] = {p or "fp32": export_run(model, Path(tmp) / f"bundle-{p}", p, args)
                                for p in (None, "int8")}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
