"""A local single-node OpenSearch with the k-NN plugin, fetched from Maven and cached.

This is the embedded default for the demo and the tests whenever ``OPENSEARCH_URL`` is not
set. Layout under the cache directory::

    downloads/                 zips fetched with ``mvn dependency:copy``
    opensearch-<version>/      unpacked distribution with plugins installed
    node/data, node/logs       the node's data and logs (``node-<name>/`` for a named node)
    node/state.json            pid, port and url of the running node

``NodeConfig(fresh=True)`` (``osreco opensearch start --fresh``, or ``OSRECO_NODE_FRESH=1``)
empties the node's data folder before the start; downloads and the install stay cached. Versions, JDKs,
downloads and the install are in :mod:`osreco.node_install`; this module runs the process.

OpenSearch refuses to run as root; when started by root, the node runs as the system user
``osreco-node`` (created on first use) and the cache lives under ``/var/cache/osreco``.

Example::

    node = LocalNode(NodeConfig.from_env())
    url = node.start()      # downloads once, then starts from the cache
    node.stop()
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

from osreco.errors import NodeError
from osreco.node_install import (
    OPTIONAL_PLUGINS,
    PLUGIN_FOLDERS,
    VERSION_2X,
    VERSION_3X,
    Distribution,
    NodeConfig,
    default_cache_dir,
    fetch_maven_jar,
    find_jdks,
    java_major,
)

__all__ = ["OPTIONAL_PLUGINS", "PLUGIN_FOLDERS", "SERVICE_USER", "VERSION_2X", "VERSION_3X", "LocalNode",
           "NodeConfig", "default_cache_dir", "fetch_maven_jar", "find_jdks", "java_major"]

SERVICE_USER = "osreco-node"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback only
        return json.loads(resp.read())


class LocalNode(Distribution):
    """Fetch, install, start, stop and report on the local OpenSearch node."""

    def __init__(self, config: NodeConfig | None = None) -> None:
        self.config = config or NodeConfig.from_env()
        self.cache = self.config.cache_dir
        self.node_dir = self.cache / ("node" if self.config.name == "default" else f"node-{self.config.name}")
        self.state_file = self.node_dir / "state.json"

    # -- running -----------------------------------------------------------------------
    def state(self) -> dict[str, Any] | None:
        """The recorded state of a running node, or None when none is recorded alive."""
        try:
            st = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return st if _pid_alive(st.get("pid", -1)) else None

    def url(self) -> str | None:
        """The running node's base URL, or None when none runs."""
        st = self.state()
        return st["url"] if st else None

    def start(self) -> str:
        """Start the node (or find it running) and wait for green health and k-NN.

        With ``config.fresh`` a running node is stopped and the start begins on an empty data folder.

        Returns:
            The node's base URL, e.g. ``http://127.0.0.1:41234``.
        Raises:
            NodeError: with the cause, the fix and the tail of the node's log.
        """
        st = self.state()
        if st and _healthy(st["url"]) and not self.config.fresh:
            return str(st["url"])
        if st:  # alive but unhealthy (a stale process from an earlier run), or a fresh start asked for
            self._terminate(st["pid"])
            self.state_file.unlink(missing_ok=True)
        port = self.config.port or _free_port()
        if _port_in_use(port):
            raise NodeError(f"port {port} is already in use on 127.0.0.1",
                            fix="pass --port 0 to pick a free one, or stop what listens there")
        version, java_home = self.resolve_runtime()
        home = self.install(version, java_home)
        transport = _free_port()
        data, logs = self.prepare_dirs()
        log_file = logs / "stdout.log"
        cmd = [str(home / "bin" / "opensearch"),
               "-E", "discovery.type=single-node", "-E", "network.host=127.0.0.1",
               "-E", f"http.port={port}", "-E", f"transport.port={transport}",
               "-E", f"path.data={data}", "-E", f"path.logs={logs}",
               "-E", "cluster.name=osreco-local", "-E", f"node.name=osreco-{self.config.name}",
               "-E", "cluster.routing.allocation.disk.threshold_enabled=false",
               "-E", "action.auto_create_index=true"]
        if "ml-commons" in self.config.plugins:
            cmd += ["-E", "plugins.ml_commons.only_run_on_ml_node=false",
                    "-E", "plugins.ml_commons.native_memory_threshold=100",
                    "-E", "plugins.ml_commons.jvm_heap_memory_threshold=100"]
        env = {**os.environ, "JAVA_HOME": str(java_home), "OPENSEARCH_TMPDIR": str(self.node_dir / "tmp"),
               "OPENSEARCH_JAVA_OPTS": f"-Xms{self.config.heap} -Xmx{self.config.heap}"}
        env.pop("OPENSEARCH_URL", None)
        djl = self.djl_engine_cache(home) if "ml-commons" in self.config.plugins else None
        if djl:  # DJL finds libtorch here instead of downloading it at model deploy
            env["ENGINE_CACHE_DIR"] = str(_engine_cache_dir(data, djl))
        if os.geteuid() == 0:
            self._own_by_service_user(home, *([djl] if djl else []))
            cmd = ["setpriv", f"--reuid={SERVICE_USER}", f"--regid={SERVICE_USER}", "--init-groups", *cmd]
        with open(log_file, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=home, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        self.state_file.write_text(json.dumps({"pid": proc.pid, "port": port, "url": url,
                                               "version": version, "java_home": str(java_home),
                                               "plugins": ["knn", *self.config.plugins],
                                               "started_at": time.time()}))
        self._wait_ready(proc, url, log_file)
        return url

    def prepare_dirs(self) -> tuple[Path, Path]:
        """Create the node's data, logs and tmp folders; with ``config.fresh``, empty data first.

        Only this node's own data folder is emptied (each name has its own), never the
        downloads or the install. Refuses while the node is recorded alive: its files are open.

        Returns:
            (data folder, logs folder).
        """
        data, logs = self.node_dir / "data", self.node_dir / "logs"
        if self.config.fresh and data.exists():
            if self.state():
                raise NodeError(f"the node using {data} is still running",
                                fix="stop it first (osreco opensearch stop), or start with --fresh")
            try:
                shutil.rmtree(data)
            except OSError as e:
                raise NodeError(f"cannot empty the node's data folder {data}: {e}",
                                fix=f"delete {data} by hand, then start again") from e
        for d in (data, logs, self.node_dir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        return data, logs

    def _own_by_service_user(self, home: Path, *more: Path) -> None:
        """OpenSearch will not run as root: run it as a system user that owns its folders."""
        if subprocess.run(["id", SERVICE_USER], capture_output=True).returncode != 0:
            proc = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                                   "/usr/sbin/nologin", SERVICE_USER], capture_output=True, text=True)
            if proc.returncode != 0:
                raise NodeError(f"cannot create user {SERVICE_USER}: {proc.stderr.strip()}",
                                fix="run osreco as a non-root user, or create that user yourself")
        for path in (self.cache, home, self.node_dir):
            path.chmod(0o755)
        subprocess.run(["chown", "-R", f"{SERVICE_USER}:", str(home), str(self.node_dir), *map(str, more)],
                       check=True)

    def _wait_ready(self, proc: subprocess.Popen, url: str, log_file: Path) -> None:
        deadline = time.monotonic() + self.config.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.state_file.unlink(missing_ok=True)
                raise NodeError(f"OpenSearch exited with code {proc.returncode} during start",
                                fix=_fix_from_log(log_file), log_tail=_tail(log_file))
            if _healthy(url):
                return
            time.sleep(1.0)
        self.stop()
        raise NodeError(f"OpenSearch did not become green with k-NN in {self.config.start_timeout_s:.0f}s",
                        fix="see the log tail; raise --timeout or the heap", log_tail=_tail(log_file))

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Stop the node cleanly (SIGTERM, then SIGKILL); False when none was running."""
        st = self.state()
        self.state_file.unlink(missing_ok=True)
        if not st:
            return False
        self._terminate(st["pid"], timeout_s)
        return True

    @staticmethod
    def _terminate(pid: int, timeout_s: float = 60.0) -> None:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.2)
        if _pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)

    def status(self) -> dict:
        """Running or not, with version, url, health and plugins when running."""
        st = self.state()
        if not st:
            return {"running": False, "cache_dir": str(self.cache), "cache_bytes": _du(self.cache)}
        out = {"running": True, **st, "cache_dir": str(self.cache), "cache_bytes": _du(self.cache)}
        try:
            out["health"] = _get_json(f"{st['url']}/_cluster/health")["status"]
            out["loaded_plugins"] = sorted({p["component"] for p in _get_json(f"{st['url']}/_cat/plugins?format=json")})
        except (OSError, urllib.error.URLError, ValueError) as e:
            out["health"] = f"unreachable ({e})"
        return out

    def with_config(self, **changes: Any) -> LocalNode:
        """The same node with some of its settings changed (``NodeConfig`` field names)."""
        return LocalNode(replace(self.config, **changes))


def _engine_cache_dir(data: Path, shared: Path) -> Path:
    """DJL's engine cache for this node: inside its data folder, where the node may write (DJL
    extracts the tokenizers library there), with ``pytorch/`` linked to the shared libtorch."""
    engine = data / "djl"
    engine.mkdir(exist_ok=True)
    link = engine / "pytorch"
    if not link.exists():
        link.unlink(missing_ok=True)  # a dangling link from an older cache
        link.symlink_to(shared / "pytorch")
    return engine


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as dead
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _healthy(url: str) -> bool:
    try:
        health = _get_json(f"{url}/_cluster/health", timeout=3)
        plugins = _get_json(f"{url}/_cat/plugins?format=json", timeout=3)
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return health.get("status") == "green" and any(
        p.get("component") == "opensearch-knn" for p in plugins)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _fix_from_log(log_file: Path) -> str:
    text = _tail(log_file, 200)
    if "UnsupportedClassVersionError" in text or "requires Java" in text:
        return "the JDK is too old for this OpenSearch: set JAVA_HOME to Java 21+"
    if "BindException" in text or "Address already in use" in text:
        return "a port is in use: pass --port 0"
    if "max virtual memory" in text or "vm.max_map_count" in text:
        return "raise vm.max_map_count (sysctl -w vm.max_map_count=262144)"
    if "OutOfMemoryError" in text:
        return "raise --heap"
    if "Could not load plugin" in text or "plugin" in text.lower() and "incompatible" in text.lower():
        return "a plugin does not match the OpenSearch version: delete the cache's opensearch-* folder"
    return "read the log tail below"


def _du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total
