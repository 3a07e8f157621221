"""The local node's configuration and its distribution: choosing versions and a JDK, fetching the
zips from Maven into the cache and installing OpenSearch with its plugins.

Running the process (start, stop, health, state) lives in :mod:`osreco.node`, which re-exports
:class:`NodeConfig` and :func:`default_cache_dir`; import them from there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osreco.errors import NodeError

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
_TRUE = ("1", "true", "yes", "on")
# ml-commons runs ONNX models with DJL's OnnxRuntime engine, whose NDArray maths (pooling) go to
# PyTorch as DJL's "alternative engine"; DJL's PyTorch LibUtils.downloadPyTorch then fetches
# libtorch from the internet at deploy time. These Maven artifacts supply it offline. Maven
# serves no pytorch-jni for DJL 0.31.1; the next release's JNI for the same PyTorch is used.
DJL_PYTORCH_NATIVE = "ai.djl.pytorch:pytorch-native-cpu:{pytorch}:jar:linux-x86_64"
DJL_PYTORCH_JNI = {("2.5.1", "0.31.1"): "ai.djl.pytorch:pytorch-jni:2.5.1-0.32.0:jar"}


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
    if jvm_root.is_dir():
        homes += sorted(p for p in jvm_root.iterdir() if (p / "bin" / "java").exists() and not p.is_symlink())
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
        fresh: start on an empty data folder (a running node is stopped first); the
            downloads and the install stay cached.
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
    fresh: bool = False

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
    def from_env(cls, **overrides: Any) -> NodeConfig:
        """Build from ``OSRECO_OPENSEARCH_VERSION``, ``OSRECO_NODE_HEAP``, ``OSRECO_NODE_PLUGINS``
        and ``OSRECO_NODE_FRESH`` (``1``/``true``: empty the data folder on start)."""
        kw: dict[str, Any] = {}
        if os.environ.get("OSRECO_OPENSEARCH_VERSION"):
            kw["version"] = os.environ["OSRECO_OPENSEARCH_VERSION"]
        if os.environ.get("OSRECO_NODE_HEAP"):
            kw["heap"] = os.environ["OSRECO_NODE_HEAP"]
        if "OSRECO_NODE_PLUGINS" in os.environ:
            kw["plugins"] = tuple(p for p in os.environ["OSRECO_NODE_PLUGINS"].split(",") if p)
        if os.environ.get("OSRECO_NODE_FRESH", "").strip().lower() in _TRUE:
            kw["fresh"] = True
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)  # field name -> value; __post_init__ validates the values


class Distribution:
    """Pick versions, fetch and install the OpenSearch distribution and plugins into the cache.

    The base of :class:`osreco.node.LocalNode`; needs only ``config`` and ``cache``.
    """

    config: NodeConfig
    cache: Path

    def resolve_runtime(self) -> tuple[str, Path]:
        """Pick (OpenSearch version, JDK home): 3.x on Java 21+, else 2.19.x on Java 17+."""
        cfg = self.config
        jdks = ([(cfg_major, cfg.java_home)] if cfg.java_home and (cfg_major := java_major(cfg.java_home))
                else find_jdks(cfg.jvm_root))
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

    def djl_engine_cache(self, home: Path) -> Path | None:
        """Fill DJL's engine cache with libtorch and its JNI so ml-commons deploys offline.

        Reads the DJL and PyTorch versions from the installed ml-commons plugin, fetches the
        matching ``pytorch-native-cpu`` and ``pytorch-jni`` jars from Maven (once, into
        ``downloads/``) and unpacks them as DJL's ``LibUtils`` looks for them:
        ``<cache>/djl/pytorch/<pytorch>-cpu-precxx11-linux-x86_64/`` (ml-commons sets
        ``PYTORCH_PRECXX11``) holding ``libtorch.so`` and ``<djl>-libdjl_torch.so``.

        Returns:
            The folder to pass as ``ENGINE_CACHE_DIR``, or None (no ml-commons, not x86-64 Linux,
            or a DJL version with no known JNI on Maven).
        """
        props = _engine_properties(home / "plugins" / PLUGIN_FOLDERS["ml-commons"])
        djl, pytorch = props.get("djl_version"), props.get("pytorch_version")
        if not djl or not pytorch or os.uname().machine != "x86_64" or (pytorch, djl) not in DJL_PYTORCH_JNI:
            return None
        root = self.cache / "djl"
        target = root / "pytorch" / f"{pytorch}-cpu-precxx11-linux-x86_64"
        marker = target / ".osreco-complete"
        if marker.exists():
            return root
        downloads = self.cache / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        jars = []
        for coord in (DJL_PYTORCH_NATIVE.format(pytorch=pytorch), DJL_PYTORCH_JNI[(pytorch, djl)]):
            path = downloads / _jar_name(coord)
            if not _zip_ok(path):
                self._mvn_copy(coord, downloads)
                if not _zip_ok(path):
                    raise NodeError(f"download of {coord} left no intact {path}",
                                    fix=f"delete {path} and retry, or drop ml-commons with --plugins")
            jars.append(path)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        with zipfile.ZipFile(jars[0]) as zf:
            for name in zf.namelist():
                if name.startswith("pytorch/cpu/linux-x86_64/") and not name.endswith("/"):
                    (target / Path(name).name).write_bytes(zf.read(name))
        with zipfile.ZipFile(jars[1]) as zf:
            (target / f"{djl}-libdjl_torch.so").write_bytes(zf.read("jnilib/linux-x86_64/cpu/libdjl_torch.so"))
        plain = target.parent / f"{pytorch}-cpu-linux-x86_64"  # where DJL looks without PYTORCH_PRECXX11
        if not plain.exists():
            plain.symlink_to(target.name)
        marker.write_text(json.dumps({"djl": djl, "pytorch": pytorch, "jars": [j.name for j in jars]}))
        return root

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


def fetch_maven_jar(coord: str, cache: Path | None = None) -> Path:
    """One Maven artifact in ``<cache>/downloads`` (fetched with ``mvn`` once, re-fetched if corrupt).

    Args:
        coord: ``group:artifact:version:type[:classifier]``.
        cache: the osreco cache (default :func:`default_cache_dir`).
    Returns:
        The path of the intact file.
    Raises:
        NodeError: mvn is missing or the download failed.
    """
    downloads = (cache or default_cache_dir()) / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    path = downloads / _jar_name(coord)
    if not _zip_ok(path):
        Distribution._mvn_copy(coord, downloads)
        if not _zip_ok(path):
            raise NodeError(f"download of {coord} left no intact {path}",
                            fix=f"delete {path} and retry; check that Maven can reach its registry")
    return path


def _jar_name(coord: str) -> str:
    """The file name ``mvn dependency:copy`` writes for ``group:artifact:version:type[:classifier]``."""
    parts = coord.split(":")
    classifier = f"-{parts[4]}" if len(parts) > 4 else ""
    return f"{parts[1]}-{parts[2]}{classifier}.{parts[3]}"


def _engine_properties(plugin_dir: Path) -> dict[str, str]:
    """``djl_version`` and ``pytorch_version`` from the plugin's pytorch-engine jar ({} if none)."""
    jars = sorted(plugin_dir.glob("pytorch-engine-*.jar"))
    if not jars:
        return {}
    with zipfile.ZipFile(jars[0]) as zf:
        text = zf.read("pytorch-engine.properties").decode()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _zip_ok(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return bool(zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
