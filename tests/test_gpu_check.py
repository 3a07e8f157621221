"""bench/gpu_check.py: the prepared GPU script's CPU fallback runs and reports JSON."""

from __future__ import annotations

import json

import pytest

from bench import gpu_check


@pytest.mark.slow
def test_dry_run_measures_cpu_training_and_says_why_cuda_was_skipped(tiny_model_factory, tmp_path, capsys):
    out = tmp_path / "gpu.json"
    report = gpu_check.main(["--dry-run", "--base", str(tiny_model_factory("bert")), "--threads", "1",
                             "--out", str(out)])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text()) == json.loads(json.dumps(report))
    cpu = report["train"]["cpu"]
    assert cpu["device"] == "cpu" and cpu["steps"] == 2 and cpu["steps_per_s"] > 0
    assert report["cuda"] == {"skipped": "dry run"} and "cuda" not in report["train"]
    assert "export" not in report and "CPUExecutionProvider" in report["environment"]["ort_providers"]
