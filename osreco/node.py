"""A local single-node OpenSearch with the k-NN plugin, fetched from Maven and cached.

This is the embedded default for the demo and the tests whenever ``OPENSEARCH_URL`` is not
set. Layout under the cache directory::

    downloads/                 zips fetched with ``mvn dependency:copy``
    opensearch-<version>/      unpacked distribution with plugins installed
    node/data, node/logs       the node's data and logs
    node/state.json            pid, port and url of the running node

OpenSearch refuses to run as root; when started by root, the node runs as the system user
``osreco-node`` (created on first use) and the cache lives under ``/var/cache/osreco``.

Example::

    node = LocalNode(NodeConfig.from_env())
    url = node.start()      # downloads once, then starts in ~15 s
    node.stop()
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from osreco.errors import NodeError

SERVICE_USER = "osreco-node"
# Newest pair that loads here (OpenSearch X.Y.Z <-> k-NN X.Y.Z.0), then the Java 17 fallback.
VERSION_3X = "3.6.0"
VERSION_2X = "2.19.1"
# Optional plugins, in install order (ml-commons needs job-scheduler, neural-search needs both).
OPTIONAL_PLUGINS = {
    "job-scheduler": "org.opensearch.plugin:opensearch-job-scheduler",
    "ml-commons": "org.opensearch.plugin:opensearch-ml-plugin",
    "neural-search": "org.opensearch.plugin:neural-search",
}
PLUGIN_FOLDERS = {
    "knn": "opensearch-knn",
    "job-scheduler": "opensearch-job-scheduler",
    "ml-commons": "opensearch-ml",
    "neural-search": "opensearch-neural-search",
}


def default_cache_dir() -> Path:
    """``$OSRECO_CACHE``, else ``/var/cache/osreco`` for root, else ``~/.cache/osreco``."""
    if os.environ.get("OSRECO_CACHE"):
        return Path(os.environ["OSRECO_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/osreco")
    return Path.home() / ".cache" / "osreco"


def java_major(java_home: Path) -> int | None:
    """The major version of the JDK at ``java_home``, or None when it does not run."""
    try:
        out = subprocess.run([str(java_home / "bin" / "java"), "-version"],
                             capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major


def find_jdks(jvm_root: Path = Path("/usr/lib/jvm")) -> list[tuple[int, Path]]:
    """JDKs on this machine as (major, home), newest first: JAVA_HOME, the JVM folder, PATH."""
    homes: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        homes.append(Path(os.environ["JAVA_HOME"]))
    jvm = jvm_root
    if jvm.is_dir():
        homes += sorted(p for p in jvm.iterdir() if (p / "bin" / "java").exists() and not p.is_symlink())
    java = shutil.which("java")
    if java:
        homes.append(Path(os.path.realpath(java)).parent.parent)
    found: dict[Path, int] = {}
    for home in homes:
        home = home.resolve()
        if home not in found and (major := java_major(home)):
            found[home] = major
    return sorted(((m, h) for h, m in found.items()), key=lambda t: -t[0])


@dataclass(frozen=True)
class NodeConfig:
    """Everything the local node needs; validated when built.

    Args:
        cache_dir: where downloads, the install, data and logs live.
        version: OpenSearch version; None picks 3.x on Java 21+, else 2.19.x on Java 17.
        java_home: JDK to run with; None picks the newest that fits ``version``.
        heap: JVM heap, e.g. ``"2g"``; sized for a 2-core / 24 GiB machine.
        port: HTTP port; 0 picks a free one.
        plugins: optional plugins beyond k-NN (names from ``OPTIONAL_PLUGINS``).
        start_timeout_s: how long to wait for green health.
        name: node name; each name has its own data, logs and state under the cache.
        jvm_root: the folder searched for JDKs besides JAVA_HOME and PATH.
    """

    cache_dir: Path = field(default_factory=default_cache_dir)
    version: str | None = None
    java_home: Path | None = None
    heap: str = "2g"
    port: int = 0
    plugins: tuple[str, ...] = ("job-scheduler", "ml-commons", "neural-search")
    start_timeout_s: float = 180.0
    name: str = "default"
    jvm_root: Path = Path("/usr/lib/jvm")

    def __post_init__(self) -> None:
        unknown = set(self.plugins) - set(OPTIONAL_PLUGINS)
        if unknown:
            raise NodeError(f"unknown plugin(s) {sorted(unknown)}",
                            fix=f"choose from {sorted(OPTIONAL_PLUGINS)}")
        if not re.fullmatch(r"\d+[mg]", self.heap):
            raise NodeError(f"heap {self.heap!r} is not like 2g or 1536m", fix="pass --heap 2g")
        if not 0 <= self.port < 65536:
            raise NodeError(f"port {self.port} is out of range", fix="pass a port in 1..65535, or 0")

    @classmethod
    def from_env(cls, **overrides: object) -> "NodeConfig":
        """Build from ``OSRECO_OPENSEARCH_VERSION``, ``OSRECO_NODE_HEAP``, ``OSRECO_NODE_PLUGINS``."""
        kw: dict[str, object] = {}
        if os.environ.get("OSRECO_OPENSEARCH_VERSION"):
            kw["version"] = os.environ["OSRECO_OPENSEARCH_VERSION"]
        if os.environ.get("OSRECO_NODE_HEAP"):
            kw["heap"] = os.environ["OSRECO_NODE_HEAP"]
        if "OSRECO_NODE_PLUGINS" in os.environ:
            kw["plugins"] = tuple(p for p in os.environ["OSRECO_NODE_PLUGINS"].split(",") if p)
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _get_json(url: str, timeout: float = 5.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read())


class LocalNode:
    """Fetch, install, start, stop and report on the local OpenSearch node."""

    def __init__(self, config: NodeConfig | None = None):
        self.config = config or NodeConfig.from_env()
        self.cache = self.config.cache_dir
        self.node_dir = self.cache / ("node" if self.config.name == "default" else f"node-{self.config.name}")
        self.state_file = self.node_dir / "state.json"

    # -- choosing versions -------------------------------------------------------------
    def resolve_runtime(self) -> tuple[str, Path]:
        """Pick (OpenSearch version, JDK home): 3.x on Java 21+, else 2.19.x on Java 17+."""
        cfg = self.config
        jdks = [(cfg_major, cfg.java_home)] if cfg.java_home and (cfg_major := java_major(cfg.java_home)) else find_jdks(cfg.jvm_root)
        if not jdks:
            raise NodeError("no Java found (JAVA_HOME unset and nothing under /usr/lib/jvm)",
                            fix="install a JDK 21+ (or 17 for OpenSearch 2.19) and set JAVA_HOME")
        want = cfg.version
        need = 21 if (want or VERSION_3X).startswith("3.") else 11
        for major, home in jdks:
            if major >= need:
                return (want or VERSION_3X), home
        if want is None:
            for major, home in jdks:
                if major >= 17:
                    return VERSION_2X, home
        raise NodeError(f"OpenSearch {want or VERSION_3X} needs Java {need}+, found only "
                        f"{', '.join(str(m) for m, _ in jdks)}",
                        fix="install a Temurin 21+ JDK and set JAVA_HOME to it")

    # -- fetching and installing -------------------------------------------------------
    def _artifacts(self, version: str) -> list[tuple[str, str, str]]:
        """(name, maven coordinate, file name) of the distribution and each plugin."""
        items = [("opensearch", f"org.opensearch.distribution.integ-test-zip:opensearch:{version}:zip",
                  f"opensearch-{version}.zip"),
                 ("knn", f"org.opensearch.plugin:opensearch-knn:{version}.0:zip",
                  f"opensearch-knn-{version}.0.zip")]
        for name in OPTIONAL_PLUGINS:
            if name in self.config.plugins:
                ga = OPTIONAL_PLUGINS[name]
                items.append((name, f"{ga}:{version}.0:zip", f"{ga.split(':')[1]}-{version}.0.zip"))
        return items

    def fetch(self, version: str) -> dict[str, Path]:
        """Download every zip not already cached and intact; returns name -> path."""
        downloads = self.cache / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, coord, fname in self._artifacts(version):
            path = downloads / fname
            if path.exists() and not _zip_ok(path):
                path.unlink()  # corrupt or truncated: fetch it again
            if not path.exists():
                self._mvn_copy(coord, downloads)
                if not path.exists() or not _zip_ok(path):
                    raise NodeError(f"download of {coord} left no intact {path}",
                                    fix=f"delete {downloads} and retry; check that Maven can reach its registry")
            paths[name] = path
        return paths

    @staticmethod
    def _mvn_copy(coord: str, out: Path) -> None:
        mvn = shutil.which("mvn")
        if not mvn:
            raise NodeError("Maven (mvn) is not on PATH; it fetches OpenSearch",
                            fix="apt-get install maven, or set OPENSEARCH_URL to an existing node")
        print(f"fetching {coord} ...", flush=True)
        proc = subprocess.run([mvn, "-B", "-q", "dependency:copy", f"-Dartifact={coord}",
                               f"-DoutputDirectory={out}"], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            err = [ln for ln in proc.stdout.splitlines() + proc.stderr.splitlines() if "ERROR" in ln]
            raise NodeError(f"mvn could not fetch {coord}: {(err or ['(no message)'])[0][:300]}",
                            fix="check the version exists in Maven Central and that mvn works offline-free")

    def install(self, version: str, java_home: Path) -> Path:
        """Unpack the distribution and install the plugins (once); returns its home."""
        zips = self.fetch(version)
        home = self.cache / f"opensearch-{version}"
        marker = home / ".osreco-install.json"
        if home.exists() and not marker.exists():
            shutil.rmtree(home)  # a half-finished unpack from an earlier interrupted run
        if not home.exists():
            tmp = self.cache / f".unpack-{version}"
            shutil.rmtree(tmp, ignore_errors=True)
            with zipfile.ZipFile(zips["opensearch"]) as zf:
                zf.extractall(tmp)
            inner = tmp / f"opensearch-{version}"
            for p in (inner / "bin").iterdir():
                p.chmod(0o755)
            inner.rename(home)
            shutil.rmtree(tmp, ignore_errors=True)
            marker.write_text(json.dumps({"version": version, "plugins": []}))
        installed = set(json.loads(marker.read_text())["plugins"])
        for name in ["knn", *OPTIONAL_PLUGINS]:
            if name not in zips or name in installed:
                continue
            self._install_plugin(home, java_home, zips[name], name)
            installed.add(name)
            marker.write_text(json.dumps({"version": version, "plugins": sorted(installed)}))
        return home

    @staticmethod
    def _install_plugin(home: Path, java_home: Path, zip_path: Path, name: str) -> None:
        folder = home / "plugins" / PLUGIN_FOLDERS[name]
        if folder.exists():
            shutil.rmtree(folder)
        env = {**os.environ, "JAVA_HOME": str(java_home)}
        proc = subprocess.run([str(home / "bin" / "opensearch-plugin"), "install", "--batch",
                               zip_path.as_uri()], capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-5:])
            raise NodeError(f"plugin {name} did not install from {zip_path}:\n{tail}",
                            fix=f"delete {zip_path} to re-download it, or drop {name} with --plugins")

    # -- running -----------------------------------------------------------------------
    def state(self) -> dict | None:
        """The recorded state of a running node, or None when none is recorded alive."""
        try:
            st = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return st if _pid_alive(st.get("pid", -1)) else None

    def url(self) -> str | None:
        st = self.state()
        return st["url"] if st else None

    def start(self) -> str:
        """Start the node (or find it running) and wait for green health and k-NN.

        Returns:
            The node's base URL, e.g. ``http://127.0.0.1:41234``.
        Raises:
            NodeError: with the cause, the fix and the tail of the node's log.
        """
        if (st := self.state()) and _healthy(st["url"]):
            return st["url"]
        if st:  # alive but unhealthy: a stale process from an earlier run
            self._terminate(st["pid"])
        port = self.config.port or _free_port()
        if _port_in_use(port):
            raise NodeError(f"port {port} is already in use on 127.0.0.1",
                            fix="pass --port 0 to pick a free one, or stop what listens there")
        version, java_home = self.resolve_runtime()
        home = self.install(version, java_home)
        transport = _free_port()
        data, logs = self.node_dir / "data", self.node_dir / "logs"
        for d in (data, logs, self.node_dir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
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
        if os.geteuid() == 0:
            self._own_by_service_user(home)
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

    def _own_by_service_user(self, home: Path) -> None:
        """OpenSearch will not run as root: run it as a system user that owns its folders."""
        if subprocess.run(["id", SERVICE_USER], capture_output=True).returncode != 0:
            proc = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                                   "/usr/sbin/nologin", SERVICE_USER], capture_output=True, text=True)
            if proc.returncode != 0:
                raise NodeError(f"cannot create user {SERVICE_USER}: {proc.stderr.strip()}",
                                fix="run osreco as a non-root user, or create that user yourself")
        for path in (self.cache, home, self.node_dir):
            path.chmod(0o755)
        subprocess.run(["chown", "-R", f"{SERVICE_USER}:", str(home), str(self.node_dir)], check=True)

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
            out["health"] = _get_json(f"{st['url']}/_cluster/health")["status"]  # type: ignore[index]
            out["loaded_plugins"] = sorted({p["component"] for p in _get_json(f"{st['url']}/_cat/plugins?format=json")})  # type: ignore[union-attr]
        except (OSError, urllib.error.URLError, ValueError) as e:
            out["health"] = f"unreachable ({e})"
        return out

    def with_config(self, **changes: object) -> "LocalNode":
        return LocalNode(replace(self.config, **changes))  # type: ignore[arg-type]


def _zip_ok(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return bool(zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


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
    return health.get("status") == "green" and any(  # type: ignore[union-attr]
        p.get("component") == "opensearch-knn" for p in plugins)  # type: ignore[union-attr]


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
