"""Operations under gunicorn with two workers: /metrics sums every worker, the dev-mode warning
reaches gunicorn's stderr once per worker, and a revoked API key is refused by every worker
without a restart. Real gunicorn processes (tests/servers.py) over the real node."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from servers import gunicorn_sidecar  # tests/servers.py

from osreco.plugin.config import DEV_HMAC_KEY

pytestmark = pytest.mark.integration
WORKERS = 2
DEADLINE_S = 60.0   # a give-up bound for polling, not a timing assertion


def _get(url: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _count(metrics: str, endpoint: str) -> float:
    """``osreco_request_seconds_count`` of ``endpoint`` summed over its status labels."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("osreco_request_seconds_count{") and f'endpoint="{endpoint}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _env(opensearch_url: str, index_name: str, **extra: str) -> dict[str, str]:
    return {"OPENSEARCH_URL": opensearch_url, "OSRECO_INDEX": index_name, "OSRECO_BUNDLE_RELOAD_S": "0",
            "OSRECO_EMBED_VOCABULARY": "0", **extra}


@pytest.fixture
def clean_env(monkeypatch):
    """No inherited multiprocess folder or keys settings: the gunicorn config makes its own."""
    for name in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir", "OSRECO_API_KEYS_FILE",
                 "OSRECO_HMAC_KEY", "OSRECO_DEV_MODE", "OSRECO_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def test_metrics_sum_all_workers_and_dev_mode_warns_once_per_worker(opensearch_url, index_name, clean_env):
    n = 60
    with gunicorn_sidecar(_env(opensearch_url, index_name, OSRECO_DEV_MODE="1"),
                          workers=WORKERS, threads=4) as url:
        with ThreadPoolExecutor(8) as pool:     # concurrent connections spread over both workers
            statuses = list(pool.map(lambda _: _get(f"{url}/openapi.json")[0], range(n)))
        assert statuses == [200] * n
        scrapes = []
        with ThreadPoolExecutor(4) as pool:
            for status, body in pool.map(lambda _: _get(f"{url}/metrics"), range(12)):
                assert status == 200
                scrapes.append(_count(body.decode(), "/openapi.json"))
        assert scrapes == [float(n)] * len(scrapes)
        log = url.log()
    warnings = [line for line in log.splitlines() if "DEV MODE" in line]
    pids = {m.group(1) for line in warnings for m in [re.search(r"\[(\d+)\] \[WARNING\]", line)] if m}
    assert len(warnings) == WORKERS and len(pids) == WORKERS, log
    assert all(DEV_HMAC_KEY in line and "not secret" in line for line in warnings)


def _osreco(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "osreco.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_revoked_key_is_refused_by_every_worker_without_restart(opensearch_url, index_name, clean_env,
                                                                 tmp_path):
    keys = tmp_path / "keys.json"
    made = {}
    for name in ("web", "app"):
        res = _osreco("apikey", "create", "--file", str(keys), "--name", name, "--json")
        assert res.returncode == 0, res.stderr
        made[name] = json.loads(res.stdout)["key"]
    env = _env(opensearch_url, index_name, OSRECO_API_KEYS_FILE=str(keys), OSRECO_HMAC_KEY="h" * 40)

    def statuses(key: str, n: int = 16) -> list[int]:
        """Statuses of ``n`` concurrent searches with an empty body: 400 once the key passes, 401 if not."""
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda _: _get(f"{url}/v1/search", {"X-API-Key": key}, b"{}")[0], range(n)))

    with gunicorn_sidecar(env, workers=WORKERS, threads=4) as url:
        assert set(statuses(made["web"])) == {400}
        res = _osreco("apikey", "revoke", "--file", str(keys), "web")
        assert res.returncode == 0, res.stderr
        deadline, refused_rounds = time.monotonic() + DEADLINE_S, 0
        while refused_rounds < 3 and time.monotonic() < deadline:
            refused_rounds = refused_rounds + 1 if set(statuses(made["web"])) == {401} else 0
            time.sleep(0.2)
        assert refused_rounds == 3, "the revoked key was still accepted by a worker\n" + url.log()
        assert set(statuses(made["app"])) == {400}          # the other key still works everywhere
        keys.write_text("{broken")                           # a malformed file: old keys kept, no 500
        deadline = time.monotonic() + DEADLINE_S
        while url.log().count("was not loaded") < WORKERS and time.monotonic() < deadline:
            assert set(statuses(made["app"])) == {400} and set(statuses(made["web"])) == {401}
            time.sleep(0.2)
        assert url.log().count("was not loaded") == WORKERS, url.log()   # each worker saw it, once
        assert set(statuses(made["app"])) == {400} and set(statuses(made["web"])) == {401}
