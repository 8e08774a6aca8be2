// callback-sim console (docs/behaviour.md §12): plain JavaScript, no build step, no request to
// any host but the simulator. The token lives in this tab's sessionStorage and in the
// Authorization header of each call; it never goes into a URL the server sees.
"use strict";

const MAX_ROWS = 500; // rows the live feed shows (and entries it keeps)
const FLUSH_MS = 250; // the feed is redrawn at most this often
const REFRESH_MS = 5000; // rules and buckets are read again this often (counters)

const $ = (id) => document.getElementById(id);
const state = {
  app: null, token: null, dialect: null,
  entries: [], // newest first, at most MAX_ROWS
  seen: new Set(), // keys of `entries`
  pending: [], // arrived, not drawn yet (newest last)
  paused: false, flushTimer: null,
  rules: [], buckets: [], catalog: null,
  stream: null, // AbortController of the live stream
  selected: null, // the entry in the detail panel
  items: { bucket: null, after: null },
  timers: [],
};

// ---- calls ----------------------------------------------------------------------------

class SignedOut extends Error {}
// An answer that came after a sign-out (or a sign-in as another app): thrown away.
class Stale extends Error {}

async function api(method, path, body) {
  const token = state.token;
  if (!token) throw new Stale("signed out");
  const headers = { Authorization: "Bearer " + token };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch("/app-id/" + encodeURIComponent(state.app) + path, init);
  const json = await resp.json().catch(() => ({}));
  if (state.token !== token) throw new Stale("signed out meanwhile");
  if (resp.status === 401 || json.error === "app_not_found") {
    throw new SignedOut(resp.status === 401 ? "wrong token for this app" : "no such app");
  }
  if (!resp.ok) {
    const e = new Error(json.error_description || ("HTTP " + resp.status));
    e.status = resp.status;
    e.code = json.error;
    throw e;
  }
  return json;
}

function failed(e) {
  if (e instanceof Stale) return true;
  if (e instanceof SignedOut) {
    signOut("Signed out: " + e.message + ".");
    return true;
  }
  return false;
}

// ---- sign-in ----------------------------------------------------------------------------

function fromFragment() {
  if (!location.hash || location.hash.length < 2) return null;
  const p = new URLSearchParams(location.hash.slice(1));
  const app = p.get("app"), token = p.get("token");
  // The fragment leaves the address bar (and the history) at once.
  history.replaceState(null, "", location.pathname);
  return app && token ? { app, token } : null;
}

async function signIn(app, token) {
  state.app = app;
  state.token = token;
  try {
    const rules = await api("GET", "/callbacks/rules");
    sessionStorage.setItem("callback-sim", JSON.stringify({ app, token }));
    $("signin").hidden = true;
    $("console").hidden = false;
    $("whoami").hidden = false;
    $("app-name").textContent = app;
    setRules(rules.data);
    startStream();
    refreshStore();
    loadCatalog();
    state.timers.push(setInterval(tick, 1000));
    state.timers.push(setInterval(() => { refreshRules(); refreshStore(); }, REFRESH_MS));
  } catch (e) {
    signOut(e instanceof SignedOut ? "Wrong app id or token: " + e.message + "." : "Could not reach the simulator: " + e.message);
  }
}

function signOut(why) {
  sessionStorage.removeItem("callback-sim");
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.timers.forEach(clearInterval);
  state.timers = [];
  Object.assign(state, { app: null, token: null, dialect: null, entries: [], seen: new Set(), pending: [], rules: [], buckets: [], selected: null });
  // No data stays on the page.
  for (const id of ["feed", "rules", "buckets", "items", "detail-attempts"]) $(id).tBodies[0].textContent = "";
  $("detail").hidden = true;
  $("items-box").hidden = true;
  $("store-result").hidden = true;
  $("trigger-result").hidden = true;
  $("console").hidden = true;
  $("whoami").hidden = true;
  $("signin").hidden = false;
  $("token").value = "";
  const err = $("signin-error");
  err.textContent = why || "";
  err.hidden = !why;
}

// ---- the live stream -------------------------------------------------------------------

async function startStream() {
  const ctl = new AbortController();
  state.stream = ctl;
  let backoff = 500;
  while (state.stream === ctl) {
    try {
      const resp = await fetch("/app-id/" + encodeURIComponent(state.app) + "/callbacks/stream", {
        headers: { Authorization: "Bearer " + state.token }, signal: ctl.signal, cache: "no-store",
      });
      if (resp.status === 401 || resp.status === 404) { signOut("Signed out: the token is no longer valid for this app."); return; }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      backoff = 500;
      await readEvents(resp.body.getReader(), ctl);
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    live(false);
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 8000);
  }
}

async function readEvents(reader, ctl) {
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done || ctl.signal.aborted) return;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

function onEvent(name, data) {
  switch (name) {
    case "ready":
      state.dialect = data.dialect;
      $("app-dialect").textContent = data.dialect;
      live(true);
      loadHistory();
      renderTrigger();
      break;
    case "callback": arrive([data]); break;
    case "rule": upsertRule(data); break;
    case "store": setBuckets(data.buckets); break;
    case "lagged": loadHistory(); break;
  }
}

function live(on) {
  const el = $("live");
  el.textContent = on ? "live" : "offline";
  el.className = "live " + (on ? "on" : "off");
}

async function loadHistory() {
  try {
    const h = await api("GET", "/callbacks/history?limit=" + MAX_ROWS);
    arrive(h.data.slice().reverse());
  } catch (e) { failed(e); }
}

// ---- the feed ---------------------------------------------------------------------------

const keyOf = (e) => e.callId + "|" + e.created_at + "|" + (e.resend ? "r" : "") + "|" + (e.attempts[0] ? e.attempts[0].at : "");

function arrive(list) {
  for (const e of list) state.pending.push(e);
  // Only the newest MAX_ROWS can be shown: older ones waiting are let go.
  if (state.pending.length > MAX_ROWS) state.pending.splice(0, state.pending.length - MAX_ROWS);
  if (!state.flushTimer) state.flushTimer = setTimeout(flush, FLUSH_MS);
}

function flush() {
  state.flushTimer = null;
  if (state.paused || !state.pending.length) return;
  const fresh = [];
  for (const e of state.pending) {
    const k = keyOf(e);
    if (state.seen.has(k)) continue;
    state.seen.add(k);
    fresh.push(e);
  }
  state.pending = [];
  // Newest first, whatever order they came in (the stream and a history listing overlap).
  state.entries = fresh.concat(state.entries);
  state.entries.sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
  if (state.entries.length > MAX_ROWS) {
    for (const e of state.entries.splice(MAX_ROWS)) state.seen.delete(keyOf(e));
  }
  for (const e of fresh) addOption("filter-event", e.event);
  renderFeed();
}

function addOption(selectId, value) {
  const sel = $(selectId);
  if ([...sel.options].some((o) => o.value === value)) return;
  const o = document.createElement("option");
  o.value = o.textContent = value;
  sel.appendChild(o);
}

function renderFeed() {
  const rule = $("filter-rule").value, event = $("filter-event").value, outcome = $("filter-outcome").value;
  const rows = [];
  let hidden = 0;
  for (const e of state.entries) {
    if ((rule && e.rule !== rule) || (event && e.event !== event) || (outcome && e.outcome !== outcome)) { hidden++; continue; }
    const last = e.attempts[e.attempts.length - 1];
    const sel = state.selected && keyOf(state.selected) === keyOf(e) ? ' class="selected"' : "";
    rows.push("<tr data-key=\"" + esc(keyOf(e)) + "\" data-call-id=\"" + esc(e.callId) + "\"" + sel + ">" +
      td(time(e.created_at)) + "<td class=\"o-" + esc(e.outcome) + "\">" + esc(e.outcome) +
      (e.last_attempt !== e.outcome ? " <span class=\"muted\">· " + esc(e.last_attempt) + "</span>" : "") + "</td>" +
      td(e.rule) + td(e.event) + td(e.to) + num(e.attempts.length) +
      num(last && last.status != null ? last.status : "") + num(e.latency_ms.toFixed(1)) +
      "<td class=\"cid\" title=\"" + esc(e.callId) + "\">" + esc(e.callId) + (e.resend ? " ↻ resent" : "") + "</td></tr>");
  }
  $("feed").tBodies[0].innerHTML = rows.join("");
  $("feed-empty").hidden = state.entries.length > 0;
  $("feed-count").textContent = state.entries.length + " shown" + (hidden ? ", " + hidden + " filtered out" : "") +
    (state.entries.length >= MAX_ROWS ? " (the newest " + MAX_ROWS + ")" : "");
}

// ---- the detail -------------------------------------------------------------------------

function openDetail(e) {
  state.selected = e;
  $("detail").hidden = false;
  $("detail-callid").textContent = e.callId;
  const summary = [["rule", e.rule], ["event", e.event], ["to", e.to], ["outcome", e.outcome], ["last attempt", e.last_attempt],
    ["created", e.created_at], ["latency", e.latency_ms != null ? e.latency_ms + " ms" : ""], ["resend", e.resend ? "yes" : "no"]];
  $("detail-summary").innerHTML = summary.filter(([, v]) => v !== "" && v != null)
    .map(([k, v]) => "<dt>" + esc(k) + "</dt><dd" + (k === "outcome" ? " class=\"o-" + esc(v) + "\"" : "") + ">" + esc(v) + "</dd>").join("");
  $("detail-attempts").tBodies[0].innerHTML = e.attempts.length ? e.attempts.map((a) => "<tr>" + td(time(a.at)) + num(a.duration_ms) +
    "<td class=\"o-" + esc(a.outcome) + "\">" + esc(a.outcome) + "</td>" + num(a.status == null ? "" : a.status) +
    "<td class=\"wrap\">" + esc([a.answer, a.detail].filter((x) => x).join("\n")) + "</td></tr>").join("")
    : "<tr><td colspan=\"5\" class=\"muted\">not attempted</td></tr>";
  const r = e.request;
  $("detail-method").textContent = r.method;
  $("detail-url").textContent = r.url;
  $("detail-headers").tBodies[0].innerHTML = Object.entries(r.headers).map(([k, v]) => "<tr>" + td(k + ":") + td(v) + "</tr>").join("");
  $("detail-body-raw").textContent = r.body;
  $("detail-body-pretty").textContent = pretty(r.body);
  $("detail").scrollTop = 0;
  $("curl-text").hidden = true;
  $("copy-done").hidden = true;
  $("resend-body").value = pretty(r.body);
  $("resend-body").dataset.original = pretty(r.body);
  $("resend-result").hidden = true;
  renderFeed();
}

function curl(e) {
  const r = e.request;
  const parts = ["curl", "-X", r.method, q(r.url)];
  for (const [k, v] of Object.entries(r.headers)) {
    // curl writes these itself (Host, Content-Length) or from the URL (Authorization).
    if (["host", "content-length", "authorization"].includes(k.toLowerCase())) continue;
    parts.push("-H", q(k + ": " + v));
  }
  parts.push("--data-binary", q(r.body));
  return parts.join(" ");
}

const q = (s) => "'" + String(s).replace(/'/g, "'\\''") + "'";

async function copyCurl() {
  if (!state.selected) return;
  const text = curl(state.selected);
  const pre = $("curl-text");
  pre.textContent = text;
  pre.hidden = false;
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    // Without clipboard access: select the text, for Ctrl-C.
    const range = document.createRange();
    range.selectNodeContents(pre);
    const s = getSelection();
    s.removeAllRanges();
    s.addRange(range);
    try { document.execCommand("copy"); } catch (_) { /* selected: copy by hand */ }
  }
  $("copy-done").hidden = false;
}

async function resend(ev) {
  ev.preventDefault();
  const e = state.selected;
  if (!e) return;
  const text = $("resend-body").value;
  const req = { callId: e.callId };
  if (text !== $("resend-body").dataset.original) req.body = text; // edited: signed again
  if ($("resend-to").value === "url") req.targetUrl = $("resend-url").value.trim();
  const out = $("resend-result");
  out.hidden = false;
  out.className = "result";
  out.textContent = "sending…";
  $("resend-send").disabled = true;
  try {
    const r = (await api("POST", "/callbacks/resend", req)).data;
    const good = r.outcome === "delivered";
    out.className = "result " + (good ? "good" : "bad");
    out.textContent = r.outcome + " — last attempt " + r.last_attempt + ", " + r.attempts + " attempt(s), status " +
      (r.status == null ? "none" : r.status) + ", " + r.latency_ms + " ms" + (req.body ? " (edited, signed again)" : " (the same bytes)");
  } catch (err) {
    if (failed(err)) return;
    out.className = "result bad";
    out.textContent = "Not sent: " + err.message;
  } finally {
    $("resend-send").disabled = false;
  }
}

// ---- rules ------------------------------------------------------------------------------

function setRules(list) {
  state.rules = list;
  for (const r of list) addOption("filter-rule", r.name);
  renderRules();
}

function upsertRule(r) {
  const i = state.rules.findIndex((x) => x.name === r.name);
  if (i >= 0) state.rules[i] = r; else state.rules.push(r);
  renderRules();
}

async function refreshRules() {
  if (!state.app) return;
  try { setRules((await api("GET", "/callbacks/rules")).data); } catch (e) { failed(e); }
}

function renderRules() {
  const now = Date.now();
  $("rules").tBodies[0].innerHTML = state.rules.map((r) => {
    const left = r.banned_until ? Math.max(0, Date.parse(r.banned_until) - now) : null;
    const finals = Object.entries(r.final).filter(([, n]) => n).map(([k, n]) => k + " " + n).join(", ") || "none";
    const counts = Object.entries(r.counts).filter(([, n]) => n).map(([k, n]) => k + " " + n).join(", ") || "none";
    const state_ = r.state === "banned" && left === 0 ? "active" : r.state;
    return "<tr data-rule=\"" + esc(r.name) + "\">" + td(r.name) + td(r.kind) + "<td class=\"url\" title=\"" + esc(r.url) + "\">" + esc(r.url) + "</td>" +
      "<td class=\"state s-" + esc(state_) + "\">" + esc(state_) + "</td>" + num(r.ban_level) +
      "<td class=\"countdown\" data-until=\"" + esc(r.banned_until || "") + "\">" + (left ? countdown(left) : "") + "</td>" +
      num(r.failures_in_window) + td(finals) + td(counts) +
      "<td><button type=\"button\" class=\"small reset\" data-rule=\"" + esc(r.name) + "\">Reset</button></td></tr>";
  }).join("");
}

function tick() {
  let ended = false;
  for (const el of document.querySelectorAll("#rules .countdown")) {
    if (!el.dataset.until) continue;
    const left = Date.parse(el.dataset.until) - Date.now();
    if (left <= 0) { ended = true; el.textContent = ""; } else el.textContent = countdown(left);
  }
  if (ended) refreshRules();
}

function countdown(ms) {
  const s = Math.ceil(ms / 1000);
  const m = Math.floor(s / 60);
  return (m ? m + " min " : "") + (s % 60) + " s";
}

async function resetRule(name) {
  try {
    upsertRule((await api("POST", "/callbacks/rules/" + encodeURIComponent(name) + "/reset")).data);
  } catch (e) { if (!failed(e)) alert("Reset failed: " + e.message); }
}

// ---- the store --------------------------------------------------------------------------

async function refreshStore() {
  if (!state.app) return;
  try {
    setBuckets((await api("GET", "/callbacks/storage/info")).data);
    $("store-off").hidden = true;
  } catch (e) {
    if (failed(e)) return;
    if (e.code === "store_disabled") { $("store-off").hidden = false; setBuckets([]); }
  }
}

function setBuckets(list) {
  // Redrawn only when something changed: a URL being typed keeps its focus.
  if (JSON.stringify(list) === JSON.stringify(state.buckets) && $("buckets").tBodies[0].rows.length === list.length) return;
  state.buckets = list;
  const body = $("buckets").tBodies[0];
  // Typed URLs survive the redraw.
  const typed = {};
  for (const input of body.querySelectorAll("input.target")) typed[input.dataset.key] = input.value;
  body.innerHTML = list.map((b) => {
    const key = b.date + "/" + b.retry;
    return "<tr data-bucket=\"" + esc(key) + "\">" + td(dateKey(b.date)) + num(b.retry) + num(b.size) +
      "<td><input class=\"target\" data-key=\"" + esc(key) + "\" placeholder=\"the rule's URL\" value=\"" + esc(typed[key] || "") + "\"></td>" +
      "<td><button type=\"button\" class=\"small items\">Items</button> <button type=\"button\" class=\"small replay\">Replay</button> " +
      "<button type=\"button\" class=\"small danger delete\">Delete</button></td></tr>";
  }).join("");
  $("store-empty").hidden = list.length > 0;
}

function bucketOf(tr) {
  const [date, retry] = tr.dataset.bucket.split("/");
  return { date, retry: Number(retry) };
}

async function replay(tr) {
  const b = bucketOf(tr);
  const target = tr.querySelector("input.target").value.trim();
  const out = $("store-result");
  out.hidden = false;
  out.className = "result";
  out.textContent = "replaying " + b.date + " retry " + b.retry + "…";
  try {
    const body = { date: b.date, retry: b.retry };
    if (target) body.targetUrl = target;
    const r = await api("POST", "/callbacks/storage/retry", body);
    out.className = "result " + (r.data === "success" ? "good" : "bad");
    out.textContent = "Replay of " + b.date + " retry " + b.retry + (target ? " to " + target : " to the rules' URLs") + ": " +
      r.data + " — delivered " + r.delivered + ", failed " + r.failed + ", interrupted " + r.interrupted +
      (r.warnings.length ? "\n" + r.warnings.join("\n") : "");
  } catch (e) {
    if (failed(e)) return;
    out.className = "result bad";
    out.textContent = "Replay refused: " + e.message;
  }
  refreshStore();
}

async function deleteBucket(tr) {
  const b = bucketOf(tr);
  if (!confirm("Delete bucket " + b.date + " retry " + b.retry + " for good?")) return;
  const out = $("store-result");
  out.hidden = false;
  try {
    const r = await api("DELETE", "/callbacks/storage?date=" + b.date + "&retry=" + b.retry);
    out.className = "result good";
    out.textContent = "Deleted " + r.data.deleted + " callbacks of " + b.date + " retry " + b.retry + ".";
  } catch (e) {
    if (failed(e)) return;
    out.className = "result bad";
    out.textContent = "Not deleted: " + e.message;
  }
  refreshStore();
}

async function showItems(tr, more) {
  const b = more ? state.items.bucket : bucketOf(tr);
  const after = more ? state.items.after : null;
  try {
    const r = await api("GET", "/callbacks/storage/items?limit=100&date=" + b.date + "&retry=" + b.retry +
      (after ? "&after=" + encodeURIComponent(after) : ""));
    state.items.bucket = b;
    const body = $("items").tBodies[0];
    if (!more) { body.textContent = ""; state.items.list = []; }
    state.items.list.push(...r.data);
    body.insertAdjacentHTML("beforeend", r.data.map((it) => "<tr data-call-id=\"" + esc(it.callId) + "\">" + td(time(it.stored_at)) +
      "<td class=\"cid\">" + esc(it.callId) + "</td>" + td(it.rule) + td(it.eventType) + td(it.to) +
      "<td class=\"o-" + esc(it.outcome) + "\">" + esc(it.outcome) + "</td>" + num(it.attempts) + num(it.status == null ? "" : it.status) + "</tr>").join(""));
    state.items.after = r.data.length ? r.data[r.data.length - 1].callId : state.items.after;
    $("items-bucket").textContent = dateKey(b.date) + " retry " + b.retry;
    $("items-box").hidden = false;
    $("items-more").hidden = r.data.length < 100;
  } catch (e) { if (!failed(e)) alert(e.message); }
}

function openItem(callId) {
  const it = (state.items.list || []).find((x) => x.callId === callId);
  if (!it) return;
  const body = JSON.stringify(it.body);
  openDetail({
    callId: it.callId, rule: it.rule, event: it.eventType, to: it.to, outcome: "stored", last_attempt: it.outcome,
    created_at: it.stored_at, latency_ms: null, resend: false, attempts: [],
    request: { method: "POST", url: it.url, headers: { "Content-Type": "application/json" }, body },
  });
}

// ---- trigger ----------------------------------------------------------------------------

async function loadCatalog() {
  try {
    const resp = await fetch("/catalog", { cache: "no-store" });
    if (resp.status === 200) {
      const c = await resp.json();
      if (c && Array.isArray(c.events)) state.catalog = c.events;
    }
  } catch (_) { /* messages only */ }
  renderTrigger();
}

function renderTrigger() {
  const sel = $("trigger-kind");
  const current = sel.value;
  sel.innerHTML = "<option value=\"message\">a message</option>";
  const events = (state.catalog || []).filter((ev) => !state.dialect || !ev.dialects || ev.dialects[state.dialect]);
  for (const ev of events) {
    const o = document.createElement("option");
    o.value = ev.name;
    o.textContent = "event " + ev.name + (ev.summary ? " — " + ev.summary : "");
    sel.appendChild(o);
  }
  if ([...sel.options].some((o) => o.value === current)) sel.value = current;
  $("catalog-note").textContent = state.catalog ? "" : "Messages only: this simulator has no event catalog (GET /catalog).";
  showTriggerFields();
}

function showTriggerFields() {
  const kind = $("trigger-kind").value;
  $("message-fields").hidden = kind !== "message";
  const box = $("event-fields");
  const ex = $("event-example");
  if (kind === "message") { box.hidden = true; ex.hidden = true; return; }
  const ev = state.catalog.find((e) => e.name === kind);
  const example = ev.example_request || {};
  box.innerHTML = Object.entries(ev.fields || {}).map(([name, f]) => {
    // A default in parentheses describes what the simulator picks: a hint, not a value.
    const described = typeof f.default === "string" && /^\(.*\)$/.test(f.default);
    const given = name in example ? example[name] : described || f.default == null ? "" : f.default;
    const value = typeof given === "string" ? given : JSON.stringify(given);
    const hint = (f.type || "") + (f.required ? ", required" : "");
    const title = esc([f.description, described ? "default: " + f.default : ""].filter(Boolean).join("; "));
    const attrs = " data-field=\"" + esc(name) + "\" data-type=\"" + esc(f.type || "string") + "\" title=\"" + title + "\"" + (f.required ? " required" : "");
    const input = Array.isArray(f.enum)
      ? "<select" + attrs + ">" + (f.required ? "" : "<option value=\"\">(default)</option>") +
        f.enum.map((v) => "<option" + (String(v) === value ? " selected" : "") + ">" + esc(v) + "</option>").join("") + "</select>"
      : "<input" + attrs + " value=\"" + esc(value) + "\" placeholder=\"" + esc(described ? f.default : "") + "\">";
    return "<label>" + esc(name) + " <span class=\"muted\">(" + esc(hint) + ")</span>" + input + "</label>";
  }).join("") + "<label class=\"wide\">overrides (JSON: wire fields to set as given) <textarea data-overrides rows=\"2\" spellcheck=\"false\">{}</textarea></label>";
  box.hidden = false;
  const d = ev.dialects && ev.dialects[state.dialect];
  ex.hidden = !d || d.example === undefined;
  if (d) ex.querySelector("pre").textContent = (d.wire || d.command || "") + "\n" + (typeof d.example === "string" ? d.example : JSON.stringify(d.example, null, 2));
}

function typed(type, text) {
  if (text === "") return undefined;
  if (/^(integer|number)$/.test(type)) return Number(text);
  if (type === "boolean") return text === "true";
  if (/^(array|object)$/.test(type) || /^\[|^\{/.test(text.trim())) {
    try { return JSON.parse(text); } catch (_) { return type === "array" ? text.split(",").map((s) => s.trim()).filter(Boolean) : text; }
  }
  return text;
}

async function trigger(ev) {
  ev.preventDefault();
  const kind = $("trigger-kind").value;
  const out = $("trigger-result");
  out.hidden = false;
  out.className = "result";
  out.textContent = "sending…";
  try {
    let r;
    if (kind === "message") {
      const f = $("trigger-form").elements;
      const msg = { from: f.from.value, to: f.to.value, chat_type: f.chat_type.value, type: f.type.value, source: f.source.value };
      if (f.type.value === "txt") msg.msg = f.msg.value; else msg.body = JSON.parse(f.body.value || "{}");
      const ext = JSON.parse(f.ext.value || "{}");
      if (Object.keys(ext).length) msg.ext = ext;
      r = (await api("POST", "/messages?wait=true", msg)).data;
    } else {
      const body = { type: kind };
      for (const input of $("event-fields").querySelectorAll("[data-field]")) {
        const v = typed(input.dataset.type, input.value);
        if (v !== undefined) body[input.dataset.field] = v;
      }
      const overrides = JSON.parse($("event-fields").querySelector("textarea[data-overrides]").value || "{}");
      if (Object.keys(overrides).length) body.overrides = overrides;
      r = (await api("POST", "/events?wait=true", body)).data;
    }
    const cbs = r.callbacks || [];
    const good = cbs.length > 0 && cbs.every((c) => c.outcome === "delivered");
    out.className = "result " + (good ? "good" : "bad");
    out.textContent = (r.accepted === false ? "blocked by a pre-send rule" + (r.code ? ": " + r.code : "") + "\n" : "") +
      (cbs.length ? cbs.map((c) => c.rule + " (" + c.kind + ") " + c.eventType + " → " + c.outcome + ", " + c.attempts + " attempt(s), status " +
        (c.status == null ? "none" : c.status) + ", " + c.latency_ms + " ms").join("\n") : "no callbacks") +
      (r.warnings && r.warnings.length ? "\n" + r.warnings.join("\n") : "");
  } catch (e) {
    if (failed(e)) return;
    out.className = "result bad";
    out.textContent = "Not sent: " + e.message;
  }
}

// ---- helpers ----------------------------------------------------------------------------

function esc(v) {
  return String(v == null ? "" : v).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
const td = (v) => "<td>" + esc(v) + "</td>";
const num = (v) => "<td class=\"num\">" + esc(v) + "</td>";

function time(rfc) {
  if (!rfc) return "";
  const d = new Date(rfc);
  return isNaN(d) ? rfc : d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function dateKey(k) {
  return k.length === 12 ? k.slice(0, 4) + "-" + k.slice(4, 6) + "-" + k.slice(6, 8) + " " + k.slice(8, 10) + ":" + k.slice(10) : k;
}

// JSON text indented, token by token: nothing is parsed, so numbers, escapes and the order of
// fields stay exactly as sent.
function pretty(text) {
  let out = "", indent = 0, inString = false, escaped = false;
  const nl = () => "\n" + "  ".repeat(indent);
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      out += c;
      if (escaped) escaped = false; else if (c === "\\") escaped = true; else if (c === '"') inString = false;
      continue;
    }
    if (c === " " || c === "\n" || c === "\r" || c === "\t") continue;
    if (c === '"') { inString = true; out += c; } else if (c === "{" || c === "[") {
      const close = c === "{" ? "}" : "]";
      let j = i + 1;
      while (" \n\r\t".includes(text[j])) j++;
      if (text[j] === close) { out += c + close; i = j; continue; }
      indent++; out += c + nl();
    } else if (c === "}" || c === "]") { indent = Math.max(0, indent - 1); out += nl() + c; } else if (c === ",") out += "," + nl();
    else if (c === ":") out += ": ";
    else out += c;
  }
  return out;
}

// ---- wiring -----------------------------------------------------------------------------

function wire() {
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("app-id").value.trim(), $("token").value);
  });
  $("signout").addEventListener("click", () => signOut(""));
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
      for (const p of document.querySelectorAll(".pane")) p.hidden = p.id !== "pane-" + tab.dataset.tab;
      if (tab.dataset.tab === "rules") refreshRules();
      if (tab.dataset.tab === "store") refreshStore();
    });
  }
  for (const id of ["filter-rule", "filter-event", "filter-outcome"]) $(id).addEventListener("change", renderFeed);
  $("feed-pause").addEventListener("click", () => {
    state.paused = !state.paused;
    $("feed-pause").textContent = state.paused ? "Resume" : "Pause";
    if (!state.paused) flush();
  });
  $("feed-clear").addEventListener("click", () => { state.entries = []; state.seen = new Set(); renderFeed(); });
  $("feed").tBodies[0].addEventListener("click", (ev) => {
    const tr = ev.target.closest("tr");
    const e = tr && state.entries.find((x) => keyOf(x) === tr.dataset.key);
    if (e) openDetail(e);
  });
  $("detail-close").addEventListener("click", () => { $("detail").hidden = true; state.selected = null; renderFeed(); });
  $("show-pretty").addEventListener("click", () => bodyView(true));
  $("show-raw").addEventListener("click", () => bodyView(false));
  $("copy-curl").addEventListener("click", copyCurl);
  $("resend-form").addEventListener("submit", resend);
  $("resend-to").addEventListener("change", () => { $("resend-url-label").hidden = $("resend-to").value !== "url"; });
  $("rules").tBodies[0].addEventListener("click", (ev) => {
    const b = ev.target.closest("button.reset");
    if (b) resetRule(b.dataset.rule);
  });
  $("buckets").tBodies[0].addEventListener("click", (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    const tr = b.closest("tr");
    if (b.classList.contains("replay")) replay(tr);
    else if (b.classList.contains("delete")) deleteBucket(tr);
    else if (b.classList.contains("items")) showItems(tr, false);
  });
  $("items-more").addEventListener("click", () => showItems(null, true));
  $("items").tBodies[0].addEventListener("click", (ev) => {
    const tr = ev.target.closest("tr");
    if (tr) openItem(tr.dataset.callId);
  });
  $("trigger-kind").addEventListener("change", showTriggerFields);
  $("trigger-form").addEventListener("submit", trigger);
}

function bodyView(prettyOn) {
  $("detail-body-pretty").hidden = !prettyOn;
  $("detail-body-raw").hidden = prettyOn;
  $("show-pretty").classList.toggle("active", prettyOn);
  $("show-raw").classList.toggle("active", !prettyOn);
}

wire();
const given = fromFragment();
const saved = (() => { try { return JSON.parse(sessionStorage.getItem("callback-sim")); } catch (_) { return null; } })();
const creds = given || saved;
if (creds && creds.app && creds.token) {
  $("app-id").value = creds.app;
  signIn(creds.app, creds.token);
}
