"""A real sidecar for ``osreco simulate``: gunicorn on a free local port, spoken to over HTTP.

(``tests/servers.py`` does the same for the tests; the package cannot import tests.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from osreco.errors import EXIT_ENV, OsrecoError


class SimulateError(OsrecoError):
    """The simulation could not run: a sidecar did not start or answered an error."""

    exit_code = EXIT_ENV
    code = "simulate_error"


class Sidecar:
    """One gunicorn sidecar process group on a free local port (start, URL, stop, log)."""

    def __init__(self, name: str, env: Mapping[str, str], work: Path, threads: int = 4) -> None:
        self.name, self.work = name, work
        self.env = {**os.environ, **env}
        self.threads = threads
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout_s: float = 180.0) -> str:
        """Start gunicorn (one worker) and wait until ``/readyz`` answers 200.

        Raises:
            SimulateError: gunicorn exited or did not get ready in time (its log tail is attached).
        """
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{port}"
        self.work.mkdir(parents=True, exist_ok=True)
        with (self.work / "gunicorn.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "python:osreco.plugin.gunicorn_conf", "-w", "1",
                 "--threads", str(self.threads), "-b", f"127.0.0.1:{port}", "osreco.plugin.wsgi:app"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SimulateError(f"the {self.name} sidecar exited with {self.proc.returncode}",
                                    fix="read its log", log=self.log()[-2000:])
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=5) as r:
                    if r.status == 200:
                        return self.url
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise SimulateError(f"the {self.name} sidecar was not ready after {timeout_s:.0f} s",
                            fix="read its log", log=self.log()[-2000:])

    def stop(self) -> None:
        """Stop gunicorn (SIGTERM, then SIGKILL of its own process group)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def log(self) -> str:
        """What gunicorn printed so far."""
        path = self.work / "gunicorn.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def call(self, method: str, path: str, body: object | None = None) -> dict[str, Any]:
        """One JSON request; an error answer raises :class:`SimulateError` naming the route and body."""
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as e:
            raise SimulateError(f"{self.name} sidecar: {method} {path.split('?')[0]} answered {e.code}",
                                fix="read the error body", body=e.read()[:500].decode("utf-8", "replace")) from e


@contextmanager
def running(sidecar: Sidecar) -> Iterator[Sidecar]:
    """Start ``sidecar``; stop it on exit."""
    sidecar.start()
    try:
        yield sidecar
    finally:
        sidecar.stop()
