// desk.js - the review page: the queue (oldest first), one case, the analyst's actions. Talks to /api/* only.
"use strict";
const $ = (s) => document.querySelector(s);
let current = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function age(s) {
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}
function when(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "-"; }
function money(minor, cur) { return (minor / 100).toFixed(2) + " " + (cur || ""); }

async function api(method, path, body) {
  const opt = { method, credentials: "same-origin", headers: { "X-Verdict-Desk": "1" } };
  if (body !== undefined) { opt.body = JSON.stringify(body); opt.headers["Content-Type"] = "application/json"; }
  const r = await fetch(path, opt);
  let j = {};
  try { j = await r.json(); } catch (e) { j = { error: "bad answer (" + r.status + ")" }; }
  if (r.status === 401 && path !== "/api/login") showLogin();
  return { status: r.status, body: j };
}

function showLogin() { $("#login").hidden = false; $("#app").hidden = true; $("#logout").hidden = true; $("#who").textContent = ""; }
function showApp(user) {
  $("#login").hidden = true; $("#app").hidden = false; $("#logout").hidden = false;
  $("#who").textContent = "analyst: " + user;
  loadQueue();
}

async function loadQueue() {
  const q = new URLSearchParams({ state: $("#f-state").value, reason: $("#f-reason").value.trim(), min_score: $("#f-score").value || "0" });
  const r = await api("GET", "/api/cases?" + q);
  if (r.status !== 200) { $("#queue-note").textContent = r.body.error || "cannot load"; return; }
  const c = r.body.counts;
  $("#counts").textContent = c.open + " open · " + c.claimed + " claimed · " + c.resolved + " resolved";
  const tb = $("#queue tbody");
  tb.replaceChildren();
  for (const k of r.body.cases) {
    const tr = el("tr");
    tr.dataset.txn = k.txn_id;
    if (current === k.txn_id) tr.className = "sel";
    tr.append(el("td", age(k.age_s)), el("td", k.txn_id), el("td", k.score.toFixed(3)), el("td", k.reasons.split(",").join(", "), "reasons"));
    const st = el("td"); st.append(el("span", k.state + (k.claimed_by ? " · " + k.claimed_by : "") + (k.resolution ? " · " + k.resolution : ""), "pill " + k.state));
    tr.append(st);
    tr.addEventListener("click", () => openCase(k.txn_id));
    tb.append(tr);
  }
  $("#queue-note").textContent = r.body.matched + " matching" + (r.body.loaded ? "" : " (index still loading)");
}

function kvRows(table, pairs) {
  table.replaceChildren();
  for (const [k, v] of pairs) { const tr = el("tr"); tr.append(el("td", k), el("td", v === null || v === undefined || v === "" ? "-" : v)); table.append(tr); }
}

function renderCase(j) {
  const c = j.case, d = j.detail;
  current = c.txn_id;
  $("#case-empty").hidden = true; $("#case").hidden = false;
  $("#c-txn").textContent = c.txn_id;
  const st = $("#c-state"); st.textContent = c.state + (c.resolution ? ": " + c.resolution : ""); st.className = "pill " + c.state;
  $("#c-score").textContent = Number(c.score).toFixed(4);
  $("#c-amount").textContent = d && d.transaction ? money(d.transaction.amount_minor, d.transaction.currency) : "-";
  $("#c-decided").textContent = when(c.decided_at_ms) + " (" + (c.rules_version || "-") + ")";
  $("#c-owner").textContent = c.state === "resolved" ? "resolved by " + c.resolved_by : c.claimed_by ? "claimed by " + c.claimed_by : "nobody";
  const ul = $("#c-reasons"); ul.replaceChildren();
  for (const r of c.reasons || []) { const li = el("li"); li.append(el("strong", r.rule_id), document.createTextNode(": " + r.text)); ul.append(li); }
  const done = c.state === "resolved";
  for (const id of ["#btn-claim", "#btn-release", "#btn-fraud", "#btn-legit"]) $(id).disabled = done;
  if (d && d.transaction) {
    const t = d.transaction;
    kvRows($("#c-txn-table"), [["amount", money(t.amount_minor, t.currency)], ["created", when(t.created_at_ms)], ["channel", t.channel],
      ["card (masked)", t.card_id], ["card BIN / country", (t.card_bin || "-") + " / " + (t.card_country || "-")], ["account", t.account_id],
      ["merchant", t.merchant_id + " (mcc " + t.mcc + ", " + (t.merchant_country || "-") + ")"], ["IP (masked)", t.ip + " (" + (t.ip_country || "-") + ")"],
      ["device (masked)", t.device_id], ["TXN seq", t.stream_seq]]);
    kvRows($("#c-features"), (d.features || []).map((f) => [f.name, typeof f.value === "number" ? +f.value.toFixed(4) : f.value === null ? null : String(f.value)]));
    $("#c-features-note").textContent = d.features_note || "";
    const hb = $("#c-history tbody"); hb.replaceChildren();
    for (const h of d.card_history || []) {
      const tr = el("tr");
      tr.append(el("td", when(h.created_at_ms)), el("td", h.txn_id), el("td", money(h.amount_minor, h.currency)),
        el("td", h.outcome, "o-" + h.outcome), el("td", Number(h.score).toFixed(3)), el("td", h.reasons.split(",").join(", ")));
      hb.append(tr);
    }
    $("#c-history-note").textContent = d.card_history_note || "";
  } else {
    kvRows($("#c-txn-table"), []); kvRows($("#c-features"), []);
    $("#c-features-note").textContent = j.detail_note || ""; $("#c-history tbody").replaceChildren();
  }
  for (const tr of document.querySelectorAll("#queue tbody tr")) tr.className = tr.dataset.txn === current ? "sel" : "";
}

async function openCase(id, keepMsg) {
  if (!keepMsg) $("#action-msg").textContent = "";
  $("#case").dataset.loading = "1";
  const r = await api("GET", "/api/cases/" + encodeURIComponent(id));
  delete $("#case").dataset.loading;
  if (r.status !== 200) { $("#action-msg").textContent = r.body.error; return; }
  renderCase(r.body);
}

async function act(action, resolution) {
  if (!current) return;
  const body = {};
  if (resolution) {
    body.resolution = resolution;
    body.lists = {};
    for (const k of ["card", "device", "ip"]) if ($("#list-" + k).checked) body.lists[k] = $("#list-" + k + "-name").value.trim();
  }
  const r = await api("POST", "/api/cases/" + encodeURIComponent(current) + "/" + action, body);
  // the case is shown as it is now first, then the outcome of the action: what the message says is on screen
  await openCase(current, true);
  const m = $("#action-msg");
  if (r.status === 200) {
    const lists = (r.body.lists || []).map((l) => l.what + " → " + l.list + (l.ok ? "" : " (failed)")).join(", ");
    m.textContent = action + (resolution ? " " + resolution : "") + ": done" + (lists ? "; added " + lists : "");
    m.className = "msg ok";
  } else {
    m.textContent = (r.status === 409 ? "Conflict: " : "") + r.body.error;
    m.className = "msg err";
  }
  loadQueue();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const r = await api("POST", "/api/login", { user: $("#login-user").value.trim(), secret: $("#login-secret").value });
  if (r.status === 200) showApp(r.body.user); else $("#login-msg").textContent = r.body.error;
});
$("#logout").addEventListener("click", async () => { await api("POST", "/api/logout", {}); showLogin(); });
$("#filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadQueue(); });
$("#btn-claim").addEventListener("click", () => act("claim"));
$("#btn-release").addEventListener("click", () => act("release"));
$("#btn-fraud").addEventListener("click", () => act("resolve", "fraud"));
$("#btn-legit").addEventListener("click", () => act("resolve", "legitimate"));
setInterval(() => { if (!$("#app").hidden) loadQueue(); }, 10000);
api("GET", "/api/me").then((r) => { if (r.status === 200) showApp(r.body.user); else showLogin(); });
