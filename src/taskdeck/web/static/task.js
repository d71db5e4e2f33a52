"use strict";

const task = JSON.parse(document.getElementById("task-data").textContent);
let lastSeq = Math.max(0, ...task.events.map((e) => e.seq));

// -- Markdown, rendered as DOM nodes (headings, lists, tables, bold, code, http(s) links) ------
function inline(text) {
  const out = [];
  const re = /\*\*([^*]+)\*\*|`([^`]+)`|\[([^\]]+)\]\(([^)\s]+)\)|(?<![\w])_([^_]+)_(?![\w])/g;
  let at = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > at) out.push(text.slice(at, m.index));
    if (m[1] !== undefined) out.push(h("strong", {}, m[1]));
    else if (m[2] !== undefined) out.push(h("code", {}, m[2]));
    else if (m[5] !== undefined) out.push(h("em", {}, m[5]));
    else out.push(link(m[4], m[3]));
    at = m.index + m[0].length;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}

function markdown(source) {
  const root = h("div", { class: "markdown" });
  const lines = String(source).split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (heading) { root.append(h(`h${Math.min(6, heading[1].length + 2)}`, {}, inline(heading[2]))); i++; continue; }
    if (/^\s*[-*]\s+/.test(line)) {
      const ul = h("ul", {});
      while (i < lines.length && /^\s*[-*]\s+/.test(lines[i])) { ul.append(h("li", {}, inline(lines[i].replace(/^\s*[-*]\s+/, "")))); i++; }
      root.append(ul); continue;
    }
    if (line.startsWith("|")) {
      const table = h("table", { class: "md-table" });
      const rows = [];
      while (i < lines.length && lines[i].startsWith("|")) { rows.push(lines[i]); i++; }
      rows.filter((r) => !/^\|(\s*:?-+:?\s*\|)+\s*$/.test(r)).forEach((r, n) => {
        const cells = r.replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
        table.append(h("tr", {}, cells.map((c) => h(n === 0 ? "th" : "td", {}, inline(c)))));
      });
      root.append(table); continue;
    }
    if (line.trim()) root.append(h("p", {}, inline(line)));
    i++;
  }
  return root;
}

// -- pieces of the page ---------------------------------------------------------------------
function setStatus(status) {
  const badge = document.getElementById("status");
  badge.textContent = status;
  badge.className = `badge s-${status}`;
}

function addMessage(ev) {
  const kind = ev.type.replace("task_run.progress_msg.", "");
  const when = ev.data && ev.data.timestamp ? new Date(ev.data.timestamp).toLocaleTimeString() : "";
  document.getElementById("timeline").append(
    h("li", {}, h("span", { class: "kind" }, kind), " ", h("time", {}, when), " ", String((ev.data && ev.data.message) || "")));
}

function setStats(data) {
  const stats = data.source_stats || {};
  document.getElementById("considered").textContent = stats.num_sources_considered ?? 0;
  document.getElementById("read").textContent = stats.num_sources_read ?? 0;
  document.getElementById("meter").value = Number(data.progress_meter || 0);
  document.getElementById("sources").replaceChildren(...(stats.sources_read_sample || []).map((u) => h("li", {}, link(u))));
}

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
  const table = document.getElementById("result-table");
  const json = document.getElementById("result-json");
  if (t.error) document.getElementById("task-error").textContent = `Parallel reported an error: ${t.error.message || JSON.stringify(t.error)}`;
  if (t.message) document.getElementById("task-error").textContent = t.message;
  if (!t.output) return;
  json.replaceChildren(jsonTree(t.output));
  const byField = Object.fromEntries((t.output.basis || []).map((b) => [b.field, b]));
  if (t.output.type === "text") {
    table.replaceChildren(markdown(t.output.content), basisNode(byField.output));
  } else {
    table.replaceChildren(h("table", { class: "result" },
      h("thead", {}, h("tr", {}, h("th", {}, "Field"), h("th", {}, "Value"), h("th", {}, "Sources and confidence"))),
      h("tbody", {}, Object.entries(t.output.content || {}).map(([k, v]) =>
        h("tr", {}, h("th", {}, k), h("td", {}, valueNode(v)), h("td", {}, basisNode(byField[k])))))));
  }
  const blob = new Blob([JSON.stringify(t.output, null, 2)], { type: "application/json" });
  const dj = document.getElementById("download-json");
  dj.href = URL.createObjectURL(blob);
  dj.download = `${t.id}.json`;
  const dc = document.getElementById("download-csv");
  dc.href = t.urls.csv;  // built by the server: the same bytes for the browser and for scripts
  dc.download = `${t.id}.csv`;
}

function showRequest(kind) {
  // The server generates the code (real serialisers, proper quoting): shown as text, never run here.
  document.getElementById("request-code").textContent = task.code[kind];
}

function absorb(ev) {
  if (ev.type.startsWith("task_run.progress_msg.")) addMessage(ev);
  else if (ev.type === "task_run.progress_stats" && ev.data) setStats(ev.data);
  else if (ev.type === "task_run.state" && ev.data && ev.data.run) setStatus(ev.data.run.status);
  else if (ev.type === "taskdeck.submitted" && ev.data) document.getElementById("run-id").textContent = ev.data.run_id;
}

async function reload() {
  const fresh = await api("GET", `/task/${task.id}.json`);
  setStatus(fresh.status);
  document.getElementById("completed").textContent = fresh.completed_at || "—";
  renderResult(fresh);
}

document.addEventListener("DOMContentLoaded", () => {
  setStatus(task.status);
  task.events.forEach(absorb);
  if (task.progress) setStats(task.progress);
  renderResult(task);
  showRequest("json");
  for (const kind of ["json", "curl", "python"]) {
    document.getElementById(`req-${kind}`).addEventListener("click", () => showRequest(kind));
  }
  document.getElementById("tab-table").addEventListener("click", () => {
    document.getElementById("result-table").hidden = false; document.getElementById("result-json").hidden = true;
  });
  document.getElementById("tab-json").addEventListener("click", () => {
    document.getElementById("result-table").hidden = true; document.getElementById("result-json").hidden = false;
  });
  document.getElementById("copy-run").addEventListener("click", () =>
    navigator.clipboard && navigator.clipboard.writeText(document.getElementById("run-id").textContent));
  document.getElementById("follow-up").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { processor: task.processor, input: document.getElementById("follow-input").value, follow_up_of: task.id };
    try {
      const created = await api("POST", "/api/tasks", body);
      location.href = `/task/${created.task.id}`;
    } catch (err) {
      document.getElementById("task-error").textContent = err.message;
    }
  });
  const source = new EventSource(`/api/tasks/${task.id}/events?after=${lastSeq}`);
  const onEvent = (e) => {
    const ev = JSON.parse(e.data);
    if (ev.seq <= lastSeq) return;
    lastSeq = ev.seq;
    absorb(ev);
  };
  source.onmessage = onEvent;  // every stored event arrives as a plain message; its type is in the data
  source.addEventListener("end", () => { source.close(); reload(); });
});
