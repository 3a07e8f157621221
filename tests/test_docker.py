"""The compose files validate offline (Debian's docker-compose `config`; no engine needed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
ENV = {"OPENSEARCH_INITIAL_ADMIN_PASSWORD": "Str0ng!Passw0rd-osreco", "OSRECO_HMAC_KEY": "k" * 32}


def _compose(*files: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if not exe:
        pytest.fail("docker-compose is missing: `make setup` installs Debian's docker-compose")
    args = [exe]
    for f in files:
        args += ["-f", str(DOCKER / f)]
    base = {k: v for k, v in os.environ.items() if k not in ENV}
    return subprocess.run([*args, "config"], capture_output=True, text=True,
                          env={**base, **(env or {})}, cwd=DOCKER, timeout=120)


def test_cpu_compose_is_valid():
    proc = _compose("compose.yml", env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert "opensearchproject/opensearch:3." in proc.stdout
    assert "dockerfile: docker/Dockerfile\n" in proc.stdout


def test_gpu_compose_overrides_the_sidecar():
    proc = _compose("compose.yml", "compose.gpu.yml", env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert "Dockerfile.gpu" in proc.stdout and "driver: nvidia" in proc.stdout


def test_compose_refuses_to_run_without_admin_password():
    proc = _compose("compose.yml", env={"OSRECO_HMAC_KEY": "x" * 32})
    assert proc.returncode != 0
    assert "OPENSEARCH_INITIAL_ADMIN_PASSWORD" in proc.stderr


@pytest.mark.parametrize("name,runtime", [("Dockerfile", "cpu"), ("Dockerfile.gpu", "gpu")])
def test_dockerfiles_copy_existing_paths_and_pick_one_runtime(name, runtime):
    text = (DOCKER / name).read_text()
    for src in re.findall(r"^COPY (\S+)", text, flags=re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"{name} copies missing {part}"
    assert f'".[{runtime},serve]"' in text
    assert "osreco.plugin.wsgi:app" in text
