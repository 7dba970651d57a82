// The keygate dashboard: keys, their usage log and charts, and spend alerts, all through the
// management API. The signed-in key lives in this module's memory and the tab's
// sessionStorage; a new key's token is shown once in a dialog and dropped when it closes.
// Everything the API returns is written with textContent, never parsed as HTML.

import { Api } from "./api.js";
import { barChart } from "./charts.js";

const STORAGE = "keygate.dashboard.key";
const DAYS = 14;
const $ = (selector) => document.querySelector(selector);

const state = { api: null, offset: 0, keys: [], total: 0, selected: null, cursor: null };

// ---- helpers ---------------------------------------------------------------------------------

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function when(text) {
  return text ? text.replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
}

function notice(text, error) {
  const p = $("#notice");
  p.textContent = text;
  p.className = error ? "error" : "ok";
}

function list(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

function integer(text) {
  return text.trim() === "" ? null : Number.parseInt(text, 10);
}

function usd(micros) {
  return `$${(micros / 1e6).toFixed(micros % 10000 === 0 ? 2 : 6)}`;
}

function percents(text) {
  return text.trim() === "" ? null : list(text).map((p) => Number.parseInt(p, 10));
}

// ---- signing in and out ----------------------------------------------------------------------

async function signIn(key) {
  const api = new Api(key);
  // Listing one key proves the key may read keys.
  await api.get("/v1/management/keys", { limit: 1 });
  state.api = api;
  sessionStorage.setItem(STORAGE, key);
  $("#sign-in").hidden = true;
  $("#app").hidden = false;
  $("#sign-out").hidden = false;
  $("#whoami").textContent = `signed in as ${key.split("_").slice(0, 4).join("_")}…`;
  await loadKeys();
}

function signOut() {
  sessionStorage.removeItem(STORAGE);
  state.api = null;
  location.reload();
}

$("#sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("#sign-in-key");
  const key = input.value.trim();
  input.value = "";
  $("#sign-in-error").textContent = "";
  try {
    await signIn(key);
  } catch (e) {
    $("#sign-in-error").textContent = `Sign-in failed: ${e.message}`;
  }
});

$("#sign-out").addEventListener("click", signOut);

// ---- the key list ----------------------------------------------------------------------------

async function loadKeys() {
  const limit = Number($("#page-size").value);
  const team = $("#team-filter").value.trim();
  try {
    const page = await state.api.get("/v1/management/keys", { limit, offset: state.offset, team_id: team });
    state.keys = page.keys;
    state.total = page.total;
    renderKeys();
  } catch (e) {
    notice(`Could not list keys: ${e.message}`, true);
  }
}

function renderKeys() {
  const text = $("#filter").value.trim().toLowerCase();
  const status = $("#status-filter").value;
  const body = $("#keys tbody");
  body.replaceChildren();
  for (const key of state.keys) {
    const haystack = `${key.name} ${key.id} ${key.prefix}`.toLowerCase();
    if ((text && !haystack.includes(text)) || (status && key.status !== status)) continue;
    const row = document.createElement("tr");
    row.dataset.id = key.id;
    row.tabIndex = 0;
    cell(row, key.name);
    cell(row, key.id, "mono");
    cell(row, key.status, `status ${key.status}`);
    cell(row, key.team_id || "—");
    cell(row, key.spend_cap ? `${key.spend_cap.amount_usd} USD / ${key.spend_cap.period}` : "—");
    cell(row, when(key.created_at));
    cell(row, when(key.last_used_at) || "never");
    row.addEventListener("click", () => openKey(key.id));
    row.addEventListener("keydown", (e) => e.key === "Enter" && openKey(key.id));
    body.appendChild(row);
  }
  const limit = Number($("#page-size").value);
  const first = state.total === 0 ? 0 : state.offset + 1;
  $("#page-info").textContent = `${first}–${state.offset + state.keys.length} of ${state.total}`;
  $("#prev-page").disabled = state.offset === 0;
  $("#next-page").disabled = state.offset + limit >= state.total;
}

$("#filter").addEventListener("input", renderKeys);
$("#status-filter").addEventListener("change", renderKeys);
$("#team-filter").addEventListener("change", () => { state.offset = 0; loadKeys(); });
$("#page-size").addEventListener("change", () => { state.offset = 0; loadKeys(); });
$("#prev-page").addEventListener("click", () => {
  state.offset = Math.max(0, state.offset - Number($("#page-size").value));
  loadKeys();
});
$("#next-page").addEventListener("click", () => {
  state.offset += Number($("#page-size").value);
  loadKeys();
});

// ---- one key: edit, rotate, revoke -----------------------------------------------------------

async function openKey(id) {
  try {
    const { key } = await state.api.get(`/v1/management/keys/${encodeURIComponent(id)}`);
    state.selected = key;
    showKey(key);
    await Promise.all([loadCharts(key.id), loadLog(key.id, true), loadAlerts(key.id)]);
  } catch (e) {
    notice(`Could not open key ${id}: ${e.message}`, true);
  }
}

function showKey(key) {
  $("#key-detail").hidden = false;
  $("#detail-title").textContent = `${key.name} (${key.status})`;
  $("#detail-prefix").textContent = key.prefix;
  const form = $("#edit-form");
  form.elements.name.value = key.name;
  form.elements.status.value = key.status;
  form.elements.soft_blocked.checked = key.soft_blocked;
  form.elements.expires_at.value = key.expires_at || "";
  form.elements.rpm.value = key.rate_limit.requests_per_minute ?? "";
  form.elements.tpm.value = key.rate_limit.tokens_per_minute ?? "";
  form.elements.concurrency.value = key.rate_limit.concurrency ?? "";
  form.elements.cap_usd.value = key.spend_cap ? String(key.spend_cap.amount_usd) : "";
  form.elements.cap_period.value = key.spend_cap ? key.spend_cap.period : "month";
  form.elements.spend_alerts.value = key.spend_alerts ? key.spend_alerts.join(", ") : "";
  form.elements.allowed_models.value = key.allowed_models.join(", ");
  form.elements.allowed_providers.value = key.allowed_providers.join(", ");
  form.elements.allowed_ips.value = key.allowed_ips.join(", ");
  resetRevoke();
}

// The fields of the form that differ from the key: an update changes only what it names.
function changes(key, form) {
  const f = form.elements;
  const wanted = {
    name: f.name.value.trim(),
    status: f.status.value,
    soft_blocked: f.soft_blocked.checked,
    expires_at: f.expires_at.value.trim() || null,
    rate_limit: {
      requests_per_minute: integer(f.rpm.value),
      tokens_per_minute: integer(f.tpm.value),
      concurrency: integer(f.concurrency.value),
    },
    spend_cap: f.cap_usd.value.trim() ? { amount_usd: f.cap_usd.value.trim(), period: f.cap_period.value } : null,
    spend_alerts: percents(f.spend_alerts.value),
    allowed_models: list(f.allowed_models.value),
    allowed_providers: list(f.allowed_providers.value),
    allowed_ips: list(f.allowed_ips.value),
  };
  const current = {
    ...key,
    spend_cap: key.spend_cap ? { amount_usd: String(key.spend_cap.amount_usd), period: key.spend_cap.period } : null,
  };
  const patch = {};
  for (const [field, value] of Object.entries(wanted)) {
    if (JSON.stringify(value) !== JSON.stringify(current[field])) patch[field] = value;
  }
  return patch;
}

$("#edit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = state.selected;
  const patch = changes(key, event.target);
  if (Object.keys(patch).length === 0) {
    notice("Nothing changed.");
    return;
  }
  try {
    const updated = await state.api.call("PATCH", `/v1/management/keys/${encodeURIComponent(key.id)}`, patch);
    state.selected = updated.key;
    showKey(updated.key);
    notice(`Saved ${Object.keys(patch).join(", ")}.`);
    await loadKeys();
  } catch (e) {
    notice(`Not saved: ${e.message}`, true);
  }
});

// Revoking takes two clicks: the button asks to be pressed again.
let revokeTimer = null;
function resetRevoke() {
  clearTimeout(revokeTimer);
  const button = $("#revoke");
  button.textContent = "Revoke";
  button.dataset.armed = "";
  button.disabled = state.selected && state.selected.status === "revoked";
}

$("#revoke").addEventListener("click", async () => {
  const button = $("#revoke");
  if (!button.dataset.armed) {
    button.dataset.armed = "1";
    button.textContent = "Click again to revoke for good";
    revokeTimer = setTimeout(resetRevoke, 5000);
    return;
  }
  const key = state.selected;
  try {
    const updated = await state.api.call("PATCH", `/v1/management/keys/${encodeURIComponent(key.id)}`, { status: "revoked" });
    state.selected = updated.key;
    showKey(updated.key);
    notice(`Revoked ${key.id}: its next request is refused with 401 revoked_api_key.`);
    await loadKeys();
  } catch (e) {
    notice(`Not revoked: ${e.message}`, true);
    resetRevoke();
  }
});

$("#rotate").addEventListener("click", async () => {
  const key = state.selected;
  try {
    const rotated = await state.api.call("POST", `/v1/management/keys/${encodeURIComponent(key.id)}/rotate`, {});
    showSecret(`Successor of ${key.name}: ${rotated.key.name}`, rotated.key.key);
    notice(`Rotated ${key.id}: its successor is ${rotated.key.id}. Revoke the old key once its log shows no more use.`);
    await loadKeys();
  } catch (e) {
    notice(`Not rotated: ${e.message}`, true);
  }
});

$("#close-detail").addEventListener("click", () => {
  $("#key-detail").hidden = true;
  state.selected = null;
});

// ---- usage: charts, log, alerts --------------------------------------------------------------

function lastDays() {
  const days = [];
  const today = new Date();
  for (let i = DAYS - 1; i >= 0; i--) {
    const d = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i));
    days.push(d.toISOString().slice(0, 10));
  }
  return days;
}

async function loadCharts(id) {
  const days = lastDays();
  const { usage } = await state.api.get("/v1/management/usage", {
    key_id: id,
    group_by: "day",
    from: `${days[0]}T00:00:00Z`,
  });
  const byDay = new Map(usage.map((row) => [row.day, row]));
  const series = (field) => days.map((day) => ({ label: day, value: (byDay.get(day) || {})[field] || 0 }));
  const charts = $("#charts");
  charts.replaceChildren(
    barChart("Requests", series("requests"), String, "requests"),
    barChart("Tokens", series("tokens"), String, "tokens"),
    barChart("Spend", series("cost_micros"), usd, "spend"),
  );
}

async function loadLog(id, fresh) {
  if (fresh) {
    state.cursor = null;
    $("#log tbody").replaceChildren();
  }
  const page = await state.api.get(`/v1/management/keys/${encodeURIComponent(id)}/logs`, { limit: 50, cursor: state.cursor });
  for (const r of page.logs) {
    const row = document.createElement("tr");
    row.dataset.outcome = r.outcome;
    cell(row, when(r.at));
    cell(row, r.outcome, r.outcome === "ok" ? "ok" : "error");
    cell(row, r.status);
    cell(row, r.route || "");
    cell(row, r.model || "");
    cell(row, r.tokens_in === null ? String(r.tokens) : `${r.tokens_in} / ${r.tokens_out}`);
    cell(row, usd(r.cost_micros));
    cell(row, r.latency_us === null ? "" : `${(r.latency_us / 1000).toFixed(1)} ms`);
    $("#log tbody").appendChild(row);
  }
  state.cursor = page.next_cursor;
  $("#older").hidden = !page.next_cursor;
}

$("#older").addEventListener("click", () => state.selected && loadLog(state.selected.id, false));

function alertText(a) {
  return `${when(a.at)}: ${a.percent}% of the ${a.period} cap (${a.spend_usd} of ${a.cap_usd} USD)`;
}

async function loadAlerts(id) {
  const { alerts } = await state.api.get("/v1/management/alerts", { key_id: id, limit: 20 });
  const ul = $("#key-alerts");
  ul.replaceChildren();
  for (const a of alerts) {
    const li = document.createElement("li");
    li.textContent = alertText(a);
    ul.appendChild(li);
  }
  if (!alerts.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "No alert in the log.";
    ul.appendChild(li);
  }
}

async function loadAllAlerts() {
  try {
    const { alerts } = await state.api.get("/v1/management/alerts", { limit: 100 });
    const body = $("#alerts tbody");
    body.replaceChildren();
    for (const a of alerts) {
      const row = document.createElement("tr");
      cell(row, when(a.at));
      cell(row, a.key_id, "mono");
      cell(row, a.team_id || "—");
      cell(row, `${a.percent}%`);
      cell(row, `${a.spend_usd} USD`);
      cell(row, `${a.cap_usd} USD / ${a.period}`);
      body.appendChild(row);
    }
  } catch (e) {
    notice(`Could not read alerts: ${e.message}`, true);
  }
}

for (const tab of document.querySelectorAll(".tabs button")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tabs button")) t.classList.toggle("active", t === tab);
    $("#keys-view").hidden = tab.dataset.view !== "keys";
    $("#alerts-view").hidden = tab.dataset.view !== "alerts";
    if (tab.dataset.view === "alerts") loadAllAlerts();
  });
}

// ---- creating a key; a token shown once --------------------------------------------------------

$("#new-key").addEventListener("click", () => {
  $("#create-form").reset();
  $("#create-error").textContent = "";
  $("#create-dialog").showModal();
});

$("#create-cancel").addEventListener("click", () => $("#create-dialog").close());

$("#create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const f = event.target.elements;
  const request = { name: f.name.value.trim(), status: "active" };
  if (f.scopes.value.trim()) request.scopes = f.scopes.value.trim();
  if (f.team_id.value.trim()) request.team_id = f.team_id.value.trim();
  if (f.allowed_models.value.trim()) request.allowed_models = list(f.allowed_models.value);
  if (f.rpm.value.trim()) request.rate_limit = { requests_per_minute: integer(f.rpm.value) };
  if (f.cap_usd.value.trim()) request.spend_cap = { amount_usd: f.cap_usd.value.trim(), period: "month" };
  if (f.spend_alerts.value.trim()) request.spend_alerts = percents(f.spend_alerts.value);
  try {
    const created = await state.api.call("POST", "/v1/management/keys", request);
    $("#create-dialog").close();
    showSecret(`Your new key: ${created.key.name}`, created.key.key);
    notice(`Created ${created.key.id}.`);
    await loadKeys();
  } catch (e) {
    $("#create-error").textContent = e.param ? `${e.param}: ${e.message}` : e.message;
  }
});

function showSecret(title, token) {
  $("#secret-title").textContent = title;
  $("#secret-value").value = token;
  $("#copy-status").textContent = "";
  $("#secret-dialog").showModal();
}

$("#copy-secret").addEventListener("click", async () => {
  const input = $("#secret-value");
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    input.select();
    document.execCommand("copy");
  }
  $("#copy-status").textContent = "Copied.";
});

// Closing the dialog (the button, or Escape) forgets the token.
$("#secret-dialog").addEventListener("close", () => {
  $("#secret-value").value = "";
  $("#copy-status").textContent = "";
});
$("#secret-done").addEventListener("click", () => $("#secret-dialog").close());

// ---- start -------------------------------------------------------------------------------------

const saved = sessionStorage.getItem(STORAGE);
if (saved) {
  signIn(saved).catch(() => sessionStorage.removeItem(STORAGE));
}
