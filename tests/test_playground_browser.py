"""The playground in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by Selenium) against the real sidecar under gunicorn and the real node.

A small movie catalog with known genres, years and popularity, a ``<script>`` title, and a
known user whose stored taste (a tiny CF model) prefers an unpopular comedy. The test types a
query and checks the chips against the intent and the results against the chips, removes a
chip, switches user, compares two settings, and checks that markup in a title is only text.
With ``OSRECO_SCREENSHOTS=1`` it also saves the main views to ``docs/img/playground-*.png``.
A missing browser skips the test, except with ``CI=true``, where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from servers import gunicorn_sidecar  # tests/servers.py

from osreco.cf import store as cf_store
from osreco.cf.model import CFConfig, CFModel
from osreco.cf.privacy import pseudonymize
from osreco.exporter.encoder import Encoder
from osreco.ingest.catalog import FieldMap, read_catalog
from osreco.ingest.index_spec import IndexSpec
from osreco.ingest.rebuild import ensure_index
from osreco.ingest.writer import WriteConfig, index_items
from osreco.plugin.config import DEV_HMAC_KEY

pytestmark = pytest.mark.integration

IN_CI = os.environ.get("CI", "").lower() == "true"
SCREENSHOTS = os.environ.get("OSRECO_SCREENSHOTS") == "1"
IMG_DIR = Path(__file__).resolve().parents[1] / "docs" / "img"
WAIT_S = 60.0  # an upper bound for one search in the page on a busy machine, not a measurement
SCRIPT_TITLE = "<script>alert(1)</script>"
IMG_TITLE = '<img src="x" id="injected">'

# item id: (title, genre, year, popularity, taste factor)
MOVIES: dict[str, tuple[str, str, int, float, list[float]]] = {
    "c1": ("Laugh Factory", "comedy", 1994, 90, [0.0, 1.0]),
    "c2": ("Sunny Days", "comedy", 1996, 80, [0.1, 1.0]),
    "c3": ("Office Antics", "comedy", 1998, 70, [0.0, 1.0]),
    "c4": ("Quiet Giggles", "comedy", 1992, 5, [1.0, 0.0]),  # the known user's taste, least popular
    "c5": (SCRIPT_TITLE, "comedy", 1995, 50, [0.0, 1.0]),
    "c6": (IMG_TITLE, "comedy", 1997, 40, [0.0, 1.0]),
    "c7": ("Modern Jokes", "comedy", 2015, 95, [0.0, 1.0]),
    "c8": ("New Laughs", "comedy", 2018, 85, [0.2, 1.0]),
    "d1": ("Rain Drama", "drama", 1995, 60, [0.0, 1.0]),
    "d2": ("Heavy Hearts", "drama", 2010, 40, [0.0, 1.0]),
    "h1": ("Night Scream", "horror", 1996, 30, [1.0, 0.0]),  # in the known user's history
    "h2": ("Dark House", "horror", 2012, 10, [0.0, 1.0]),
}
QUERY = "comedy from the 90s"
QUERY_AGAIN = "90s comedy"  # the same intent in other words


@pytest.fixture(scope="module")
def movies(os_client, tiny_bundle, tmp_path_factory) -> Iterator[SimpleNamespace]:
    """The catalog behind a fresh alias, item factors and the known user's taste in the store,
    and the same factors saved as the served CF model."""
    alias = f"t-pg-{uuid.uuid4().hex[:8]}"
    root = tmp_path_factory.mktemp("playground")
    path = root / "items.jsonl"
    rows = [{"item_id": i, "title": t, "text": f"{t} a {g} film", "genres": [g], "year": y, "popularity": p}
            for i, (t, g, y, p, _) in MOVIES.items()]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    fields = FieldMap(facets={"genres": "genres"},
                      numeric={"year": ("year", "integer"), "popularity": ("popularity", "float")})
    enc = Encoder(tiny_bundle, threads=1)
    spec = IndexSpec.from_encoder(enc, alias, cf_dim=2).with_fields(facets=("genres",))
    assert index_items(os_client, enc, ensure_index(os_client, spec), read_catalog(path, fields),
                       WriteConfig()).ok
    store = cf_store.StoreConfig(prefix=f"{alias}-s", item_index=alias)
    ids = list(MOVIES)
    factors = np.asarray([m[4] for m in MOVIES.values()], np.float32)
    cf_store.write_item_factors(os_client, store, ids, factors)
    user = f"u-{uuid.uuid4().hex[:6]}"
    key = pseudonymize(user, DEV_HMAC_KEY)
    taste = np.asarray([[1.0, 0.0]], np.float32)
    cf_store.write_user_vectors(os_client, store, [key], taste, {key: ["h1"]})
    os_client.indices.refresh(index=alias)
    model_dir = root / "cf"
    CFModel(np.asarray(ids), factors, np.asarray([key]), taste, np.asarray([m[3] for m in MOVIES.values()]),
            np.ones(len(ids)), CFConfig(factors=2)).save(model_dir)
    yield SimpleNamespace(alias=alias, bundle=str(tiny_bundle), prefix=store.prefix, cf_dir=str(model_dir),
                          user=user)
    os_client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True,
                             expand_wildcards="all")


@pytest.fixture(scope="module")
def sidecar(movies, opensearch_url) -> Iterator[str]:
    """The real sidecar (gunicorn, two workers) with the playground on."""
    env = {"OPENSEARCH_URL": opensearch_url, "OSRECO_INDEX": movies.alias, "OSRECO_BUNDLE": movies.bundle,
           "OSRECO_STORE_PREFIX": movies.prefix, "OSRECO_CF_MODEL": movies.cf_dir, "OSRECO_FACETS": "genres",
           "OSRECO_DEV_MODE": "1", "OSRECO_PLAYGROUND": "1", "OSRECO_BUNDLE_RELOAD_S": "0",
           # the tiny bundle's random vectors would link query words to arbitrary facet values
           "OSRECO_EMBED_VOCABULARY": "0", "OSRECO_LISTING_CF_WEIGHT": "1.0"}
    with gunicorn_sidecar(env, workers=2, threads=4) as url:
        yield url


def _missing_browser(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser tests never skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through its chromedriver."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing_browser("selenium is not installed: run `make setup`")
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        _missing_browser("chromium/chromedriver not found: run `make setup` "
                         "(apt-get install chromium chromium-driver)")
    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1100"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(WAIT_S)
    try:
        yield chrome
    finally:
        chrome.quit()


# ---- page helpers ---------------------------------------------------------------------------

def _wait(browser: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(condition)
    except TimeoutException:
        status = browser.find_element("id", "status").text
        pytest.fail(f"the page never showed {what}; #status says {status!r}")


def _ids(browser: Any, column: str = "a") -> list[str]:
    cards = browser.find_elements("css selector", f"#results-{column} li.card")
    return [c.get_attribute("data-item-id") for c in cards]


def _chips(browser: Any) -> dict[str, Any]:
    return {c.get_attribute("data-key"): c for c in browser.find_elements("css selector", "#chips .chip")}


def _search(browser: Any, q: str, user: str = "") -> None:
    for field, value in (("q", q), ("user", user)):
        box = browser.find_element("id", field)
        box.clear()
        if value:
            box.send_keys(value)
    browser.find_element("id", "search").click()


def _changed(browser: Any, before: list[str], column: str = "a") -> Callable[[Any], list[str] | bool]:
    def check(_: Any) -> list[str] | bool:
        ids = _ids(browser, column)
        return ids if ids and ids != before else False
    return check


def _screenshot(browser: Any, name: str) -> None:
    if SCREENSHOTS:
        IMG_DIR.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(IMG_DIR / f"playground-{name}.png"))


def _expected_badge(a: list[str], b: list[str], item: str) -> str:
    if item not in a:
        return "new"
    moved = a.index(item) - b.index(item)
    return "" if moved == 0 else (f"↑{moved}" if moved > 0 else f"↓{-moved}")


# ---- the test -------------------------------------------------------------------------------

def test_playground_in_a_real_browser(browser, sidecar, movies):
    from selenium.common.exceptions import NoAlertPresentException

    browser.get(f"{sidecar}/playground")
    assert browser.find_element("id", "q").is_displayed()
    swatches = browser.find_elements("css selector", ".legend .swatch")
    colours = {s.get_attribute("data-signal"): s.value_of_css_property("background-color") for s in swatches}
    assert len(swatches) == 6 and len(set(colours.values())) == 6, colours  # one colour per signal

    # 1. a query -> chips that match the parsed intent, results that satisfy the chips
    _search(browser, QUERY)
    first = _wait(browser, _changed(browser, []), "results for the first query")
    chips = _wait(browser, lambda _: _chips(browser) or False, "intent chips")
    assert {"filter:genres=comedy", "range:year"} <= set(chips), sorted(chips)
    assert chips["range:year"].get_attribute("aria-label") == f"remove {chips['range:year'].text}"
    assert {"c1", "c2", "c3", "c4", "c5", "c6"} == set(first), first
    assert all(MOVIES[i][1] == "comedy" and 1990 <= MOVIES[i][2] <= 1999 for i in first)
    assert first[0] == "c1" and first[-1] == "c4", first  # anonymous: popularity order

    # 2. a title with markup is text: no alert, no injected element, the text itself is visible
    with pytest.raises(NoAlertPresentException):
        _ = browser.switch_to.alert
    assert not browser.find_elements("css selector", "#results-a script, #injected")
    titles = {c.get_attribute("data-item-id"): c.find_element("css selector", ".title").text
              for c in browser.find_elements("css selector", "#results-a li.card")}
    assert titles["c5"] == SCRIPT_TITLE and titles["c6"] == IMG_TITLE, titles

    # 3. remove the year chip -> the decade filter is gone: newer comedies join, still no drama
    chips["range:year"].click()
    widened = _wait(browser, _changed(browser, first), "results after removing the year chip")
    assert "range:year" not in _chips(browser) and "filter:genres=comedy" in _chips(browser)
    assert {"c7", "c8"} & set(widened), widened
    assert all(MOVIES[i][1] == "comedy" for i in widened), widened

    # 4. switch to the known user (a new search: every chip back) -> their taste lifts the least
    # popular comedy; their history is shown
    _search(browser, QUERY_AGAIN, movies.user)
    personal = _wait(browser, _changed(browser, widened), "a personalized order")
    assert {"filter:genres=comedy", "range:year"} <= set(_chips(browser))
    assert set(personal) == set(first) and personal.index("c4") < first.index("c4"), (first, personal)
    _wait(browser, lambda _: "Night Scream" in browser.find_element("id", "history").text, "the user's history")
    bars = browser.find_elements("css selector", "#results-a li.card .bar span.part[data-signal]")
    assert "cf" in {b.get_attribute("data-signal") for b in bars}
    _screenshot(browser, "search")

    # 5. compare: B without personalization -> the anonymous order, rank changes marked on B
    browser.find_element("id", "compare").click()
    personalization_b = browser.find_element("css selector", "#variant-b input[name=personalization]")
    if personalization_b.is_selected():
        personalization_b.click()
    browser.find_element("id", "search").click()
    column_b = _wait(browser, _changed(browser, [], "b"), "the second column")
    column_a = _wait(browser, _changed(browser, [], "a"), "the first column")
    assert column_a == personal and column_b == first, (column_a, column_b)
    badges = {c.get_attribute("data-item-id"): (c.find_elements("css selector", ".rank-change") or [None])[0]
              for c in browser.find_elements("css selector", "#results-b li.card")}
    for item, badge in badges.items():
        expected, shown = _expected_badge(column_a, column_b, item), badge.text.strip() if badge else ""
        if expected:
            assert shown == expected, (item, expected, column_a, column_b)
        else:  # unmoved: no marked change
            assert not shown.startswith(("↑", "↓", "new")), (item, shown)
    assert any(_expected_badge(column_a, column_b, i) for i in column_b)  # at least one marked change
    _screenshot(browser, "compare")

    # 5b. remove the year chip while comparing: focus moves to the next chip (else "Restore removed
    # parts"); then switching B's personalization back on re-runs B alone, keeping the chip removed
    removable = [c.get_attribute("data-key") for c in browser.find_elements("css selector", "#chips button.chip")]
    at = removable.index("range:year")
    _chips(browser)["range:year"].click()
    wide_b = _wait(browser, _changed(browser, column_b, "b"), "column B after removing the year chip")
    assert {"c7", "c8"} & set(wide_b) and all(MOVIES[i][1] == "comedy" for i in wide_b), wide_b
    left = [c.get_attribute("data-key") for c in browser.find_elements("css selector", "#chips button.chip")]
    focused = browser.switch_to.active_element
    if at < len(left):
        assert focused.get_attribute("data-key") == left[at], (removable, left)
    else:
        assert focused.get_attribute("id") == "restore-chips", (removable, left)
    personalization_b.click()  # no Search click: the form's change listener re-runs the search
    personal_b = _wait(browser, _changed(browser, wide_b, "b"), "column B after turning its personalization on")
    assert "range:year" not in _chips(browser) and browser.find_element("id", "restore-chips").is_displayed()
    assert set(personal_b) == set(wide_b) and personal_b.index("c4") < wide_b.index("c4"), (wide_b, personal_b)
    assert personal_b == _ids(browser, "a"), (personal_b, _ids(browser, "a"))  # same settings as A now

    # 6. the read-only settings view names the served index as a definition list
    settings = browser.find_element("id", "settings")
    if settings.tag_name == "details" and not settings.get_attribute("open"):
        settings.find_element("css selector", "summary").click()
    _wait(browser, lambda _: movies.alias in settings.text, "the index alias in the settings view")
    assert settings.find_elements("css selector", "dl dt")
    _screenshot(browser, "settings")

