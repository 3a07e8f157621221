"""Voice: spoken queries through the real sidecar (gunicorn, two workers) and spoken catalog items
through `osreco ingest load --audio-field`, with the packaged Whisper base and real synthesized
speech (Debian's flite); every bad recording is one 4xx naming the problem, never a 500 or a hang."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from osreco.evaluation.voice import speak, word_error_rate
from osreco.exporter.asr import AudioLimits, Transcriber, decode_audio, is_silent, whisper_base_from_packages
from osreco.exporter.errors import AudioInputError, ModelDirError
from osreco.plugin.config import Limits
from osreco.plugin.errors import PayloadTooLargeError, RequestError
from osreco.plugin.schemas import parse_search, parse_search_form
from osreco.plugin.voice import vocabulary_prompt

QUERY = "cheap red running shoes under 50 dollars, not Nike"


def _encode(samples: np.ndarray, fmt: str, codec: str, rate: int = 16000) -> bytes:
    """``samples`` (float32 mono) written by PyAV in container ``fmt`` with ``codec``."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
        for start in range(0, pcm.shape[1], rate):
            frame = av.AudioFrame.from_ndarray(pcm[:, start:start + rate], format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return whisper_base_from_packages()


@pytest.fixture(scope="module")
def spoken() -> bytes:
    return speak(QUERY)


# ---- decoding and caps (no node) ---------------------------------------------------------------

def test_decode_reads_wav_and_flac_to_16k_mono(spoken):
    samples = decode_audio(spoken)
    assert samples.dtype == np.float32 and samples.ndim == 1 and 1.0 < samples.size / 16000 < 10.0
    flac = _encode(samples, "flac", "flac")
    again = decode_audio(flac)
    assert abs(again.size - samples.size) < 1600 and not is_silent(again)


def test_ten_minute_audio_is_refused_before_decoding():
    ten_minutes = _encode(np.zeros(16000 * 600, np.float32), "flac", "flac")
    assert len(ten_minutes) < AudioLimits().max_bytes   # small on the wire: only the duration cap catches it
    with pytest.raises(AudioInputError) as e:
        decode_audio(ten_minutes, AudioLimits(max_seconds=30))
    assert e.value.problem == "too_long" and e.value.status == 413 and "30-second cap" in str(e.value)


@pytest.mark.parametrize("data, problem, status", [
    (b"", "empty", 400),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 200, "unsupported_codec", 415),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "unsupported_codec", 415),   # a wav header cut off
])
def test_bad_audio_is_one_named_error(data, problem, status):
    with pytest.raises(AudioInputError) as e:
        decode_audio(data)
    assert e.value.problem == problem and e.value.status == status and e.value.fix


def test_unsupported_container_is_refused():
    aiff = _encode(np.zeros(16000, np.float32), "aiff", "pcm_s16be")
    with pytest.raises(AudioInputError) as e:
        decode_audio(aiff)
    assert e.value.problem == "unsupported_codec" and "aiff" in str(e.value)


def test_over_the_byte_cap_is_refused(spoken):
    with pytest.raises(AudioInputError) as e:
        decode_audio(spoken, AudioLimits(max_bytes=1000))
    assert e.value.problem == "too_large" and e.value.status == 413


def test_silence_is_no_speech(model_dir):
    asr = Transcriber(model_dir)
    with pytest.raises(AudioInputError) as e:
        asr.transcribe(decode_audio(_encode(np.zeros(16000 * 2, np.float32), "wav", "pcm_s16le")))
    assert e.value.problem == "no_speech" and e.value.status == 422


def test_model_folder_without_files_fails_at_load(tmp_path):
    with pytest.raises(ModelDirError) as e:
        Transcriber(tmp_path)
    assert "model.bin" in str(e.value) and "OSRECO_ASR_MODEL" in str(e.value)


def test_transcribes_real_speech_and_the_prompt_is_the_catalog_vocabulary(model_dir, spoken):
    said = Transcriber(model_dir).transcribe(decode_audio(spoken), "en",
                                             prompt=vocabulary_prompt({"brand": ["nike", "asics"]}))
    assert said.language == "en" and said.seconds > 0
    assert word_error_rate(QUERY, said.text) < 0.5, said.text
    assert vocabulary_prompt({"brand": ["nike", "asics"], "color": ["red"]}) == "nike, red, asics."


def test_word_error_rate():
    assert word_error_rate("red shoes under $50", "red shoes under 50 dollars") == 0.0
    assert word_error_rate("red shoes", "bed shoes") == 0.5
    assert word_error_rate("a b", "") == 1.0


def test_search_body_takes_audio_as_base64_or_a_file_part(spoken):
    limits = Limits()
    req = parse_search({"audio": base64.b64encode(spoken).decode(), "language": "en"}, limits)
    assert req.audio == spoken and req.q == ""
    form = parse_search_form({"k": "5"}, {"audio": io.BytesIO(spoken)}, limits)
    assert form.audio == spoken and form.k == 5
    with pytest.raises(RequestError) as e:
        parse_search({"audio": "not base64!"}, limits)
    assert e.value.field == "audio"
    with pytest.raises(PayloadTooLargeError):
        parse_search_form({}, {"audio": io.BytesIO(spoken)}, Limits(max_audio_bytes=100))


# ---- the sidecar under gunicorn, and ingest (real node) --------------------------------------------

def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.mark.integration
def test_spoken_query_is_searched_like_the_typed_one(opensearch_url, shop, model_dir, spoken):
    from servers import gunicorn_sidecar  # tests/servers.py

    env = {"OPENSEARCH_URL": opensearch_url, "OSRECO_INDEX": shop.alias, "OSRECO_BUNDLE": shop.bundle,
           "OSRECO_DEV_MODE": "1", "OSRECO_BUNDLE_RELOAD_S": "0", "OSRECO_EMBED_VOCABULARY": "0",
           "OSRECO_ASR_MODEL": str(model_dir), "OSRECO_STORE_PREFIX": shop.prefix}
    with gunicorn_sidecar(env, workers=2, threads=2) as url:
        status, typed = _post(f"{url}/v1/search", {"q": QUERY, "k": 10})
        assert status == 200
        status, heard = _post(f"{url}/v1/search", {"audio": base64.b64encode(spoken).decode(), "k": 10})
        assert status == 200, heard
        assert heard["transcript_language"] == "en" and heard["asr_ms"] > 0 and "asr" in heard["timings_ms"]
        assert heard["intent"]["filters"] == typed["intent"]["filters"], heard["transcript"]
        assert heard["intent"]["exclude"] == typed["intent"]["exclude"]
        assert [r["item_id"] for r in heard["results"]] == [r["item_id"] for r in typed["results"]]
        assert all(r["item_id"].startswith("shoe-") and "-nike-" not in r["item_id"] for r in heard["results"])

        ten_minutes = _encode(np.zeros(16000 * 600, np.float32), "flac", "flac")
        status, body = _post(f"{url}/v1/search", {"audio": base64.b64encode(ten_minutes).decode()})
        assert status == 413 and body["error"]["code"] == "audio_too_long"
        silence = _encode(np.zeros(16000 * 2, np.float32), "wav", "pcm_s16le")
        status, body = _post(f"{url}/v1/search", {"audio": base64.b64encode(silence).decode()})
        assert status == 422 and body["error"]["code"] == "no_speech"
        status, body = _post(f"{url}/v1/search", {"audio": base64.b64encode(b"not audio at all" * 20).decode()})
        assert status == 415 and body["error"]["code"] == "unsupported_audio"
        with urllib.request.urlopen(f"{url}/metrics", timeout=30) as r:
            metrics = r.read().decode()
        assert any(line.startswith("osreco_stage_seconds_count{") and 'stage="asr"' in line and float(
            line.rsplit(" ", 1)[1]) >= 4 for line in metrics.splitlines()), "asr stage not counted"


@pytest.mark.integration
def test_audio_refused_without_a_speech_model(opensearch_url, shop):
    from osreco.plugin.app import create_app
    from osreco.plugin.config import SidecarConfig

    cfg = SidecarConfig.from_env({"OPENSEARCH_URL": opensearch_url, "OSRECO_INDEX": shop.alias,
                                  "OSRECO_DEV_MODE": "1", "OSRECO_BUNDLE_RELOAD_S": "0"})
    short = speak("shoes")   # under the JSON body limit, which is all a sidecar without voice accepts
    resp = create_app(cfg).test_client().post("/v1/search", json={"audio": base64.b64encode(short).decode()})
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "audio"
    assert "OSRECO_ASR_MODEL" in resp.get_json()["error"]["fix"]


@pytest.mark.integration
def test_spoken_catalog_items_are_found_by_what_they_say(opensearch_url, os_client, tmp_path, model_dir, tiny_bundle):
    topics = {"ep1": ("sourdough bread", "This episode is about baking sourdough bread at home."),
              "ep2": ("electric cars", "Electric cars explained: batteries and charging at home."),
              "ep3": ("chess openings", "Chess openings for club players: the Sicilian defence and the Italian game.")}
    rows = []
    for item_id, (_, said) in topics.items():
        (tmp_path / f"{item_id}.wav").write_bytes(speak(said))
        rows.append({"item_id": item_id, "title": f"Episode {item_id[2:]}", "audio": f"{item_id}.wav"})
    (tmp_path / "silent.wav").write_bytes(_encode(np.zeros(16000, np.float32), "wav", "pcm_s16le"))
    rows += [{"item_id": "gone", "title": "Missing", "audio": "nowhere.wav"},
             {"item_id": "quiet", "title": "Quiet", "audio": "silent.wav"}]
    catalog = tmp_path / "podcasts.jsonl"
    catalog.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    alias = f"t-voice-{uuid.uuid4().hex[:8]}"
    dead = tmp_path / "dead.jsonl"

    def load() -> dict:
        proc = subprocess.run([sys.executable, "-m", "osreco.cli", "ingest", "load", str(catalog), "--bundle",
                               str(tiny_bundle), "--index", alias, "--audio-field", "audio", "--asr-model",
                               str(model_dir), "--audio-language", "en", "--dead-letter", str(dead), "--json"],
                              capture_output=True, text=True, timeout=600,
                              env={**__import__("os").environ, "OPENSEARCH_URL": opensearch_url})
        assert proc.returncode == 1, proc.stderr   # ran, with dead letters
        return json.loads(proc.stdout)

    try:
        first = load()
        assert first["indexed"] == 3 and first["dead_lettered"] == 2
        reasons = {json.loads(line)["item_id"]: json.loads(line) for line in dead.read_text().splitlines()}
        assert set(reasons) == {"gone", "quiet"}
        assert reasons["gone"]["reason"] == "audio nowhere.wav: audio file does not exist"
        assert "silent" in reasons["quiet"]["reason"] and "has speech" in reasons["quiet"]["fix"]
        os_client.indices.refresh(index=alias)
        for item_id, (topic, _) in topics.items():
            hits = os_client.search(index=alias, body={"size": 3, "query": {"multi_match": {
                "query": topic, "fields": ["title^2", "text", "transcript"]}}})["hits"]["hits"]
            assert item_id in [h["_id"] for h in hits], (topic, [h["_source"].get("transcript") for h in hits])
        again = load()   # unchanged recordings are not transcribed again, and nothing is re-indexed
        assert again["indexed"] == 0 and again["unchanged"] == 3
    finally:
        os_client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True,
                                 expand_wildcards="all")
