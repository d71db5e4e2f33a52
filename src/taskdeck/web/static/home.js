"use strict";
// The home page: the key, the new-task form (checked as you type with the server's own rules),
// and the task list (filters, counts, pages and selection all in the URL, live while open).

const data = JSON.parse(document.getElementById("home-data").textContent);
const params = new URLSearchParams(location.search);
const selected = new Set();
const EXAMPLE_SCHEMA = {
  type: "object",
  properties: {
    ceo: { type: "string", description: "Name of the current CEO" },
    founded: { type: "integer", description: "Year the company was founded" },
    headquarters: { type: "string", description: "City and country of the headquarters" },
  },
  required: ["ceo", "founded", "headquarters"],
  additionalProperties: false,
};
const MAX_INPUT = 25000;
const $ = (id) => document.getElementById(id);

// -- key -------------------------------------------------------------------------------------
function nextPath() {
  const next = params.get("next");
  // Only a page of this site. Parse it as the browser will (which drops tabs and newlines, so
  // "/\t/evil.com" is "//evil.com") and keep it only when it stays on this origin.
  if (!next || !next.startsWith("/") || /[\u0000-\u001f\u007f\\]/.test(next)) return null;
  try {
    const url = new URL(next, location.origin);
    return url.origin === location.origin ? url.pathname + url.search + url.hash : null;
  } catch (e) {
    return null;
  }
}

function showKey(signedIn, mask) {
  $("key-signed-in").hidden = !signedIn;
  $("key-form").hidden = signedIn;
  $("key-mask").textContent = mask || "";
  $("task-card").hidden = !signedIn;
  $("list-card").hidden = !signedIn;
  $("next-note").hidden = !nextPath();
}

// -- the form --------------------------------------------------------------------------------
function schemaMode() {
  return document.querySelector('input[name="schema_mode"]:checked').value;
}

function inputKind() {
  return document.querySelector('input[name="input_kind"]:checked').value;
}

// The form's visible state from its values: run at load and when the page comes back from
// the back/forward cache, so what is shown is always what would be sent.
function syncForm() {
  const opt = $("processor").selectedOptions[0];
  $("cost").textContent = `$${Number(opt.dataset.price).toFixed(3)}`;
  const mode = schemaMode();
  $("schema").hidden = mode === "auto";
  $("schema-example").hidden = mode !== "json";
  $("schema").placeholder = mode === "text" ? "A short report on …" : mode === "json" ? '{"type": "object", "properties": {…}}' : "";
  const n = $("input").value.length;
  $("input-count").textContent = `${n.toLocaleString()} / ${MAX_INPUT.toLocaleString()} characters`;
  $("input-count").className = n > MAX_INPUT ? "error small" : "muted small";
}

class LocalProblem extends Error {
  constructor(loc, message) { super(message); this.loc = loc; }
}

function parseJson(text, loc) {
  try { return JSON.parse(text); } catch (e) { throw new LocalProblem(loc, `is not valid JSON (${e.message})`); }
}

function buildRequest() {
  const raw = $("input").value;
  const body = { processor: $("processor").value, input: inputKind() === "json" ? parseJson(raw, "input") : raw };
  const mode = schemaMode();
  const schemaText = $("schema").value;
  if (mode === "auto") body.task_spec = { output_schema: { type: "auto" } };
  else if (mode === "text") body.task_spec = { output_schema: { type: "text", description: schemaText } };
  else body.task_spec = { output_schema: { type: "json", json_schema: parseJson(schemaText, "task_spec.output_schema") } };
  const split = (v) => v.split(",").map((s) => s.trim()).filter(Boolean);
  const include = split($("include").value);
  const exclude = split($("exclude").value);
  const after = $("after-date").value;
  if (include.length || exclude.length || after) {
    body.source_policy = {};
    if (include.length) body.source_policy.include_domains = include;
    if (exclude.length) body.source_policy.exclude_domains = exclude;
    if (after) body.source_policy.after_date = after;
  }
  const location_ = $("location").value.trim();
  if (location_) body.advanced_settings = { location: location_.toLowerCase() };
  const meta = $("metadata").value.trim();
  if (meta) body.metadata = parseJson(meta, "metadata");
  if (!$("enable-events").checked) body.enable_events = false;
  const hook = $("webhook").value.trim();
  if (hook) body.webhook = { url: hook, event_types: ["task_run.status"] };
  const mcp = $("mcp").value.trim();
  if (mcp) body.mcp_servers = parseJson(mcp, "mcp_servers");
  const prev = $("previous-interaction").value.trim();
  if (prev) body.previous_interaction_id = prev;
  if ($("follow-up-of").value) body.follow_up_of = $("follow-up-of").value;
  return body;
}

function showCheck(problems, warnings) {
  $("check-problems").replaceChildren(...problems.map((p) =>
    h("li", {}, h("strong", {}, (p.loc || []).join(".") || "request"), ": ", p.msg)));
  $("check-warnings").replaceChildren(...warnings.map((w) => h("li", {}, w.message)));
}

let checkSeq = 0;
let checkTimer = null;
// Checked with the server's rules (POST /api/tasks/check) a moment after each change.
function scheduleCheck() {
  clearTimeout(checkTimer);
  checkTimer = setTimeout(runCheck, 250);
}

async function runCheck() {
  const seq = ++checkSeq;
  let body;
  try { body = buildRequest(); } catch (err) {
    if (err instanceof LocalProblem) { showCheck([{ loc: [err.loc], msg: err.message }], []); return false; }
    throw err;
  }
  if (typeof body.input === "string" && !body.input.trim()) { showCheck([], []); return false; }
  try {
    const out = await api("POST", "/api/tasks/check", body);
    if (seq === checkSeq) showCheck(out.problems, out.warnings);
    return out.ok;
  } catch (err) {
    if (seq === checkSeq) showCheck(err.problems && err.problems.length ? err.problems : [{ loc: [], msg: err.message }], []);
    return false;
  }
}

function prefill(source, follow) {
  const req = source.request || {};
  if (follow) {
    $("follow-up-of").value = source.task_id;
    $("form-title").textContent = "Follow-up";
    $("prefill-note").textContent = `Follows up “${source.input_preview}”: uses that run's context.`;
  } else {
    $("form-title").textContent = "Edit & rerun";
    $("prefill-note").textContent = `Pre-filled from “${source.input_preview}”. Change what you like and run it as a new task.`;
  }
  $("prefill-note").hidden = false;
  if (req.processor) $("processor").value = req.processor;
  if (!follow) {
    const json = req.input !== null && typeof req.input === "object";
    document.querySelector(`input[name="input_kind"][value="${json ? "json" : "text"}"]`).checked = true;
    $("input").value = json ? JSON.stringify(req.input, null, 2) : String(req.input ?? "");
  }
  const schema = ((req.task_spec || {}).output_schema) || { type: "auto" };
  const mode = schema.type === "json" ? "json" : schema.type === "text" ? "text" : "auto";
  document.querySelector(`input[name="schema_mode"][value="${mode}"]`).checked = true;
  $("schema").value = mode === "json" ? JSON.stringify(schema.json_schema, null, 2) : mode === "text" ? schema.description || "" : "";
  const policy = req.source_policy || {};
  $("include").value = (policy.include_domains || []).join(", ");
  $("exclude").value = (policy.exclude_domains || []).join(", ");
  $("after-date").value = policy.after_date || "";
  $("location").value = (req.advanced_settings || {}).location || "";
  const meta = Object.assign({}, req.metadata || {});
  delete meta.taskdeck_id;
  $("metadata").value = Object.keys(meta).length ? JSON.stringify(meta) : "";
  $("enable-events").checked = req.enable_events !== false;
  $("webhook").value = (req.webhook || {}).url || "";
  $("mcp").value = req.mcp_servers ? JSON.stringify(req.mcp_servers) : "";
  $("previous-interaction").value = req.previous_interaction_id || "";
  if (policy.after_date || req.advanced_settings || Object.keys(meta).length || req.webhook || req.mcp_servers ||
      req.previous_interaction_id || req.enable_events === false || policy.include_domains || policy.exclude_domains) {
    $("more-options").open = true;
  }
}

// Runs of $1 or more are confirmed first, showing what they cost.
function confirmCost(price) {
  const dialog = $("confirm-cost");
  $("confirm-cost-amount").textContent = `$${price.toFixed(3)}`;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "run"), { once: true });
    dialog.showModal();
    $("confirm-cost-run").focus();
  });
}

// -- the list --------------------------------------------------------------------------------
function listUrl(changes, path = "/") {
  const next = new URLSearchParams(location.search);
  for (const k of ["next", "from", "follow"]) next.delete(k);
  for (const [k, v] of Object.entries(changes)) {
    next.delete(k);
    for (const one of [].concat(v)) if (one !== null && one !== undefined && one !== "") next.append(k, one);
  }
  if (!("cursor" in changes)) next.delete("cursor");  // a new filter starts at the first page
  const qs = next.toString();
  return path + (qs ? `?${qs}` : "") + "#list-card";
}

function progressCell(t) {
  if (t.status !== "running" && t.status !== "queued") return "";
  const pct = Math.round(Number(t.progress_meter || 0));
  return h("span", { class: "row-progress", title: `${pct} %` },
    h("progress", { max: "100", value: String(pct), "aria-label": `Progress ${pct} %` }), ` ${pct} %`);
}

function durationOf(t) {
  if (t.duration_seconds !== null && t.duration_seconds !== undefined) return seconds(t.duration_seconds);
  if (!TERMINAL.has(t.status)) return `${elapsed(t.submitted_at || t.created_at)} so far`;
  return "—";
}

function row(t) {
  const box = h("input", { type: "checkbox", class: "pick", "aria-label": `Select ${t.input_preview}`, "data-id": t.id });
  box.checked = selected.has(t.id);
  box.addEventListener("change", () => { if (box.checked) selected.add(t.id); else selected.delete(t.id); showBulk(); });
  return h("tr", { "data-id": t.id, "data-status": t.status },
    h("td", {}, box),
    h("td", { class: "status-cell" }, h("span", { class: `badge s-${t.status}` }, t.status.replace("_", " ")), progressCell(t)),
    h("td", { class: "preview" }, h("a", { href: t.urls.page, title: t.input_preview }, t.input_preview || t.id)),
    h("td", { class: "wide" }, t.processor),
    h("td", { class: "wide age", "data-at": t.created_at, title: t.created_at ? `${new Date(t.created_at).toLocaleString()} (${t.created_at})` : "" }, ago(t.created_at)),
    h("td", { class: "wide dur" }, durationOf(t)),
    h("td", { class: "wide" }, money(t.cost_usd)));
}

function renderChips() {
  const active = new Set(data.filters.status);
  const chip = (label, value, count) => {
    const on = value === null ? active.size === 0 : active.has(value);
    return h("a", { class: `chip${on ? " on" : ""}`, href: listUrl({ status: value === null ? [] : value }),
                    "aria-current": on ? "true" : null, "data-status": value || "all" },
      `${label} `, h("span", { class: "count" }, String(count)));
  };
  const order = ["running", "queued", "pending", "submitting", "completed", "failed", "rejected", "submit_unknown", "action_required", "cancelling", "cancelled"];
  const chips = [chip("All", null, data.total)];
  for (const s of order) if (data.counts[s]) chips.push(chip(s.replace("_", " "), s, data.counts[s]));
  $("status-chips").replaceChildren(...chips);
  $("total").textContent = `${data.total.toLocaleString()} in all` +
    (data.filters.q ? " (counts are for every task, not only the search results)" : "");
}

function renderList() {
  const body = document.querySelector("#tasks tbody");
  body.replaceChildren(...data.tasks.map(row));
  $("empty").hidden = data.tasks.length > 0;
  $("empty").textContent = data.total ? "No task matches these filters." : "No tasks yet: run one above.";
  renderChips();
  const f = data.filters;
  $("q").value = f.q || "";
  $("filter-processor").value = f.processor || "";
  $("order").value = f.order || "newest";
  $("next-page").hidden = !data.next_cursor;
  if (data.next_cursor) $("next-page").href = listUrl({ cursor: data.next_cursor });
  $("first-page").hidden = !f.cursor;
  $("first-page").href = listUrl({});
  showBulk();
}

function showBulk() {
  $("bulk").hidden = selected.size === 0;
  $("bulk-count").textContent = `${selected.size} selected`;
  $("bulk-compare").disabled = selected.size < 2 || selected.size > 6;
  const boxes = [...document.querySelectorAll("#tasks input.pick")];
  $("select-all").checked = boxes.length > 0 && boxes.every((b) => b.checked);
}

// A task not on this page belongs at its top only when it is newer than every row shown
// (a status change of an older task, on a later page, must not jump here).
function matchesFilters(t) {
  const f = data.filters;
  if (f.cursor || f.order === "oldest" || f.q) return false;  // only the live head of the list grows
  if (f.status.length && !f.status.includes(t.status)) return false;
  if (f.processor && f.processor !== t.processor) return false;
  const newest = data.tasks.length ? data.tasks[0].created_at : null;
  return newest === null || Date.parse(t.created_at) > Date.parse(newest);
}

function watchTasks() {
  const source = new EventSource("/api/tasks/stream");
  source.addEventListener("task", (e) => {
    const t = JSON.parse(e.data);
    const body = document.querySelector("#tasks tbody");
    const old = body.querySelector(`tr[data-id="${CSS.escape(t.id)}"]`);
    if (old) old.replaceWith(row(t));
    else if (matchesFilters(t)) { body.prepend(row(t)); data.tasks.unshift(t); $("empty").hidden = true; }
    refreshCounts();
  });
  // The server could not send every change one by one (a burst this page fell behind on): read the page again.
  source.addEventListener("resync", async () => {
    try {
      const fresh = await api("GET", `/index.json${location.search}`);
      Object.assign(data, { tasks: fresh.tasks, counts: fresh.counts, total: fresh.total, next_cursor: fresh.next_cursor });
      renderList();
    } catch (e) { /* the next change brings the rows it concerns */ }
  });
  source.addEventListener("removed", (e) => {
    const { id } = JSON.parse(e.data);
    const old = document.querySelector(`#tasks tbody tr[data-id="${CSS.escape(id)}"]`);
    if (old) old.remove();
    selected.delete(id);
    showBulk();
    refreshCounts();
  });
}

// Counts come from the server (a change may concern a task on another page or outside the
// filter, which this page cannot place): asked again at most once a second.
let countsTimer = null;
function refreshCounts() {
  if (countsTimer) return;
  countsTimer = setTimeout(async () => {
    countsTimer = null;
    try {
      const fresh = await api("GET", `/index.json${location.search}`);
      data.counts = fresh.counts;
      data.total = fresh.total;
      renderChips();
    } catch (e) { /* the next change asks again */ }
  }, 1000);
}

// Ages and running durations move on while the page is open.
function tick() {
  for (const cell of document.querySelectorAll("#tasks td.age")) cell.textContent = ago(cell.dataset.at);
  for (const t of data.tasks) {
    const tr = document.querySelector(`#tasks tbody tr[data-id="${CSS.escape(t.id)}"]`);
    if (tr && !TERMINAL.has(tr.dataset.status)) tr.querySelector("td.dur").textContent = `${elapsed(t.submitted_at || t.created_at)} so far`;
  }
}

async function bulk(method, pathOf, verb) {
  const ids = [...selected];
  let ok = 0;
  const failed = [];
  for (const id of ids) {
    try { await api(method, pathOf(id)); ok += 1; } catch (err) { failed.push(err.message); }
  }
  $("bulk-note").textContent = `${verb} ${ok} of ${ids.length}.` + (failed.length ? ` Not done: ${failed[0]}` : "");
  return ok;
}

// -- wiring ----------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  showKey(data.signed_in, data.key);
  if (data.prefill) prefill(data.prefill, params.get("follow") === "1");
  syncForm();
  window.addEventListener("pageshow", () => {
    // Back from another page may restore ticked boxes: the selection is what is ticked.
    selected.clear();
    for (const box of document.querySelectorAll("#tasks input.pick")) if (box.checked) selected.add(box.dataset.id);
    syncForm();
    showBulk();
  });
  for (const el of document.querySelectorAll("#task-form input, #task-form select, #task-form textarea")) {
    el.addEventListener("input", () => { syncForm(); scheduleCheck(); });
    el.addEventListener("change", () => { syncForm(); scheduleCheck(); });
  }
  $("schema-example").addEventListener("click", () => {
    $("schema").value = JSON.stringify(EXAMPLE_SCHEMA, null, 2);
    syncForm();
    scheduleCheck();
  });
  if (data.prefill) scheduleCheck();

  $("key-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("key-error").textContent = "";
    const key = $("api-key").value.trim();
    if (!key) { $("key-error").textContent = "Enter your Parallel API key."; return; }
    try {
      const session = await api("POST", "/api/session", { api_key: key });
      setCsrfToken(session.csrf_token);
      $("api-key").value = "";
      location.assign(nextPath() || "/");
    } catch (err) {
      $("key-error").textContent = err.status === 401 ? "Parallel refused this key. Copy it again and retry." : err.message;
    }
  });
  $("forget-key").addEventListener("click", async () => {
    const out = await api("DELETE", "/api/session");
    setCsrfToken(out.csrf_token);
    location.assign("/");
  });
  $("erase-key").addEventListener("click", async () => {
    try {
      const out = await api("DELETE", "/api/key");
      const token = await api("GET", "/api/csrf");
      setCsrfToken(token.csrf_token);
      showKey(false, null);
      $("key-note").textContent = `Key erased from this server; ${out.runs_no_longer_followed} active run(s) are no longer followed.`;
    } catch (err) {
      $("erase-result").textContent = err.message;
    }
  });

  $("task-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("task-error").textContent = "";
    if (!$("input").value.trim()) { $("task-error").textContent = "Enter the question or the input of the task."; $("input").focus(); return; }
    if (!(await runCheck())) { $("task-error").textContent = "Fix the problems listed above, then run the task."; return; }
    const body = buildRequest();
    const price = Number($("processor").selectedOptions[0].dataset.price);
    if (price >= 1 && !(await confirmCost(price))) return;
    try {
      const created = await api("POST", "/api/tasks", body);
      location.assign(created.task.urls.page);
    } catch (err) {
      $("task-error").textContent = err.message;
      if (err.problems.length) showCheck(err.problems, []);
    }
  });
  $("track-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("track-error").textContent = "";
    try {
      const out = await api("POST", "/api/track", { run_id: $("track-run").value.trim() });
      location.assign(out.task.urls.page);
    } catch (err) {
      $("track-error").textContent = err.message;
    }
  });

  $("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    location.assign(listUrl({ q: $("q").value.trim(), processor: $("filter-processor").value, order: $("order").value }));
  });
  for (const id of ["filter-processor", "order"]) {
    $(id).addEventListener("change", () => $("filters").requestSubmit());
  }
  $("select-all").addEventListener("change", () => {
    for (const box of document.querySelectorAll("#tasks input.pick")) {
      box.checked = $("select-all").checked;
      if (box.checked) selected.add(box.dataset.id); else selected.delete(box.dataset.id);
    }
    showBulk();
  });
  $("bulk-compare").addEventListener("click", () => location.assign(`/compare?${[...selected].map((i) => `id=${i}`).join("&")}`));
  $("bulk-export").addEventListener("click", () => {
    location.assign(`/api/export?format=${$("bulk-format").value}&${[...selected].map((i) => `id=${i}`).join("&")}`);
  });
  $("bulk-delete").addEventListener("click", async () => {
    if (!confirm(`Delete ${selected.size} task(s)? Runs already created at Parallel go on and are billed.`)) return;
    await bulk("DELETE", (id) => `/api/tasks/${id}`, "Deleted");
  });
  $("bulk-resubmit").addEventListener("click", async () => {
    await bulk("POST", (id) => `/api/tasks/${id}/resubmit`, "Resubmitted");
  });

  if (data.signed_in) {
    renderList();
    watchTasks();
    setInterval(tick, 10000);
  }
});
