"""Ingest under faults, against the real node: a SIGKILLed run resumes, a network outage is
ridden out with backoff, and a --rebuild swaps the alias while searches keep succeeding."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from osreco.ingest.catalog import FieldMap, read_catalog
from osreco.ingest.connection import OpenSearchConfig, connect
from osreco.ingest.index_spec import IndexSpec
from osreco.ingest.rebuild import RebuildConfig, alias_indexes, ensure_index, rebuild_index
from osreco.ingest.writer import WriteConfig, index_items

pytestmark = pytest.mark.integration
FIELDS = FieldMap(facets={"brand": "brand"}, numeric={"price": ("price", "float")})


def write_products(path: Path, n: int, bad_line: int | None = None) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            row = {"item_id": f"p{i}", "title": f"Product {i} trail shoe", "text": "light and fast " * (i % 5),
                   "brand": ["Acme", "Zoom"][i % 2], "price": float(i % 70)}
            if bad_line is not None and i + 1 == bad_line:
                row["price"] = "free"
            fh.write(json.dumps(row) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_encoder(tiny_bundle):
    from osreco.exporter import Encoder

    return Encoder(tiny_bundle, threads=1)


def test_sigkilled_run_resumes_and_indexes_every_item_once(os_client, opensearch_url, index_name, tiny_bundle,
                                                           tmp_path):
    n = 6000
    catalog = write_products(tmp_path / "c.jsonl", n, bad_line=10)
    ck, dead = tmp_path / "ck.json", tmp_path / "dead.jsonl"
    cmd = [sys.executable, "-m", "osreco.cli", "ingest", str(catalog), "--bundle", str(tiny_bundle), "--index",
           index_name, "--facet", "brand", "--numeric", "price", "--batch-size", "40", "--threads", "1",
           "--checkpoint", str(ck), "--dead-letter", str(dead), "--url", opensearch_url, "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rows_done = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            rows_done = json.loads(ck.read_text())["rows_done"]
        except (OSError, ValueError):
            rows_done = 0
        if rows_done >= 800:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the load finished before it could be killed"
    assert 800 <= rows_done < n
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 1, rerun.stderr  # 1: one row was dead-lettered
    report = json.loads(rerun.stdout)
    assert report["resumed_rows"] >= rows_done
    assert report["rows_read"] == n and report["dead_lettered"] == 1
    assert report["indexed"] + report["unchanged"] + report["dead_lettered"] == n
    assert len(dead.read_text().splitlines()) == 1  # written once, although the first run got past it
    os_client.indices.refresh(index=index_name)
    assert os_client.count(index=index_name)["count"] == n - 1
    expected = [f"p{i}" for i in range(n) if i != 9]  # line 10 is the bad row
    found = os_client.count(index=index_name, body={"query": {"ids": {"values": expected}}})["count"]
    assert found == n - 1  # every good item is there, and (unique _id) only once
    assert not ck.exists()


class TcpProxy:
    """A loopback TCP forwarder to the node that can be shut (every connection dropped) and reopened."""

    def __init__(self, target: tuple[str, int]):
        self.target, self.port = target, 0
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self.port, self._server = server.getsockname()[1], server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def shut(self) -> None:
        with self._lock:
            socks, self._conns = [self._server, *self._conns], []
            self._server = None
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_outage_midway_is_ridden_out_with_backoff(os_client, opensearch_url, index_name, tiny_encoder, tmp_path):
    n = 3000
    catalog = write_products(tmp_path / "c.jsonl", n)
    node = urlparse(opensearch_url)
    proxy = TcpProxy((node.hostname, node.port))
    proxy.open()
    client = connect(OpenSearchConfig(url=f"http://127.0.0.1:{proxy.port}", timeout_s=5), max_retries=0)
    spec = IndexSpec.from_encoder(tiny_encoder, index_name)
    index = ensure_index(client, spec)
    config = WriteConfig(batch_size=40, backoff_base_s=0.1, backoff_max_s=1.0, max_retries=40, request_timeout_s=5,
                         checkpoint=tmp_path / "ck.json", dead_letter=tmp_path / "dead.jsonl")
    progressed, outcome = [0], {}

    def progress(rows: int) -> None:
        progressed[0] += rows

    def run() -> None:
        try:
            outcome["report"] = index_items(client, tiny_encoder, index, read_catalog(catalog, FIELDS), config,
                                            progress=progress)
        except Exception as e:  # handed to the test thread and asserted on
            outcome["error"] = e

    loader = threading.Thread(target=run)
    loader.start()
    while progressed[0] < 600 and loader.is_alive():
        time.sleep(0.005)
    proxy.shut()                      # the node becomes unreachable mid-load
    outage_at = progressed[0]
    time.sleep(3.0)
    proxy.open()                      # and comes back on the same address
    loader.join(timeout=240)
    proxy.shut()
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert outage_at < n, "the load finished before the outage"
    assert report.retries > 0
    assert (report.rows_read, report.indexed, report.dead_lettered) == (n, n, 0)
    os_client.indices.refresh(index=index_name)
    assert os_client.count(index=index_name)["count"] == n


def test_rebuild_swaps_alias_while_searches_keep_working(os_client, index_name, tiny_encoder, tmp_path):
    catalog = write_products(tmp_path / "c.jsonl", 400)
    spec = IndexSpec.from_encoder(tiny_encoder, index_name)
    first = ensure_index(os_client, spec)
    index_items(os_client, tiny_encoder, first, read_catalog(catalog, FIELDS), WriteConfig())
    failures: list[str] = []
    searches = [0]
    stop = threading.Event()

    def search_loop() -> None:
        while not stop.is_set():
            try:
                resp = os_client.search(index=index_name, body={"timeout": "5s", "size": 5,
                                                               "query": {"match": {"title": "trail shoe"}}},
                                        request_timeout=10)
                if resp["timed_out"] or resp["_shards"]["failed"] or resp["hits"]["total"]["value"] == 0:
                    failures.append(json.dumps(resp)[:300])
            except Exception as e:  # every failed search is recorded and asserted on
                failures.append(repr(e))
            searches[0] += 1

    looper = threading.Thread(target=search_loop)
    looper.start()
    try:
        write = WriteConfig(reuse_from=first, batch_size=50)
        result = rebuild_index(os_client, spec,
                               lambda index: index_items(os_client, tiny_encoder, index,
                                                         read_catalog(catalog, FIELDS), write),
                               RebuildConfig(forcemerge=True, warmup=True, grace_s=0.5))
        time.sleep(0.3)
    finally:
        stop.set()
        looper.join()
    assert failures == []
    assert searches[0] > 5
    assert (result.index, result.previous, result.deleted) == (f"{index_name}-v2", [first], [first])
    assert result.report.reused_vectors == 400 and result.report.embedded == 0  # same model: nothing re-embedded
    assert alias_indexes(os_client, index_name) == [f"{index_name}-v2"]
    assert not os_client.indices.exists(index=first)
    settings = os_client.indices.get_settings(index=result.index)[result.index]["settings"]["index"]
    assert (settings["refresh_interval"], settings["number_of_replicas"]) == ("1s", "0")
    assert os_client.count(index=index_name)["count"] == 400


def test_sigkilled_rebuild_resumes_into_the_same_version(os_client, opensearch_url, index_name, tiny_bundle,
                                                         tmp_path):
    ck = tmp_path / "ck.json"
    base = [sys.executable, "-m", "osreco.cli", "ingest", "--bundle", str(tiny_bundle), "--index", index_name,
            "--batch-size", "40", "--threads", "1", "--checkpoint", str(ck), "--url", opensearch_url,
            "--dead-letter", str(tmp_path / "dead.jsonl"), "--json"]
    small = write_products(tmp_path / "small.jsonl", 50)
    subprocess.run([*base[:4], str(small), *base[4:]], check=True, capture_output=True, timeout=120)
    n = 5000
    cmd = [*base[:4], str(write_products(tmp_path / "big.jsonl", n)), *base[4:], "--rebuild"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(ck.read_text())["rows_done"] >= 400:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the rebuild finished before it could be killed"
    assert alias_indexes(os_client, index_name) == [f"{index_name}-v1"]  # still serving the old version
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["index"] == f"{index_name}-v2" and report["resumed_rows"] >= 400
    assert (report["rows_read"], report["indexed"] + report["unchanged"]) == (n, n)
    assert alias_indexes(os_client, index_name) == [f"{index_name}-v2"]
    assert not os_client.indices.exists(index=f"{index_name}-v1")
    assert os_client.count(index=index_name)["count"] == n
