"""The voice half of a search: a spoken query becomes text, then the same intent path as a typed one.

With a Whisper model (``OSRECO_ASR_MODEL``, CTranslate2 format, loaded once at start-up) the
sidecar accepts ``audio`` in ``POST /v1/search`` — a multipart file part or base64 in the JSON
body — of wav, flac, ogg or mp3. The audio is checked before any work (bytes cap, format, the
container's declared duration against ``OSRECO_MAX_AUDIO_S``; decoding stops at the cap), so a
10-minute file is refused at once and never hangs a worker; silence is a 422, an unsupported or
corrupt file a 415/400, each naming the problem.

Recognition is primed with the catalog's own words: the index's facet values (brands,
colours, categories, genres) go into Whisper's initial prompt (``OSRECO_ASR_VOCAB_PROMPT``),
which turns "Asics" or "JBL" from guesses into the catalog's spelling. The request's
``language`` is the recognition hint; without one Whisper detects it and the detected language
(``zh`` or ``en``) drives intent parsing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from osreco.exporter.asr import AudioLimits, Transcriber, decode_audio
from osreco.plugin.config import SidecarConfig
from osreco.plugin.errors import RequestError
from osreco.plugin.schemas import LANGUAGES, SearchRequest

__all__ = ["SpokenQuery", "VoiceSearch", "vocabulary_prompt"]

PROMPT_VALUES = 120
"""How many facet values the recognition prompt may name (Whisper reads about 220 prompt tokens)."""


@dataclass(frozen=True)
class SpokenQuery:
    """A transcribed query: the text, its language, and the milliseconds recognition took."""

    text: str
    language: str
    asr_ms: float
    audio_s: float

    def request(self, req: SearchRequest) -> SearchRequest:
        """``req`` as if typed: the transcript after any typed words, the detected language when
        the request named none (and the parser knows it)."""
        language = req.language or (self.language if self.language in LANGUAGES else None)
        return replace(req, q=" ".join(filter(None, (req.q, self.text))), language=language, audio=None)

    def describe(self) -> dict[str, Any]:
        """The response's view of it."""
        return {"transcript": self.text, "transcript_language": self.language, "asr_ms": round(self.asr_ms, 1),
                "audio_s": round(self.audio_s, 2)}


def vocabulary_prompt(values: dict[str, list[str]] | None, limit: int = PROMPT_VALUES) -> str | None:
    """Whisper's initial prompt from facet values: most common first, round-robin across facets."""
    if not values:
        return None
    lists = [list(v) for v in values.values() if v]
    picked: list[str] = []
    for i in range(max((len(v) for v in lists), default=0)):
        for v in lists:
            if i < len(v) and len(picked) < limit:
                picked.append(v[i])
    return ", ".join(picked) + "." if picked else None


class VoiceSearch:
    """Transcribes spoken queries with one loaded Whisper model.

    Args:
        transcriber: the loaded model, or None (no voice search: audio is refused with a 400
            naming ``OSRECO_ASR_MODEL``).
        limits: the caps on one spoken query.
        vocab_prompt: prime recognition with the index's facet values.
    """

    def __init__(self, transcriber: Transcriber | None, limits: AudioLimits, vocab_prompt: bool = True):
        self.transcriber, self.limits, self.vocab_prompt = transcriber, limits, vocab_prompt

    @classmethod
    def from_config(cls, config: SidecarConfig) -> VoiceSearch:
        """Load ``config.asr_model_dir`` when set.

        Raises:
            ModelDirError / RuntimeEnvError: the folder is not a Whisper model, or faster-whisper
                is not installed (at start-up, never per request).
        """
        limits = AudioLimits(max_bytes=config.limits.max_audio_bytes, max_seconds=config.limits.max_audio_s)
        if not config.asr_model_dir:
            return cls(None, limits, config.asr_vocab_prompt)
        return cls(Transcriber(config.asr_model_dir, threads=config.asr_threads), limits, config.asr_vocab_prompt)

    @property
    def enabled(self) -> bool:
        """Whether spoken queries are accepted."""
        return self.transcriber is not None

    def transcribe(self, audio: bytes, language: str | None, vocabulary: dict[str, list[str]] | None) -> SpokenQuery:
        """The query ``audio`` speaks.

        Raises:
            RequestError: voice search is off.
            AudioInputError: over a cap (413), unsupported or corrupt (415/400), silent (422).
        """
        if self.transcriber is None:
            raise RequestError("this sidecar has no speech model, so audio cannot be searched", field="audio",
                               fix="type the query, or start the sidecar with OSRECO_ASR_MODEL")
        samples = decode_audio(audio, self.limits, name="audio")
        prompt = vocabulary_prompt(vocabulary) if self.vocab_prompt else None
        said = self.transcriber.transcribe(samples, language, name="audio", prompt=prompt)
        return SpokenQuery(text=said.text, language=said.language, asr_ms=said.seconds * 1000.0,
                           audio_s=said.duration_s)

