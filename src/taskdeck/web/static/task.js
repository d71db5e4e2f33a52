"use strict";
// The task page: the question, live status and progress, reasoning, sources, the result (table
// with citations, or a report), warnings and errors with what to do next, the request as code.

let task = JSON.parse(document.getElementById("task-data").textContent);
let lastSeq = Math.max(0, ...task.events.map((e) => e.seq));
const $ = (id) => document.getElementById(id);
let messages = 0;

// What each ending means and what the person can do about it.
const HELP = {
  pending: "Stored; it is sent to Parallel in a moment.",
  submitting: "Being created at Parallel.",
  queued: "Created at Parallel, waiting to start.",
  running: "Parallel is working on it. You can close this page: Taskdeck keeps following the run.",
  completed: "Done.",
  failed: "Parallel could not finish this run. Resubmit it, or edit it (another processor, a simpler schema) and run again.",
  rejected: "Parallel refused to create this run, so nothing was billed. Fix what the message says, then Edit & rerun.",
  submit_unknown: "Taskdeck could not tell whether Parallel created this run. Check your Parallel dashboard before you resubmit: a resubmit is a new, billed run.",
  cancelled: "The run was cancelled.",
};
const RESUBMITTABLE = new Set(["failed", "rejected", "submit_unknown"]);

// -- status, times, problems -----------------------------------------------------------------
function setStatus(status) {
  task.status = status;
  const badge = $("status");
  badge.textContent = status.replace("_", " ");
  badge.className = `badge s-${status}`;
  $("status-help").textContent = HELP[status] || "";
  $("resubmit").hidden = !RESUBMITTABLE.has(status);
  const ended = TERMINAL.has(status);
  $("follow-card").hidden = status !== "completed";
  if (ended && status !== "completed") $("no-result").textContent = "This run ended without a result.";
  if (status === "completed") $("meter").value = 100;
  showDuration();
}

function showDuration() {
  if (task.duration_seconds !== null && task.duration_seconds !== undefined) {
    $("duration-label").textContent = "Duration";
    $("duration").textContent = seconds(task.duration_seconds);
  } else if (!TERMINAL.has(task.status)) {
    $("duration-label").textContent = "Elapsed";
    $("duration").textContent = elapsed(task.submitted_at || task.created_at);
  } else {
    $("duration").textContent = "—";
  }
}

function showProblem(t) {
  const box = $("problem");
  const lines = [];
  // Taskdeck's message already quotes Parallel's error where there is one: say it once.
  if (t.message) lines.push(t.message);
  else if (t.error) lines.push(`Parallel reported: ${t.error.message || JSON.stringify(t.error)}`);
  box.replaceChildren(...lines.map((l) => h("p", {}, l)));
  box.hidden = lines.length === 0;
}

function showWarnings(warnings) {
  $("warnings").replaceChildren(...(warnings || []).map((w) => h("li", {}, String(w.message || JSON.stringify(w)))));
}

// -- events ----------------------------------------------------------------------------------
function messageItem(ev) {
  const kind = ev.type.replace("task_run.progress_msg.", "");
  const at = ev.data && ev.data.timestamp;
  return h("li", {}, h("span", { class: "kind" }, kind), " ", at ? localTime(at, true) : "", " ",
    String((ev.data && ev.data.message) || ""));
}

// Live messages one at a time: follow them only when the reader is already at the bottom
// (never yank the list away from what they are reading).
function addMessage(ev) {
  const list = $("timeline");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(messageItem(ev));
  messages += 1;
  $("message-count").textContent = `${messages}`;
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function setStats(data) {
  const stats = data.source_stats || {};
  $("considered").textContent = stats.num_sources_considered ?? 0;
  $("read").textContent = stats.num_sources_read ?? 0;
  if (data.progress_meter !== undefined) $("meter").value = Number(data.progress_meter || 0);
  $("sources").replaceChildren(...(stats.sources_read_sample || []).map((u) => h("li", {}, link(u))));
}

// The run was created while the page was open: its id, its cost, and a delete that warns it is billed.
function showRun(runId) {
  task.run_id = runId;
  $("run-id").textContent = runId;
  $("copy-run").hidden = false;
  if (task.price_usd !== null && task.price_usd !== undefined) $("cost").textContent = money(task.price_usd);
}

function absorb(ev) {
  if (ev.type.startsWith("task_run.progress_msg.")) addMessage(ev);
  else if (ev.type === "task_run.progress_stats" && ev.data) setStats(ev.data);
  else if (ev.type === "taskdeck.submitted" && ev.data && ev.data.run_id) showRun(ev.data.run_id);
  // Upstream state events only mark the start and the end of a run; the badge shows Taskdeck's
  // own status, which the stream sends as `status` events.
}

// -- the result ------------------------------------------------------------------------------
function confidence(level) {
  return level ? h("span", { class: `badge c-${String(level).toLowerCase()}` }, String(level)) : "";
}

function valueNode(value) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "null");
  if (Array.isArray(value)) return h("ol", {}, value.map((v) => h("li", {}, valueNode(v))));
  if (typeof value === "object") {
    return h("table", { class: "nested" }, Object.entries(value).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, valueNode(v)))));
  }
  return String(value);
}

function basisNode(basis) {
  if (!basis) return "";
  return h("div", { class: "basis" },
    confidence(basis.confidence),
    h("ul", { class: "citations" }, (basis.citations || []).map((c) =>
      h("li", {}, link(c.url, c.title || c.url),
        (c.excerpts || []).length ? h("details", {}, h("summary", {}, "excerpts"), (c.excerpts || []).map((x) => h("blockquote", {}, String(x)))) : ""))),
    basis.reasoning ? h("details", {}, h("summary", {}, "reasoning"), h("p", {}, String(basis.reasoning))) : "");
}

// Pretty JSON as nested <details>: objects and arrays fold, leaves stay text.
function jsonTree(value, key) {
  const label = key === undefined ? "" : `${JSON.stringify(key)}: `;
  if (value !== null && typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
    const brackets = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
    return h("details", { open: true, class: "json" },
      h("summary", {}, `${label}${brackets[0]} ${entries.length} ${Array.isArray(value) ? "items" : "keys"}`),
      h("div", { class: "json-body" }, entries.map(([k, v]) => jsonTree(v, Array.isArray(value) ? undefined : k))),
      h("span", {}, brackets[1]));
  }
  return h("div", { class: "json-leaf" }, label, h("span", { class: "json-value" }, JSON.stringify(value)));
}

function renderResult(t) {
  showProblem(t);
  showWarnings(t.warnings);
  const has = !!t.output;
  $("result-card").hidden = !has && TERMINAL.has(t.status);
  for (const id of ["download-json", "download-csv"]) $(id).hidden = !has;
  if (!has) return;
  $("result-json").replaceChildren(jsonTree(t.output));
  const byField = Object.fromEntries((t.output.basis || []).map((b) => [b.field, b]));
  if (t.output.type === "text") {
    $("result-table").replaceChildren(t.report ? report(t.report) : h("p", {}, String(t.output.content)), basisNode(byField.output));
  } else {
    $("result-table").replaceChildren(h("div", { class: "scroll-x" }, h("table", { class: "result" },
      h("thead", {}, h("tr", {}, h("th", {}, "Field"), h("th", {}, "Value"), h("th", {}, "Sources and confidence"))),
      h("tbody", {}, Object.entries(t.output.content || {}).map(([k, v]) =>
        h("tr", {}, h("th", {}, k), h("td", {}, valueNode(v)), h("td", {}, basisNode(byField[k]))))))));
  }
  const dj = $("download-json");
  dj.href = URL.createObjectURL(new Blob([JSON.stringify(t.output, null, 2)], { type: "application/json" }));
  dj.download = `${t.id}.json`;
  $("download-csv").href = t.urls.csv;  // built by the server: the same bytes for the browser and for scripts
  $("download-csv").download = `${t.id}.csv`;
}

function renderFollowUps(list) {
  $("follow-ups").replaceChildren(...list.map((f) => h("li", {},
    h("span", { class: `badge s-${f.status}` }, f.status), " ", h("a", { href: f.urls.page }, f.input_preview || f.id),
    h("span", { class: "muted" }, ` · ${f.processor}`))));
}

function applyFacts(t) {
  setStatus(t.status);
  fillTime($("created"), t.created_at);
  fillTime($("completed"), t.completed_at);
  if (t.run_id) $("run-id").textContent = t.run_id;
  $("copy-run").hidden = !t.run_id;
  // A run that ended without a single event (refused, or events off) has no sources or reasoning to show.
  const quiet = TERMINAL.has(t.status) && messages === 0 && !t.progress;
  $("progress-card").hidden = quiet;
  $("reasoning-card").hidden = quiet;
  $("cost").textContent = t.cost_usd === null ? "none: no run was created" : money(t.cost_usd);
  renderResult(t);
  renderFollowUps(t.follow_ups || []);
}

let reloading = null;
// Once per ending: the stream's `end` (and a terminal `status`) both lead here.
function reload() {
  reloading = reloading || api("GET", task.urls.json).then((fresh) => { task = fresh; applyFacts(fresh); });
  return reloading;
}

// -- wiring ----------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  // The stored history in one batch: one layout for thousands of messages, not one each.
  const history = document.createDocumentFragment();
  for (const ev of task.events) {
    if (ev.type.startsWith("task_run.progress_msg.")) { history.append(messageItem(ev)); messages += 1; } else absorb(ev);
  }
  $("timeline").append(history);
  $("message-count").textContent = messages ? `${messages}` : "";
  $("timeline").scrollTop = $("timeline").scrollHeight;
  if (task.progress) setStats(task.progress);
  applyFacts(task);
  const sel = $("follow-processor");
  for (const opt of ["lite", "base", "core", "pro", "ultra"]) sel.append(h("option", { value: opt, selected: opt === task.processor ? true : null }, opt));
  if (![...sel.options].some((o) => o.value === task.processor)) sel.prepend(h("option", { value: task.processor, selected: true }, task.processor));

  const showRequest = tabs(["req-json", "req-curl", "req-python"].map($), (b) => {
    // The server generates the code (real serialisers, proper quoting): shown as text, never run here.
    $("request-code").textContent = task.code[b.id.replace("req-", "")];
  });
  showRequest($("req-json"));
  tabs([$("tab-table"), $("tab-json")], (b) => {
    $("result-table").hidden = b.id !== "tab-table";
    $("result-json").hidden = b.id !== "tab-json";
  });
  $("copy-run").addEventListener("click", () => copyText($("run-id").textContent, $("copy-note")));
  $("copy-code").addEventListener("click", () => copyText($("request-code").textContent, $("copy-code-note")));
  $("resubmit").addEventListener("click", async () => {
    try {
      const out = await api("POST", `/api/tasks/${task.id}/resubmit`);
      location.assign(out.task.urls.page);
    } catch (err) { showProblem({ message: err.message }); }
  });
  $("delete").addEventListener("click", async () => {
    const billed = task.run_id && !TERMINAL.has(task.status) ? " The run goes on at Parallel and is billed." : "";
    if (!confirm(`Delete this task and its events?${billed}`)) return;
    try { await api("DELETE", `/api/tasks/${task.id}`); location.replace("/"); } catch (err) { showProblem({ message: err.message }); }
  });
  $("follow-up").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { processor: $("follow-processor").value, input: $("follow-input").value, follow_up_of: task.id };
    try {
      const created = await api("POST", "/api/tasks", body);
      location.assign(created.task.urls.page);
    } catch (err) {
      $("follow-error").textContent = err.message;
    }
  });
  setInterval(showDuration, 1000);
  if (TERMINAL.has(task.status)) return;
  const source = new EventSource(`${task.urls.events}?after=${lastSeq}`);
  source.onmessage = (e) => {
    const ev = JSON.parse(e.data);
    if (ev.seq <= lastSeq) return;
    lastSeq = ev.seq;
    absorb(ev);
  };
  source.addEventListener("status", (e) => setStatus(JSON.parse(e.data).status));
  source.addEventListener("end", () => { source.close(); reload(); });
});
