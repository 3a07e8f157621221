"""Real servers for tests: the sidecar under gunicorn with several worker processes.

``gunicorn_sidecar(env)`` starts ``python -m gunicorn -w N --threads T -b 127.0.0.1:PORT
osreco.plugin.wsgi:app`` with ``env`` on top of this process's environment, waits until every
worker has loaded the app and ``/healthz`` answers, and yields the base URL (a ``str``). The
yielded URL also has ``restart()`` (stop gunicorn and start it again on the same port, so every
worker starts from nothing) and ``log()`` (what gunicorn printed so far).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0

# A gunicorn config that keeps the project's own config (when there is one) and adds a hook that
# marks each worker as booted once it has loaded the app, so a test can wait for all of them.
_CONF = '''\
import importlib.util
import os
import pathlib

if importlib.util.find_spec("osreco.plugin.gunicorn_conf") is not None:
    from osreco.plugin.gunicorn_conf import *  # noqa: F403 -- keep every project setting

_project_post_worker_init = globals().get("post_worker_init")


def post_worker_init(worker):
    if _project_post_worker_init is not None:
        _project_post_worker_init(worker)
    pathlib.Path({ready!r}, str(os.getpid())).touch()
'''


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class SidecarURL(str):
    """The base URL of a running gunicorn sidecar, with ``restart()`` and ``log()``."""

    _server: _Gunicorn

    def restart(self) -> None:
        """Stop gunicorn and start it again on the same port (fresh workers, fresh memory)."""
        self._server.stop()
        self._server.start()

    def log(self) -> str:
        """Everything gunicorn printed so far (stdout and stderr)."""
        return self._server.log()


class _Gunicorn:
    def __init__(self, env: dict[str, str], workers: int, threads: int, port: int, work: Path) -> None:
        self.env = {**os.environ, **env}
        self.workers = workers
        self.threads = threads
        self.port = port
        self.work = work
        self.ready = work / "ready"
        self.conf = work / "gunicorn_test_conf.py"
        self.conf.write_text(_CONF.format(ready=str(self.ready)), encoding="utf-8")
        self.log_path = work / "gunicorn.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "-c", str(self.conf),
                "-w", str(self.workers), "--threads", str(self.threads),
                "-b", f"127.0.0.1:{self.port}", "osreco.plugin.wsgi:app"]

    def start(self) -> None:
        self.ready.mkdir(exist_ok=True)
        for marker in self.ready.iterdir():
            marker.unlink()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
            booted = [p for p in self.ready.iterdir() if _alive(int(p.name))]
            if len(booted) >= self.workers and self._healthy():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn did not get {self.workers} workers ready in time:\n{self.log()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the session holds only this gunicorn's processes
            proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""


@contextmanager
def gunicorn_sidecar(env: dict[str, str], workers: int = 2, threads: int = 4,
                     port: int | None = None) -> Iterator[SidecarURL]:
    """Run the sidecar under gunicorn with ``env``; yield its base URL; stop it on exit.

    Waits until all ``workers`` have loaded the app and ``/healthz`` answers. The URL's
    ``restart()`` stops and starts gunicorn on the same port.
    """
    assert importlib.util.find_spec("gunicorn") is not None, "gunicorn is a test dependency"
    with tempfile.TemporaryDirectory(prefix="osreco-gunicorn-") as tmp:
        server = _Gunicorn(env, workers, threads, port or free_port(), Path(tmp))
        server.start()
        url = SidecarURL(server.url)
        url._server = server
        try:
            yield url
        finally:
            server.stop()
