/* osreco playground: plain JavaScript, no build step, no external resources.
 * Every string from the user or the catalog is set with textContent / setAttribute; the page
 * never parses data as HTML. The sidecar's Content-Security-Policy forbids inline script and style. */
"use strict";

(function () {
  const SIGNAL_LABELS = {
    bm25: "BM25", dense: "meaning", cf: "taste", neighbors: "neighbours",
    popularity: "popularity", image: "image",
  };
  const HIDDEN_SOURCE = new Set(["item_id", "title", "text", "image", "image_url", "embedding", "cf_vector",
    "cf_neighbors", "description"]);
  const PLAYGROUND_SESSION = "playground";
  const KEY_STORE = "osreco.playground.apiKey";

  // focusChip: after a chip's removal, the index among removable chips to focus once they are rebuilt
  const state = { query: "", drop: [], lastA: [], seq: 0, focusChip: null, features: { image: false, audio: false } };

  const $ = (id) => document.getElementById(id);

  /** A new element with a class and text (text is never parsed as HTML). */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function setStatus(text, isError) {
    const status = $("status");
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  /** The sidecar's error shape as one readable line. */
  function errorText(body, httpStatus) {
    const err = body && body.error;
    if (!err) return "request failed (HTTP " + httpStatus + ")";
    let text = "error: " + (err.message || err.code || "request failed");
    if (err.field) text += " [" + err.field + "]";
    if (err.fix) text += " — fix: " + err.fix;
    return text;
  }

  /** fetch JSON with the API key (when one is entered); rejects with a readable message. */
  async function api(path, options) {
    const opts = Object.assign({ method: "GET" }, options || {});
    const headers = { Accept: "application/json" };
    const key = $("api-key").value.trim();
    if (key) headers["X-API-Key"] = key;
    if (opts.body !== undefined) {
      headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(opts.body);
    }
    opts.headers = headers;
    let response;
    try {
      response = await fetch(path, opts);
    } catch (e) {
      throw new Error("the sidecar cannot be reached: " + e.message);
    }
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) throw new Error(errorText(body, response.status));
    return body;
  }

  function userId() {
    return $("user").value.trim();
  }

  function kValue() {
    const k = parseInt($("k").value, 10);
    return Number.isFinite(k) && k > 0 ? k : 10;
  }

  /** The variant object of one column's form (empty fields fall back to the sidecar's settings). */
  function readVariant(form) {
    const variant = {};
    const fusion = form.elements.namedItem("fusion").value;
    if (fusion) variant.fusion = fusion;
    for (const name of ["bm25_weight", "dense_weight", "cf_weight"]) {
      const raw = form.elements.namedItem(name).value.trim();
      if (raw !== "") variant[name] = Number(raw);
    }
    variant.personalization = form.elements.namedItem("personalization").checked;
    variant.rerank = form.elements.namedItem("rerank").checked;
    return variant;
  }

  function searchBody(variant) {
    const user = userId();
    return { q: state.query, user_id: user || null, k: kValue(), drop: state.drop.slice(), variant: variant };
  }

  // ---- chips -------------------------------------------------------------------------------

  function renderChips(chips) {
    const box = $("chips");
    clear(box);
    for (const chip of chips || []) {
      let node;
      if (chip.removable) {
        node = el("button", "chip chip-" + chip.kind, chip.label);
        node.type = "button";
        node.setAttribute("aria-label", "remove " + chip.label);
        node.title = "remove " + chip.label;
        node.addEventListener("click", () => removeChip(chip.key, node));
      } else {
        node = el("span", chip.kind === "info" ? "chip info" : "chip chip-" + chip.kind, chip.label);
      }
      node.setAttribute("data-key", chip.key);
      node.setAttribute("data-kind", chip.kind);
      box.appendChild(node);
    }
    if (!box.firstChild) box.appendChild(el("span", "note", state.query ? "no filters understood" : ""));
    $("restore-chips").hidden = state.drop.length === 0;
    if (state.focusChip !== null) restoreChipFocus(box, state.focusChip);
    state.focusChip = null;
  }

  /** Keyboard focus after a removal: the next chip (now at the removed one's place), else the
   * "Restore removed parts" button, else the query box. */
  function restoreChipFocus(box, index) {
    const buttons = box.querySelectorAll("button.chip");
    const restore = $("restore-chips");
    if (index >= 0 && index < buttons.length) buttons[index].focus();
    else if (!restore.hidden) restore.focus();
    else $("q").focus();
  }

  function removeChip(key, node) {
    if (!state.drop.includes(key)) state.drop.push(key);
    state.focusChip = Array.prototype.indexOf.call($("chips").querySelectorAll("button.chip"), node);
    runSearch();
  }

  // ---- cards -------------------------------------------------------------------------------

  function formatNumber(x) {
    return typeof x === "number" ? String(Math.round(x * 10000) / 10000) : String(x);
  }

  function facetText(value) {
    if (Array.isArray(value)) return value.map(String).join(", ");
    if (value !== null && typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function facetsOf(source) {
    const box = el("dl", "facets");
    for (const [name, value] of Object.entries(source || {})) {
      if (HIDDEN_SOURCE.has(name) || value === null || value === undefined || value === "") continue;
      if (Array.isArray(value) && value.length && typeof value[0] === "number" && value.length > 8) continue;
      const text = facetText(value);
      if (text.length > 80) continue;
      const pair = el("div", "facet");
      pair.appendChild(el("dt", null, name));
      pair.appendChild(el("dd", null, text));
      box.appendChild(pair);
    }
    return box;
  }

  function scoreBar(contributions) {
    const entries = Object.entries(contributions || {}).filter(([, v]) => typeof v === "number");
    const total = entries.reduce((sum, [, v]) => sum + Math.max(0, v), 0);
    const bar = el("div", "bar");
    bar.setAttribute("role", "img");
    const described = [];
    for (const [signal, value] of entries) {
      const part = el("span", "part");
      part.setAttribute("data-signal", signal);
      const label = SIGNAL_LABELS[signal] || signal;
      part.setAttribute("title", label + ": " + formatNumber(value));
      part.style.width = (total > 0 ? (Math.max(0, value) / total) * 100 : 0) + "%";
      bar.appendChild(part);
      described.push(label + " " + formatNumber(value));
    }
    bar.setAttribute("aria-label", described.length ? "score parts: " + described.join(", ") : "no score parts");
    return bar;
  }

  function imageOf(result) {
    const source = result.source || {};
    const url = source.image || source.image_url || result.image_url;
    return typeof url === "string" && url ? url : null;
  }

  /** One result card; `onTitle` runs when the title is clicked. */
  function card(result, onTitle, rankChange) {
    const li = el("li", "card");
    li.setAttribute("data-item-id", String(result.item_id));
    const head = el("div", "card-head");
    head.appendChild(el("span", "rank", result.rank !== undefined ? "#" + result.rank : ""));
    const title = el("button", "title", result.title || result.item_id);
    title.type = "button";
    title.addEventListener("click", () => onTitle(result));
    head.appendChild(title);
    if (rankChange) {
      const badge = el("span", "rank-change " + rankChange.kind, rankChange.text);
      badge.setAttribute("aria-label", rankChange.label);
      head.appendChild(badge);
    }
    li.appendChild(head);
    const url = imageOf(result);
    if (url) {
      const img = el("img", "thumb");
      img.setAttribute("src", url);
      img.setAttribute("alt", String(result.title || result.item_id));
      img.setAttribute("loading", "lazy");
      li.appendChild(img);
    }
    li.appendChild(facetsOf(result.source));
    li.appendChild(scoreBar(result.contributions));
    if (typeof result.score === "number") li.appendChild(el("p", "score", "score " + formatNumber(result.score)));
    const liked = result.because_you_liked || [];
    if (liked.length) {
      li.appendChild(el("p", "because", "because you liked " + liked.map((x) => x.title || x.item_id).join(", ")));
    }
    const ok = result.filters_satisfied || [];
    if (ok.length) li.appendChild(el("p", "satisfied", "✓ " + ok.join(" · ")));
    const bad = result.filters_unsatisfied || [];
    if (bad.length) li.appendChild(el("p", "unsatisfied", "✗ " + bad.join(" · ")));
    return li;
  }

  /** The badge of an item in column B relative to its rank in column A. */
  function rankChangeOf(itemId, rankB, ranksA) {
    if (!ranksA.has(itemId)) return { kind: "new", text: "new", label: "new in B" };
    const delta = ranksA.get(itemId) - rankB;
    if (delta > 0) return { kind: "up", text: "↑" + delta, label: "up " + delta + " from A" };
    if (delta < 0) return { kind: "down", text: "↓" + -delta, label: "down " + -delta + " from A" };
    return null;
  }

  /** One result list; a title click there is a click on a search result (it carries the query,
   * the response's query_id and the result's position). */
  function renderResults(list, results, ranksA, queryId) {
    clear(list);
    results.forEach((r, i) => {
      const change = ranksA ? rankChangeOf(String(r.item_id), i + 1, ranksA) : null;
      const where = { query: state.query, position: r.position || i + 1, queryId: queryId };
      list.appendChild(card(r, (res) => clickResult(res, where), change));
    });
  }

  /** Items of column A that column B does not show, listed under B as "dropped". */
  function renderDropped(resultsA, resultsB) {
    const list = $("dropped-b");
    clear(list);
    const inB = new Set(resultsB.map((r) => String(r.item_id)));
    resultsA.forEach((r, i) => {
      const itemId = String(r.item_id);
      if (inB.has(itemId)) return;
      const li = el("li", null, (r.title || itemId) + " (was #" + (i + 1) + " in A)");
      li.setAttribute("data-item-id", itemId);
      list.appendChild(li);
    });
    $("dropped-b-box").hidden = !list.firstChild;
  }

  function clearDropped() {
    clear($("dropped-b"));
    $("dropped-b-box").hidden = true;
  }

  // ---- search ------------------------------------------------------------------------------

  function setBusy(busy) {
    for (const id of ["results-a", "results-b"]) $(id).setAttribute("aria-busy", busy ? "true" : "false");
    document.body.setAttribute("data-busy", busy ? "true" : "false");
  }

  async function runSearch() {
    if (!state.query) {
      setStatus("Type a query first.", true);
      return;
    }
    const seq = ++state.seq;
    const compare = $("compare").checked;
    clear($("results-a"));  // a result list on the page is always the answer to the latest request
    clear($("results-b"));
    clearDropped();
    setBusy(true);
    setStatus("Searching…");
    try {
      const calls = [api("/playground/api/search", { method: "POST", body: searchBody(readVariant($("variant-a"))) })];
      if (compare) {
        calls.push(api("/playground/api/search", { method: "POST", body: searchBody(readVariant($("variant-b"))) }));
      }
      const [a, b] = await Promise.all(calls);
      if (seq !== state.seq) return;
      renderChips(a.chips);
      state.lastA = a.results || [];
      renderResults($("results-a"), state.lastA, null, a.query_id);
      postImpressions(state.lastA, a.query_id, state.query);
      let text = state.lastA.length + " results";
      if (compare && b) {
        const ranksA = new Map(state.lastA.map((r, i) => [String(r.item_id), i + 1]));
        renderResults($("results-b"), b.results || [], ranksA, b.query_id);
        postImpressions(b.results || [], b.query_id, state.query);
        renderDropped(state.lastA, b.results || []);
        text += " · B: " + (b.results || []).length + " results";
      } else {
        clear($("results-b"));
      }
      const degraded = (a.degradations || []).map((d) => d.kind);
      if (degraded.length) text += " · degraded: " + degraded.join(", ");
      if (a.personalized) text += " · personalized";
      setStatus(text);
    } catch (e) {
      if (seq === state.seq) setStatus(e.message, true);
    } finally {
      if (seq === state.seq) setBusy(false);
    }
  }

  function newSearch(event) {
    if (event) event.preventDefault();
    state.query = $("q").value.trim();
    state.drop = [];
    loadHistory();
    runSearch();
  }

  // ---- user, clicks, recommendations, similar ----------------------------------------------

  async function loadHistory() {
    const list = $("history");
    const note = $("history-note");
    const user = userId();
    clear(list);
    if (!user) {
      note.textContent = "Anonymous: no history.";
      return;
    }
    note.textContent = "Loading history…";
    try {
      const body = await api("/playground/api/user?user_id=" + encodeURIComponent(user));
      if (user !== userId()) return;
      clear(list);
      for (const item of body.history || []) {
        const li = el("li", null, item.title || item.item_id);
        li.setAttribute("data-item-id", String(item.item_id));
        list.appendChild(li);
      }
      note.textContent = body.known ? (list.firstChild ? "Newest first." : "Known user, no history yet.")
        : "Unknown user: no history yet (results are not personalized).";
    } catch (e) {
      note.textContent = e.message;
    }
  }

  function panelParts(id) {
    const panel = $(id);
    return { note: panel.querySelector(".note"), list: panel.querySelector("ol") };
  }

  async function loadPanel(id, path, emptyText) {
    const { note, list } = panelParts(id);
    clear(list);
    note.textContent = "Loading…";
    try {
      const body = await api(path);
      const results = body.results || [];
      // a click in a panel is not an answer to the query: no query; the panel's query_id and position
      results.forEach((r, i) => list.appendChild(card(r, (res) => clickResult(res,
        { position: r.position || i + 1, queryId: body.query_id }), null)));
      postImpressions(results, body.query_id, "");
      note.textContent = results.length ? "" : emptyText;
    } catch (e) {
      note.textContent = e.message;
    }
  }

  /** Post one impression per shown result (what the page showed, with the response's query_id),
   * so that a click can be read against what was shown; anonymous views are not stored. */
  function postImpressions(results, queryId, query) {
    const user = userId();
    if (!user || !queryId || !results.length) return;
    const events = results.map((r, i) => {
      const event = {
        user_id: user, item_id: String(r.item_id), kind: "impression", query_id: queryId,
        position: r.position || i + 1, session_id: PLAYGROUND_SESSION,
      };
      if (query) event.query = query.slice(0, 512);
      return event;
    });
    api("/v1/events", { method: "POST", body: { events: events } }).catch(() => {});  // best effort
  }

  /** Post a click; `where.query` only for result-list clicks, `where.position` within the clicked
   * list, `where.queryId` the query_id of the response that showed it. */
  async function postClick(result, where) {
    const user = userId();
    if (!user) return "anonymous clicks are not stored";
    const event = {
      user_id: user, item_id: String(result.item_id), kind: "click", position: where.position,
      session_id: PLAYGROUND_SESSION,
    };
    if (where.queryId) event.query_id = where.queryId;
    const query = (where.query || "").slice(0, 512);
    if (query) event.query = query;
    try {
      await api("/v1/events", { method: "POST", body: event });
      return "click stored as playground traffic";
    } catch (e) {
      return "click not stored: " + e.message;
    }
  }

  async function clickResult(result, where) {
    const user = userId();
    const itemId = String(result.item_id);
    const clicked = await postClick(result, where);
    const k = kValue();
    const jobs = [loadPanel("similar", "/v1/items/" + encodeURIComponent(itemId) + "/similar?k=" + k,
      "No similar items.")];
    if (user) {
      jobs.push(loadPanel("recommend", "/v1/recommend?user_id=" + encodeURIComponent(user) + "&k=" + k,
        "No recommendations."));
    } else {
      const { note, list } = panelParts("recommend");
      clear(list);
      note.textContent = "Anonymous: enter a user id to see recommendations.";
    }
    await Promise.all(jobs);
    setStatus("Clicked “" + (result.title || itemId) + "”: " + clicked + ".");
  }

  // ---- settings ----------------------------------------------------------------------------

  function valueNode(value) {
    if (value === null || value === undefined) return el("span", "none", "—");
    if (Array.isArray(value)) {
      if (value.every((v) => v === null || typeof v !== "object")) return el("span", null, value.join(", ") || "—");
      const list = el("ul");
      for (const v of value) {
        const li = el("li");
        li.appendChild(valueNode(v));
        list.appendChild(li);
      }
      return list;
    }
    if (typeof value === "object") return definitionList(value);
    return el("span", null, String(value));
  }

  function definitionList(obj) {
    const dl = el("dl", "kv");
    for (const [key, value] of Object.entries(obj)) {
      dl.appendChild(el("dt", null, key));
      const dd = el("dd");
      dd.appendChild(valueNode(value));
      dl.appendChild(dd);
    }
    return dl;
  }

  const SETTINGS_SECTIONS = [
    ["settings", "Sidecar settings"], ["bundle", "Served bundle"], ["cf_model", "CF model"],
    ["index", "Index"], ["readiness", "Readiness and degradations"], ["features", "Features"],
  ];

  async function loadSettings() {
    const body = $("settings-body");
    try {
      const data = await api("/playground/api/settings");
      clear(body);
      for (const [key, heading] of SETTINGS_SECTIONS) {
        const section = el("section", "settings-part");
        section.setAttribute("data-part", key);
        section.appendChild(el("h3", null, heading));
        const value = data[key];
        section.appendChild(value === null || value === undefined ? el("p", "note", "none") : valueNode(value));
        body.appendChild(section);
      }
      state.features = data.features || state.features;
      $("photo-zone").hidden = !state.features.image;
      $("photo").hidden = !state.features.image;
      $("voice").hidden = !state.features.audio;
    } catch (e) {
      clear(body);
      body.appendChild(el("p", "note error", e.message));
    }
  }

  // ---- photo and voice (shown only when the sidecar offers them) ---------------------------

  function notAvailable(what) {
    setStatus(what + " search is not available on this sidecar.", true);
  }

  function wireMedia() {
    $("photo").addEventListener("change", () => notAvailable("Photo"));
    const zone = $("photo-zone");
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); notAvailable("Photo"); });
    $("voice").addEventListener("click", () => notAvailable("Spoken"));
  }

  // ---- wiring ------------------------------------------------------------------------------

  function init() {
    const keyInput = $("api-key");
    try {
      keyInput.value = sessionStorage.getItem(KEY_STORE) || "";
    } catch (e) {
      keyInput.value = "";
    }
    keyInput.addEventListener("change", () => {
      try { sessionStorage.setItem(KEY_STORE, keyInput.value.trim()); } catch (e) { /* storage off: keep in page */ }
      loadSettings();
    });
    $("search-form").addEventListener("submit", newSearch);
    $("user").addEventListener("change", loadHistory);
    for (const id of ["variant-a", "variant-b"]) {
      // a changed or applied column setting re-runs the current search; removed chips stay removed
      $(id).addEventListener("submit", (e) => { e.preventDefault(); if (state.query) runSearch(); });
      $(id).addEventListener("change", () => { if (state.query) runSearch(); });
    }
    $("compare").addEventListener("change", () => {
      $("column-b").hidden = !$("compare").checked;
      document.body.classList.toggle("comparing", $("compare").checked);
      if (state.query) runSearch();
    });
    $("restore-chips").addEventListener("click", () => { state.drop = []; runSearch(); });
    wireMedia();
    setBusy(false);
    loadSettings();
    $("q").focus();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
