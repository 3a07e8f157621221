"""Audio item features: transcribe each item's recording into ``transcript``, searched and embedded.

``with_audio`` sits between the catalog reader and the writer, like ``with_images``. For every
item with an ``audio`` reference (local path — relative to the catalog's folder —, ``file://``
or ``http(s)`` URL with ``Content-Type: audio/*``) it reads the bytes under the caps of
``AudioLimits`` (size, duration checked before decoding, download timeout), hashes them and
transcribes them with faster-whisper (``osreco.exporter.asr``) — unless the stored document
already has the same ``audio_hash``, whose transcript is reused (an unchanged recording is never
transcribed again). The transcript is appended to the text the encoder embeds and indexed as
the analysed ``transcript`` field, so BM25 and meaning both find a podcast by what it says.

An item whose audio cannot be used (missing, unreachable, over a cap, corrupt, an unsupported
codec, silent) is dead-lettered as a whole with the reason (field ``audio``), as an item with a
broken picture is: fix the recording (or drop the column) and rerun — the load is idempotent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from osreco.exporter.asr import AudioLimits, Transcript, decode_audio
from osreco.exporter.errors import AudioInputError
from osreco.ingest.catalog import CatalogEntry, CatalogItem
from osreco.ingest.errors import ConfigError, RowError
from osreco.ingest.media import by_chunks, fetch_media, stored_lookup

__all__ = ["AUDIO_FIELDS", "ItemAudioLimits", "fetch_audio", "stored_transcripts", "with_audio"]

AUDIO_FIELDS = ("transcript", "audio_hash", "transcript_language")


class TranscriberLike(Protocol):
    """What the audio stage needs from ``osreco.exporter.asr.Transcriber``."""

    def transcribe(self, samples: np.ndarray, language: str | None = None, *, name: str = "audio") -> Transcript: ...


@dataclass(frozen=True)
class ItemAudioLimits:
    """Caps on one item recording: bytes, seconds, download timeout, and an optional language hint."""

    max_bytes: int = 50 * 1024 * 1024
    max_seconds: float = 1800.0
    timeout_s: float = 30.0
    language: str | None = None

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or not self.max_seconds > 0 or not self.timeout_s > 0:
            raise ConfigError(f"audio limits must be positive, got {self}", field="--audio-max-bytes",
                              fix="pass positive --audio-max-bytes / --audio-max-seconds / --audio-timeout")


def _error(message: str, problem: str, ref: str, fix: str) -> Exception:
    return AudioInputError(message, problem, ref, fix)


def fetch_audio(ref: str, limits: ItemAudioLimits, base_dir: Path | None = None) -> bytes:
    """The recording's bytes, at most ``limits.max_bytes`` (see :func:`osreco.ingest.media.fetch_media`).

    Raises:
        AudioInputError: missing file, unreachable URL, not ``audio/*``, over the size cap.
    """
    return fetch_media(ref, kind="audio", max_bytes=limits.max_bytes, timeout_s=limits.timeout_s, base_dir=base_dir,
                       error=_error, cap_option="--audio-max-bytes", timeout_option="--audio-timeout")


def _dead(item: CatalogItem, error: AudioInputError) -> RowError:
    fix = ("check that the recording has speech, or leave this item's audio empty" if error.problem == "no_speech"
           else error.fix)
    row_error = RowError(f"audio {item.fields.get('audio')!s}: {error.args[0]}", line=item.line, field="audio",
                         fix=fix, row={"item_id": item.item_id})
    row_error.context["item_id"] = item.item_id
    row_error.context["problem"] = error.problem
    return row_error


def _with_transcript(item: CatalogItem, digest: str, text: str, language: str) -> CatalogItem:
    fields = dict(item.fields, transcript=text, audio_hash=digest, transcript_language=language)
    embed = ". ".join(p for p in (item.embed_text, text) if p)
    return replace(item, fields=fields, embed_text=embed)


def with_audio(entries: Iterable[CatalogEntry], transcriber: TranscriberLike, stored: Any = None,
               limits: ItemAudioLimits | None = None, base_dir: Path | None = None,
               batch_size: int = 16) -> Iterator[CatalogEntry]:
    """Add ``transcript``, ``transcript_language`` and ``audio_hash`` to every item with ``audio``.

    Args:
        entries: the catalog reader's items and row errors, in order.
        transcriber: a loaded Whisper model.
        stored: ``ids -> {id: {"audio_hash", "transcript", ...}}`` of documents already indexed
            (their transcripts are reused when the hash matches), or None.
        limits: size, duration and timeout caps, and the language hint.
        base_dir: folder relative paths are read from (the catalog's).
        batch_size: items looked up in ``stored`` together.
    Yields:
        The entries in order; an item whose audio fails becomes a ``RowError`` (field ``audio``).
    """
    caps = limits or ItemAudioLimits()
    yield from by_chunks(entries, batch_size,
                         lambda chunk: _transcribe_chunk(chunk, transcriber, stored, caps, base_dir))


def _transcribe_chunk(chunk: list[CatalogEntry], transcriber: TranscriberLike, stored: Any,
                      limits: ItemAudioLimits, base_dir: Path | None) -> list[CatalogEntry]:
    out = list(chunk)
    wanted = [(k, e) for k, e in enumerate(chunk)
              if isinstance(e, CatalogItem) and not e.deleted and e.fields.get("audio")]
    old = stored([e.item_id for _, e in wanted]) if stored and wanted else {}
    caps = AudioLimits(max_bytes=limits.max_bytes, max_seconds=limits.max_seconds)
    for k, item in wanted:
        ref = str(item.fields["audio"])
        try:
            data = fetch_audio(ref, limits, base_dir)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            prior = old.get(item.item_id) or {}
            if prior.get("audio_hash") == digest and prior.get("transcript"):
                out[k] = _with_transcript(item, digest, str(prior["transcript"]),
                                          str(prior.get("transcript_language") or ""))
                continue
            said = transcriber.transcribe(decode_audio(data, caps, name=f"audio of item {item.item_id}"),
                                          limits.language, name=f"audio of item {item.item_id}")
            out[k] = _with_transcript(item, digest, said.text, said.language)
        except AudioInputError as e:
            out[k] = _dead(item, e)
    return out


def stored_transcripts(client: Any, indexes: Iterable[str | None]) -> Any:
    """A lookup of already indexed ``audio_hash`` / ``transcript`` by item id (for reuse)."""
    return stored_lookup(client, indexes, AUDIO_FIELDS)
