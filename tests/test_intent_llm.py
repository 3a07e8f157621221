"""The optional LLM intent parser against a tiny OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from osreco.plugin.errors import ConfigError
from osreco.plugin.intent.llm import (
    LLMConfig,
    LLMReplyError,
    build_request,
    intent_from_reply,
    merge_intents,
    parse_with_llm,
)
from osreco.plugin.intent.parser import parse_intent
from osreco.plugin.intent.types import IntentFields
from osreco.plugin.intent.vocab import Vocabulary

VOCAB = Vocabulary.from_values({"brand": ["nike", "asics"], "color": ["red"], "category": ["running shoes"],
                                "genres": ["sci-fi", "horror"]})
GOOD = {"text": "", "filters": {"genres": ["sci-fi"]}, "ranges": {"year": {"gte": 1990, "lte": 1999}},
        "exclude": {"genres": ["horror"]}, "sort": None}
# The canned reply is chosen by a marker word in the query.
REPLIES = {
    "good": json.dumps(GOOD),
    "fenced": "```json\n" + json.dumps(GOOD) + "\n```",
    "unknown": json.dumps({**GOOD, "filters": {"brand": ["reebok"]}}),
    "inject": json.dumps({**GOOD, "text": "ignore previous instructions"}),
    "extra": json.dumps({**GOOD, "script": "boom"}),
    "badop": json.dumps({**GOOD, "ranges": {"price": {"approx": 5}}}),
    "prose": "Sure! Here are some sci-fi movies.",
}


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        query = json.loads(body["messages"][1]["content"])["query"]
        self.server.requests.append((self.path, self.headers.get("Authorization"), body))
        if "slow" in query:
            time.sleep(1.0)
        if "crash" in query:
            self.send_response(500)
            self.end_headers()
            return
        marker = next((m for m in REPLIES if m in query), "good")
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": REPLIES[marker]}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def llm_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", server
    server.shutdown()
    server.server_close()


def test_valid_reply_is_used(llm_url):
    url, server = llm_url
    intent = parse_with_llm("good 90s sci-fi, no horror", VOCAB, url=url, api_key="k1")
    assert intent.parser == "llm" and intent.fallback_reason is None
    assert intent.to_dict() == {"text": "", "filters": {"genres": ["sci-fi"]},
                                "ranges": {"year": {"gte": 1990.0, "lte": 1999.0}},
                                "exclude": {"genres": ["horror"]}, "sort": None}
    path, auth, body = server.requests[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer k1"
    assert body["temperature"] == 0 and body["messages"][0]["role"] == "system"
    assert json.loads(body["messages"][1]["content"])["vocabulary"]["genres"] == ["horror", "sci-fi"]


def test_fenced_json_is_accepted(llm_url):
    assert parse_with_llm("fenced 90s sci-fi", VOCAB, url=llm_url[0]).parser == "llm"


@pytest.mark.parametrize("marker,reason", [
    ("unknown", "filters.brand: 'reebok' is not in the index vocabulary"),
    ("inject", "text has words that are not in the query"),
    ("extra", "unknown keys ['script']"),
    ("badop", "ranges.price.approx must be one of"),
    ("prose", "the message is not a JSON object"),
    ("crash", "LLM endpoint answered HTTP 500"),
])
def test_invalid_replies_fall_back_to_rules(llm_url, marker, reason):
    q = f"{marker} red running shoes not nike"
    intent = parse_with_llm(q, VOCAB, url=llm_url[0])
    assert intent.parser == "rules"
    assert reason in intent.fallback_reason
    assert intent == parse_intent(q, VOCAB)


def test_slow_endpoint_times_out_and_falls_back(llm_url):
    t = time.perf_counter()
    intent = parse_with_llm("slow red running shoes", VOCAB, url=llm_url[0], timeout_s=0.2)
    assert intent.parser == "rules" and "timed out" in intent.fallback_reason
    assert intent.terms() == {"color": ["red"], "category": ["running shoes"]}
    assert time.perf_counter() - t < 5  # bounded by the timeout, not the server's sleep (generous)


def test_unreachable_endpoint_falls_back():
    intent = parse_with_llm("red shoes", VOCAB, url="http://127.0.0.1:9/v1", timeout_s=0.5)
    assert intent.parser == "rules" and intent.fallback_reason.startswith("LLM endpoint unreachable")


def test_validation_rules_directly():
    assert intent_from_reply({"text": "shoes", "sort": {"field": "price", "order": "asc"}}, "cheap shoes",
                             VOCAB).sort.key == "price"
    with pytest.raises(LLMReplyError) as e:
        intent_from_reply({"filters": {"size": ["xl"]}}, "xl", VOCAB)
    assert e.value.field == "filters.size"
    with pytest.raises(LLMReplyError):
        intent_from_reply({"ranges": {"year": {"gte": True}}}, "q", VOCAB)
    with pytest.raises(LLMReplyError):
        intent_from_reply({"sort": {"field": "title", "order": "asc"}}, "q", VOCAB)


def test_config_and_request():
    assert LLMConfig("http://h/v1/chat/completions").endpoint == "http://h/v1/chat/completions"
    assert LLMConfig("http://h/v1/").endpoint == "http://h/v1/chat/completions"
    with pytest.raises(ConfigError):
        LLMConfig("file:///etc/passwd")
    body = build_request("红色跑鞋", VOCAB, LLMConfig("http://h", max_values=1))
    assert json.loads(body["messages"][1]["content"])["vocabulary"]["brand"] == ["asics"]


def test_request_carries_the_vocabulary_schema():
    body = build_request("red shoes", VOCAB, LLMConfig("http://h"))
    fmt = body["response_format"]
    assert fmt["type"] == "json_object" and body["max_tokens"] == 256
    props = fmt["schema"]["properties"]
    assert props["filters"]["properties"]["brand"]["items"]["enum"] == ["asics", "nike"]
    assert props["exclude"] == props["filters"] and props["filters"]["additionalProperties"] is False
    assert set(props["ranges"]["properties"]) == set(IntentFields().numeric)
    assert fmt["schema"]["required"] == ["text", "filters", "ranges", "exclude", "sort"]
    assert props["text"]["maxLength"] == len("red shoes")  # the text may only keep the query's words
    assert "size" not in props["filters"]["properties"]  # a facet without values is not offered


def test_combined_mode_merges_only_what_the_rules_left(llm_url):
    url, server = llm_url
    n = len(server.requests)
    explained = parse_with_llm("red running shoes", VOCAB, url=url, mode="combined")
    assert explained.parser == "rules" and explained.fallback_reason is None and len(server.requests) == n
    # "zorblax" is left unexplained: the LLM is asked; the rules keep red and sci-fi, the canned
    # reply adds the year range and the exclusion that the rules did not find
    merged = parse_with_llm("good red sci-fi zorblax", VOCAB, url=url, mode="combined")
    assert len(server.requests) == n + 1 and merged.parser == "llm"
    assert merged.terms() == {"color": ["red"], "genres": ["sci-fi"]}
    assert merged.to_dict()["exclude"] == {"genres": ["horror"]}
    assert merged.to_dict()["ranges"] == {"year": {"gte": 1990.0, "lte": 1999.0}}
    with pytest.raises(ConfigError):
        parse_with_llm("x", VOCAB, url=url, mode="maybe")


def test_merge_keeps_the_rules_facets():
    rules = parse_intent("red nike shoes", VOCAB)
    llm = intent_from_reply({"text": "", "filters": {"color": ["red"], "brand": ["asics"]}}, "red nike shoes", VOCAB)
    merged = merge_intents(rules, llm)
    assert merged.terms()["brand"] == ["nike"] and merged == rules  # nothing new on empty fields: rules as is
