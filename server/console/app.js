// cairn's web console: plain JavaScript over the JSON API and Server-Sent
// Events of cairnd's HTTP listener (README "Web console"); nothing else.
//
// Pages (the URL's hash):
//   #/                          sources, connectors, sinks, subscriptions
//   #/snapshot?collection=...   the snapshot browser
//   #/entity/{collection}/{key} an entity's history as a timeline, live
//   #/tail?collection=...       every change as it commits
"use strict";

const SNAPSHOT_ROWS = 500;  // a snapshot page shows this many entities at most
const TAIL_ROWS = 200;      // the live tail keeps this many changes

const main = document.getElementById("main");
const statusLine = document.getElementById("status");
let cleanup = [];  // what the current page must stop when the page changes

// --- DOM and formatting helpers (text always goes in as text, never HTML).

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function table(headers, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map(h =>
      el("th", h.startsWith("#") ? { class: "num" } : {}, h.replace(/^#/, ""))))),
    el("tbody", {}, rows.length ? rows
      : el("tr", {}, el("td", { class: "muted", colspan: headers.length }, "none"))));
}

function num(v) { return el("td", { class: "num" }, v === undefined ? "" : String(v)); }

function when(position) {
  if (!position) return "";
  const ms = Number(position.timestamp) / 1000;
  const iso = Number.isFinite(ms) && ms > 0 ? new Date(ms).toISOString() : String(position.timestamp);
  return position.tick ? `${iso} #${position.tick}` : iso;
}

function stateBadge(s) { return el("span", { class: `state ${s}` }, s); }

function entityLink(collection, key) {
  const text = JSON.stringify(key);
  return el("a", { href: `#/entity/${encodeURIComponent(collection)}/${encodeURIComponent(text)}` },
    text);
}

function showError(where, err) {
  where.append(el("div", { class: "error" }, err.message || String(err)));
}

// --- The API.

function token() { return localStorage.getItem("cairn.token") || ""; }

async function api(path, init) {
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const res = await fetch(path, Object.assign({ headers }, init || {}));
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`;
    try {
      const body = await res.json();
      msg = `${res.status} ${body.code}: ${body.message}`;
      for (const e of body.errors || []) msg += `\nrecord ${e.index}: ${e.field}: ${e.reason}`;
    } catch (_) { /* not a JSON error body */ }
    throw new Error(msg);
  }
  return res;
}

async function json(path) { return (await api(path)).json(); }

// An EventSource on /v1/subscribe; the token goes as ?access_token= (an
// EventSource cannot send headers). It resumes by itself after a drop, with
// Last-Event-ID.
function subscribe(params, onChange) {
  const q = new URLSearchParams(params);
  if (token()) q.set("access_token", token());
  const es = new EventSource(`/v1/subscribe?${q}`);
  es.addEventListener("change", ev => onChange(JSON.parse(ev.data)));
  es.addEventListener("caught_up", () => { statusLine.textContent = "live: caught up"; });
  es.addEventListener("error", ev => {
    if (ev.data) {
      // cairnd ended the stream (retention passed it, say): no reconnecting.
      es.close();
      statusLine.textContent = `live: ${JSON.parse(ev.data).message}`;
    } else {
      statusLine.textContent = "live: reconnecting...";
    }
  });
  es.onopen = () => { statusLine.textContent = "live: connected"; };
  cleanup.push(() => es.close());
  return es;
}

// --- Before -> after differences.

// Every leaf of a JSON value by path (a.b[2].c), as JSON text.
function flatten(value, path, out) {
  if (value !== null && typeof value === "object" && Object.keys(value).length > 0) {
    for (const [k, v] of Object.entries(value)) {
      flatten(v, Array.isArray(value) ? `${path}[${k}]` : (path ? `${path}.${k}` : k), out);
    }
  } else {
    out.set(path || "(document)", JSON.stringify(value));
  }
  return out;
}

// The difference of two documents (null: none) as rows: added, removed,
// changed; unchanged fields are left out.
function diff(before, after) {
  const b = before === null || before === undefined ? new Map() : flatten(before, "", new Map());
  const a = after === null || after === undefined ? new Map() : flatten(after, "", new Map());
  const rows = [];
  for (const path of new Set([...b.keys(), ...a.keys()])) {
    const bv = b.get(path), av = a.get(path);
    if (bv === av) continue;
    if (bv === undefined) {
      rows.push(el("tr", { class: "added" }, el("td", { class: "path" }, path),
        el("td", { class: "val json", colspan: 2 }, av)));
    } else if (av === undefined) {
      rows.push(el("tr", { class: "removed" }, el("td", { class: "path" }, path),
        el("td", { class: "val json", colspan: 2 }, bv)));
    } else {
      rows.push(el("tr", { class: "changed" }, el("td", { class: "path" }, path),
        el("td", { class: "before json" }, bv), el("td", { class: "after json" }, av)));
    }
  }
  if (rows.length === 0) return el("span", { class: "muted" }, "no change");
  return el("table", { class: "diff" }, el("tbody", {}, rows));
}

// --- Pages.

async function overview() {
  main.append(el("h1", {}, "Overview"));
  const body = el("div");
  main.append(body);
  const refresh = async () => {
    try {
      const [stats, sources, connectors, sinks, subs] = await Promise.all([
        json("/v1/stats"), json("/v1/sources"), json("/v1/connectors"), json("/v1/sinks"),
        json("/v1/subscriptions")]);
      body.replaceChildren(
        el("p", {}, "Last seq ", el("b", { id: "last-seq" }, stats.last_seq),
          ", oldest answerable seq ", stats.oldest_seq, "."),
        el("h2", {}, "Sources"),
        table(["Source", "Format", "#Accepted", "#Duplicates", "#Conflicts", "#Rejected batches",
          "Last position"], sources.sources.map(s => el("tr", {},
          el("td", {}, s.name), el("td", {}, s.format), num(s.stats.accepted),
          num(s.stats.duplicates), num(s.stats.conflicts), num(s.stats.rejected_batches),
          el("td", {}, when(s.stats.position))))),
        el("h2", {}, "Connectors"),
        table(["Connector", "State", "#Events", "#Skipped", "#Reconnects", "Resume point",
          "Last error"], connectors.connectors.map(c => el("tr", {},
          el("td", {}, c.name), el("td", {}, stateBadge(c.state)),
          num(c.urls.reduce((n, u) => n + u.events, 0)),
          num(c.urls.reduce((n, u) => n + u.skipped, 0)),
          num(c.urls.reduce((n, u) => n + u.reconnects, 0)),
          el("td", {}, c.urls.map(u => el("div", {}, el("code", {}, u.url), " ", u.last_event_id))),
          el("td", {}, c.urls.map(u => u.last_error).filter(Boolean).join("; "))))),
        el("h2", {}, "Sinks"),
        table(["Sink", "State", "#Checkpoint", "#Lag (seqs)", "#Lag (s)", "#Delivered",
          "#Dead letters", "Last error"], sinks.sinks.map(k => el("tr", {},
          el("td", {}, k.name), el("td", {}, stateBadge(k.state)), num(k.checkpoint_seq),
          num(k.lag_seqs), num(k.lag_seconds.toFixed(1)), num(k.delivered), num(k.dead_letters),
          el("td", {}, k.last_error)))),
        el("h2", {}, "Subscriptions"),
        table(["Subscription", "#Delivered seq", "#Lag (seqs)"], subs.subscriptions.map(s =>
          el("tr", {}, el("td", {}, s.id), num(s.delivered_seq), num(s.lag_seqs)))));
      statusLine.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      body.replaceChildren();
      showError(body, err);
    }
  };
  await refresh();
  const timer = setInterval(refresh, 3000);
  cleanup.push(() => clearInterval(timer));
}

async function snapshot(params) {
  main.append(el("h1", {}, "Snapshot"));
  const fields = [["collection", "collection"], ["prefix", "key prefix"],
    ["as_of_seq", "as of seq"], ["as_of_timestamp", "as of timestamp (µs)"]];
  const form = el("form", { class: "query" },
    fields.map(([name, label]) => el("label", {}, label,
      el("input", { name, value: params.get(name) || "", size: 14 }))),
    el("label", {}, "incomplete", el("input", Object.assign({ type: "checkbox",
      name: "include_incomplete" }, params.get("include_incomplete") === "true" ? { checked: "" } : {}))),
    el("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", ev => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [name] of fields) if (form.elements[name].value) q.set(name, form.elements[name].value);
    if (form.elements.include_incomplete.checked) q.set("include_incomplete", "true");
    location.hash = `#/snapshot?${q}`;
  });
  main.append(form);
  const info = el("p", { class: "muted" });
  const rows = el("tbody");
  main.append(info, el("table", { id: "snapshot" },
    el("thead", {}, el("tr", {}, ["Collection", "Key", "Seq", "Source", "Position", "Document"]
      .map(h => el("th", {}, h)))), rows));
  const q = new URLSearchParams();
  for (const [k, v] of params) if (v) q.set(k, v);
  let shown = 0;
  try {
    const res = await api(`/v1/snapshot?${q}`);
    const seq = res.headers.get("X-Cairn-Snapshot-Seq");
    const reader = res.body.getReader();
    cleanup.push(() => reader.cancel());
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const line of lines) {
        if (!line) continue;
        const e = JSON.parse(line);
        if (e.error) throw new Error(`${e.error.code}: ${e.error.message}`);
        rows.append(el("tr", {}, el("td", {}, e.collection), el("td", {}, entityLink(e.collection, e.key)),
          num(e.seq), el("td", {}, e.source), el("td", {}, when(e.position)),
          el("td", { class: "json" }, JSON.stringify(e.document))));
        shown++;
      }
      if (shown >= SNAPSHOT_ROWS) {
        reader.cancel();
        break;
      }
    }
    info.textContent = `As of seq ${seq}: ${shown} entities` +
      (shown >= SNAPSHOT_ROWS ? ` (the first ${SNAPSHOT_ROWS}; narrow with a collection or a prefix)` : "") + ".";
  } catch (err) {
    showError(main, err);
  }
}

function versionRow(v, live) {
  return el("tr", { class: live ? "version live" : "version", "data-seq": v.seq },
    num(v.seq), el("td", {}, el("span", { class: `op op-${v.op}` }, v.op)),
    el("td", {}, when(v.position)), el("td", {}, v.source),
    el("td", {}, diff(v.before, v.after)));
}

async function entity(collection, keyText) {
  let key;
  try { key = JSON.parse(keyText); } catch (_) { key = keyText; }
  main.append(el("h1", {}, `${collection} `, el("code", {}, JSON.stringify(key))));
  const current = el("div");
  const rows = el("tbody");
  const count = el("span", { class: "pill", id: "version-count" });
  main.append(current, el("h2", {}, "History ", count),
    el("table", { id: "timeline" }, el("thead", {}, el("tr", {},
      el("th", { class: "num" }, "Seq"), el("th", {}, "Op"), el("th", {}, "Position"),
      el("th", {}, "Source"), el("th", {}, "Before → after"))), rows));
  const path = `/v1/entities/${encodeURIComponent(collection)}/${encodeURIComponent(JSON.stringify(key))}`;
  let last = 0;
  const showNow = v => current.replaceChildren(el("p", {}, "Now: ",
    v && v.op !== "delete" ? el("span", { class: "json" }, JSON.stringify(v.after))
      : el("span", { class: "muted" }, "deleted")));
  try {
    const h = await json(`${path}/history`);
    for (const v of h.versions) {
      rows.append(versionRow(v, false));
      last = Math.max(last, v.seq);
    }
    count.textContent = `${h.versions.length} versions`;
    showNow(h.versions[h.versions.length - 1]);
  } catch (err) {
    showError(main, err);
    return;
  }
  // New versions as they commit, after the last one shown.
  subscribe({ collection, key: JSON.stringify(key), from: String(last) }, c => {
    rows.append(versionRow(c, true));
    showNow(c);
    count.textContent = `${rows.children.length} versions`;
  });
}

function tail(params) {
  main.append(el("h1", {}, "Live tail"));
  const form = el("form", { class: "query" },
    el("label", {}, "collection", el("input", { name: "collection", value: params.get("collection") || "" })),
    el("button", { type: "submit" }, "Follow"));
  form.addEventListener("submit", ev => {
    ev.preventDefault();
    const c = form.elements.collection.value;
    location.hash = c ? `#/tail?collection=${encodeURIComponent(c)}` : "#/tail";
  });
  const rows = el("tbody");
  main.append(form, el("table", { id: "tail" }, el("thead", {}, el("tr", {},
    ["#Seq", "Collection", "Key", "Op", "Source", "Before → after"].map(h =>
      el("th", h.startsWith("#") ? { class: "num" } : {}, h.replace(/^#/, ""))))), rows));
  const q = { from: "now" };
  if (params.get("collection")) q.collection = params.get("collection");
  subscribe(q, c => {
    rows.prepend(el("tr", { class: "version live" }, num(c.seq), el("td", {}, c.collection),
      el("td", {}, entityLink(c.collection, c.key)),
      el("td", {}, el("span", { class: `op op-${c.op}` }, c.op)), el("td", {}, c.source),
      el("td", {}, diff(c.before, c.after))));
    while (rows.children.length > TAIL_ROWS) rows.lastChild.remove();
  });
}

// --- Routing.

function route() {
  for (const f of cleanup) f();
  cleanup = [];
  main.replaceChildren();
  statusLine.textContent = "";
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "snapshot") return snapshot(params);
  if (parts[0] === "tail") return tail(params);
  if (parts[0] === "entity" && parts.length === 3) return entity(parts[1], parts[2]);
  return overview();
}

document.getElementById("token").value = token();
document.getElementById("token-form").addEventListener("submit", ev => {
  ev.preventDefault();
  localStorage.setItem("cairn.token", document.getElementById("token").value);
  route();
});
window.addEventListener("hashchange", route);
route();
