"use strict";
// The batches page: the key's batches (live while any is going), and a new batch from a dropped
// table: read the file's bytes (base64, so BOMs and UTF-16 survive), map it (processor, output
// columns, columns or a template, metadata), preview with the server's own check (columns, rows,
// warnings, the first rows' exact requests, the total), then run it, confirming that total.
// Everything from the file or the server is put in the page as text (h() and textContent).

const data = JSON.parse(document.getElementById("batches-data").textContent);
const $ = (id) => document.getElementById(id);
const DEFAULT_PROCESSOR = "base";
const TYPES = [["string", "text"], ["integer", "integer"], ["number", "number"], ["boolean", "yes / no"]];
const EXAMPLE = { name: "ceo", description: "Name of the current CEO" };
const REFRESH_MS = 3000;

const state = {
  file: null,        // {name, size, base64}
  table: null,       // what the server read: {columns, row_count, format, warnings}
  body: null,        // the body the shown preview answered
  check: null,       // that answer
  busy: false,
};

// -- numbers and words -------------------------------------------------------------------------
function usd(value) {
  if (value === null || value === undefined) return "—";
  return "$" + Number(value).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 4 });
}

function price(value) {
  return value === null || value === undefined ? "—" : `$${Number(value).toFixed(3)}`;
}

function bytes(n) {
  if (n < 1024) return `${n} bytes`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function plural(n, one, many) {
  return `${Number(n).toLocaleString("en-US")} ${n === 1 ? one : many || one + "s"}`;
}

// The body of a check or create is the file as base64 (4 bytes for every 3) plus the spec.
function bodyEstimate(size) {
  return Math.ceil(size / 3) * 4 + 16 * 1024;
}

// -- errors next to their fields ---------------------------------------------------------------
function clearErrors() {
  $("form-error").hidden = true;
  $("form-error").replaceChildren();
  for (const el of document.querySelectorAll(".field-error")) el.textContent = "";
  for (const el of document.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

function topError(...parts) {
  $("form-error").replaceChildren(...parts);
  $("form-error").hidden = false;
}

function fieldError(id, message, control) {
  const el = $(id);
  if (!el) return false;
  el.textContent = message;
  if (control) {
    control.setAttribute("aria-invalid", "true");
    control.focus({ preventScroll: false });
  }
  return true;
}

// Where a problem's loc points in this form; false when it names nothing here.
function placeProblem(loc, msg) {
  const [a, b, c, d] = loc || [];
  if (a === "spec") {
    if (b === "processor") return fieldError("err-processor", msg, $("processor"));
    if (b === "outputs") {
      const row = typeof c === "number" ? outputRows()[c] : null;
      if (!row) return fieldError("err-outputs", msg, null);
      const field = ["name", "type", "description"].includes(d) ? d : null;
      const control = field ? row.querySelector(`[data-field="${field}"]`) : row.querySelector("input");
      row.querySelector(".field-error").textContent = field ? `${field}: ${msg}` : msg;
      control.setAttribute("aria-invalid", "true");
      control.focus();
      return true;
    }
    if (b === "columns") return fieldError("err-columns", msg, $("columns").querySelector("input"));
    if (b === "template") return fieldError("err-template", msg, $("template"));
    if (b === "metadata") return fieldError("err-metadata", msg, $("metadata"));
    return false;
  }
  if (["content", "content_base64", "rows", "name", "format"].includes(a)) {
    $("file-error").textContent = `The table: ${msg}`;
    return true;
  }
  if (a === "confirm_cost_usd") return fieldError("err-confirm", `${msg}.`, null);
  return false;
}

function showApiError(err) {
  if (err.status === 401) {
    topError(document.createTextNode("Your session ended. "),
      h("a", { href: "/?next=" + encodeURIComponent("/batches") }, "Enter your key again"),
      document.createTextNode(" (this form is kept if you come back with the browser's Back button)."));
    return;
  }
  if (err.status === 413) {
    topError(document.createTextNode(
      `This table is too large to send: this server takes up to ${bytes(data.limits.max_upload_bytes)} per request ` +
      "(TASKDECK_MAX_UPLOAD_BYTES). Split it into several batches."));
    return;
  }
  let placed = false;
  for (const p of err.problems || []) placed = placeProblem(p.loc, p.msg) || placed;
  if (!placed) topError(document.createTextNode(err.message));
}

class LocalProblem extends Error {
  constructor(loc, message) { super(message); this.loc = loc; }
}

// -- the file ----------------------------------------------------------------------------------
function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => {
      const url = String(reader.result);
      resolve(url.slice(url.indexOf(",") + 1));  // data:<type>;base64,<bytes>
    };
    reader.onerror = () => reject(reader.error || new Error("The file could not be read."));
    reader.readAsDataURL(file);
  });
}

async function takeFile(file) {
  clearErrors();
  $("file-error").textContent = "";
  $("file-warnings").replaceChildren();
  hidePreview();
  if (!file) return;
  $("file-line").hidden = false;
  $("file-info").replaceChildren(h("strong", {}, file.name), ` · ${bytes(file.size)}`);
  if (file.size === 0) {
    $("file-error").textContent = "This file is empty: choose a table with a header and at least one row.";
    return;
  }
  if (bodyEstimate(file.size) > data.limits.max_upload_bytes) {
    $("file-error").textContent =
      `This file is ${bytes(file.size)}; this server takes tables up to about ` +
      `${bytes(Math.floor((data.limits.max_upload_bytes - 16 * 1024) * 3 / 4))} (TASKDECK_MAX_UPLOAD_BYTES). ` +
      "Split it into several batches.";
    return;
  }
  $("file-info").append(" · reading…");
  let base64;
  try {
    base64 = await readBase64(file);
  } catch (e) {
    $("file-error").textContent = `The browser could not read this file: ${e.message}`;
    return;
  }
  state.file = { name: file.name, size: file.size, base64 };
  await readTable();
}

// The server reads the table (columns, rows, warnings) with a placeholder spec: a check creates nothing.
async function readTable() {
  const file = state.file;
  if (!file) return;
  state.table = null;
  $("file-error").textContent = "";
  $("file-warnings").replaceChildren();
  $("file-info").replaceChildren(h("strong", {}, file.name), ` · ${bytes(file.size)} · reading…`);
  const body = {
    name: file.name, content_base64: file.base64, format: $("format").value,
    spec: { processor: "lite", outputs: [{ name: "x", type: "string", description: "x" }] },
  };
  let out;
  try {
    out = await api("POST", "/api/batches/check", body);
  } catch (err) {
    $("file-info").replaceChildren(h("strong", {}, file.name), ` · ${bytes(file.size)}`);
    if (err.status === 401 || err.status === 413) showApiError(err);
    else $("file-error").textContent = (err.problems && err.problems[0] ? err.problems[0].msg : err.message);
    return;
  }
  if (state.file !== file) return;  // another file was chosen meanwhile
  const previous = state.table;
  state.table = { columns: out.columns, row_count: out.row_count, format: out.format, warnings: out.warnings };
  $("file-info").replaceChildren(h("strong", {}, file.name), ` · ${bytes(file.size)} · ` +
    `${plural(out.row_count, "row")} × ${plural(out.columns.length, "column")} (${out.format.toUpperCase()})`);
  $("file-warnings").replaceChildren(...out.warnings.map((w) => h("li", {}, w)));
  renderColumns(previous && previous.columns.join("\n") === out.columns.join("\n"));
  $("spec-form").hidden = false;
}

// -- the mapping form --------------------------------------------------------------------------
function outputRows() {
  return [...$("outputs").querySelectorAll(".output-row")];
}

function addOutput(value, example) {
  const n = outputRows().length + 1;
  const name = h("input", { "data-field": "name", "aria-label": `Output ${n}: name`, placeholder: example ? EXAMPLE.name : "column_name",
    spellcheck: "false", autocapitalize: "off" });
  const type = h("select", { "data-field": "type", "aria-label": `Output ${n}: type` },
    TYPES.map(([v, label]) => h("option", { value: v }, label)));
  const description = h("input", { "data-field": "description", "aria-label": `Output ${n}: description`,
    placeholder: example ? EXAMPLE.description : "What this column should hold" });
  const remove = h("button", { type: "button", class: "ghost small remove", "aria-label": `Remove output ${n}`, title: "Remove this column" }, "✕");
  const row = h("div", { class: "output-row" }, name, type, description, remove, h("p", { class: "error field-error out-error" }));
  if (value) { name.value = value.name || ""; type.value = value.type || "string"; description.value = value.description || ""; }
  remove.addEventListener("click", () => {
    row.remove();
    relabelOutputs();
    changed();
  });
  $("outputs").append(row);
  relabelOutputs();
  return row;
}

function relabelOutputs() {
  const rows = outputRows();
  rows.forEach((row, i) => {
    row.querySelector('[data-field="name"]').setAttribute("aria-label", `Output ${i + 1}: name`);
    row.querySelector('[data-field="type"]').setAttribute("aria-label", `Output ${i + 1}: type`);
    row.querySelector('[data-field="description"]').setAttribute("aria-label", `Output ${i + 1}: description`);
    row.querySelector(".remove").setAttribute("aria-label", `Remove output ${i + 1}`);
    row.querySelector(".remove").disabled = rows.length === 1;  // at least one output column
  });
}

function renderColumns(keep) {
  const chosen = new Set(keep ? [...$("columns").querySelectorAll("input:checked")].map((b) => b.value) : []);
  const columns = state.table ? state.table.columns : [];
  $("columns").replaceChildren(...columns.map((name) => {
    const box = h("input", { type: "checkbox", value: name });
    box.checked = keep ? chosen.has(name) : true;
    return h("label", { class: "check column" }, box, h("span", {}, name));
  }));
  $("template-columns").replaceChildren(...columns.map((name) =>
    h("button", { type: "button", class: "ghost small insert", "data-column": name, title: `Insert {${name}}` }, `{${name}}`)));
}

function inputMode() {
  return document.querySelector('input[name="input_mode"]:checked').value;
}

function syncMode() {
  const template = inputMode() === "template";
  $("columns-box").hidden = template;
  $("template-box").hidden = !template;
}

function insertColumn(name) {
  const area = $("template");
  const text = `{${name}}`;
  const start = area.selectionStart ?? area.value.length;
  const end = area.selectionEnd ?? area.value.length;
  area.setRangeText(text, start, end, "end");
  area.focus();
  changed();
}

// The spec as the API takes it, from the form; LocalProblem for what cannot be sent at all.
function buildSpec() {
  const spec = { processor: $("processor").value };
  spec.outputs = outputRows().map((row) => ({
    name: row.querySelector('[data-field="name"]').value.trim(),
    type: row.querySelector('[data-field="type"]').value,
    description: row.querySelector('[data-field="description"]').value.trim(),
  }));
  if (!spec.outputs.length) throw new LocalProblem(["spec", "outputs"], "add at least one output column");
  if (inputMode() === "template") {
    spec.template = $("template").value;
    if (!spec.template.trim()) throw new LocalProblem(["spec", "template"], "write the question, with {column} where a row's value goes");
  } else {
    const boxes = [...$("columns").querySelectorAll("input")];
    const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
    if (!chosen.length) throw new LocalProblem(["spec", "columns"], "choose at least one column to send");
    if (chosen.length < boxes.length) spec.columns = chosen;  // all (the default) is sent as no list
  }
  const meta = $("metadata").value.trim();
  if (meta) {
    let parsed;
    try { parsed = JSON.parse(meta); } catch (e) {
      throw new LocalProblem(["spec", "metadata"], `is not valid JSON (${e.message})`);
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new LocalProblem(["spec", "metadata"], 'must be a JSON object, like {"project": "leads"}');
    }
    spec.metadata = parsed;
  }
  return spec;
}

function buildBody() {
  return { name: state.file.name, content_base64: state.file.base64, format: $("format").value, spec: buildSpec() };
}

// Anything changed after a preview makes it stale: it no longer says what a run would send or cost.
function changed() {
  if (!$("preview").hidden && state.check) {
    $("stale-note").hidden = false;
    $("run-button").hidden = true;
  }
}

function hidePreview() {
  state.body = null;
  state.check = null;
  $("preview").hidden = true;
  $("file-warnings").hidden = false;
}

async function preview() {
  clearErrors();
  if (!state.file || !state.table) { $("file-error").textContent = "Choose a table first."; return; }
  let body;
  try { body = buildBody(); } catch (err) {
    if (err instanceof LocalProblem) { if (!placeProblem(err.loc, err.message)) topError(document.createTextNode(err.message)); return; }
    throw err;
  }
  $("preview-button").disabled = true;
  $("preview-note").textContent = "Checking every row…";
  try {
    const out = await api("POST", "/api/batches/check", body);
    state.body = body;
    state.check = out;
    renderPreview(out);
    $("preview").scrollIntoView({ block: "start", behavior: "smooth" });
  } catch (err) {
    showApiError(err);
  } finally {
    $("preview-button").disabled = false;
    $("preview-note").textContent = "";
  }
}

function sampleBlock(sample, open) {
  const values = Object.values(sample.values || {}).map((v) => String(v ?? "")).join(" · ");
  const pre = h("pre", { class: "request" }, JSON.stringify(sample.request, null, 2));
  const details = h("details", { class: "sample" },
    h("summary", {}, h("strong", {}, `Row ${sample.index + 1}`), " ", h("span", { class: "muted" }, values)), pre);
  details.open = open;
  return details;
}

function renderPreview(out) {
  $("stale-note").hidden = true;
  $("pv-table").textContent = `${out.name} (${String(out.format).toUpperCase()})`;
  $("pv-rows").textContent = Number(out.row_count).toLocaleString("en-US");
  const sent = new Set(out.spec.columns || out.columns);
  $("pv-columns").replaceChildren(...out.columns.map((c) =>
    h("span", { class: `column-chip${out.spec.template || sent.has(c) ? "" : " unsent"}`, title: sent.has(c) ? "sent" : "not sent" }, c)));
  $("pv-warnings").replaceChildren(...out.warnings.map((w) => h("li", {}, w)));
  $("pv-samples").replaceChildren(...out.sample.map((s, i) => sampleBlock(s, i === 0)));
  const more = out.row_count - out.sample.length;
  if (more > 0) $("pv-samples").append(h("p", { class: "muted small" }, `…and ${plural(more, "more row")}, built the same way.`));
  $("pv-cost").replaceChildren(
    h("span", { class: "muted" }, `${price(out.usd_per_row)} per row (${out.spec.processor}) × ${plural(out.row_count, "row")} = `),
    h("strong", { class: "amount", id: "pv-total" }, usd(out.cost_usd)), h("span", { class: "muted" }, " in all"));
  const again = out.resumes;
  $("pv-resumes").hidden = !again;
  if (again) {
    $("pv-resumes").replaceChildren(
      h("strong", {}, "You ran this exact table and spec before: opening it again costs nothing. "),
      h("a", { href: again.url, id: "pv-resumes-link" }, "See that batch"),
      document.createTextNode(". Running it again opens that batch; no row is paid twice."));
  }
  $("run-button").hidden = false;
  $("run-button").disabled = false;
  $("run-button").textContent = again
    ? `Open it again: ${plural(out.row_count, "row")}, ${usd(again.cost_usd)} to pay`
    : `Run ${plural(out.row_count, "row")} for ${usd(out.cost_usd)}`;
  $("preview").hidden = false;
  $("file-warnings").hidden = true;  // said again in the preview
}

async function run() {
  if (!state.body || !state.check || state.busy) return;
  clearErrors();
  state.busy = true;
  $("run-button").disabled = true;
  $("run-note").textContent = "Storing the batch…";
  try {
    const out = await api("POST", "/api/batches", { ...state.body, confirm_cost_usd: state.check.cost_usd });
    $("run-note").textContent = out.resumed ? "Opening the earlier batch…" : "Started. Opening it…";
    location.assign(out.batch.urls.page);
  } catch (err) {
    $("run-note").textContent = "";
    $("run-button").disabled = false;
    showApiError(err);
  } finally {
    state.busy = false;
  }
}

// -- the list ----------------------------------------------------------------------------------
function progressBar(b) {
  const done = h("span", { class: "bar-done" });
  const failed = h("span", { class: "bar-failed" });
  const total = b.row_count || 1;
  done.style.width = `${(100 * b.done) / total}%`;
  failed.style.width = `${(100 * b.failed) / total}%`;
  return h("div", {
    class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(b.percent),
    "aria-label": `${b.name}: ${b.percent} % of rows ended`,
  }, done, failed);
}

function batchItem(b) {
  const running = b.status !== "completed";
  const facts = [
    h("span", { class: "done" }, `${b.done.toLocaleString("en-US")} done`),
    b.failed ? h("span", { class: "failed" }, `${b.failed.toLocaleString("en-US")} failed`) : null,
    running && (b.in_progress || b.waiting)
      ? h("span", {}, `${(b.in_progress + b.waiting).toLocaleString("en-US")} to go`) : null,
    h("span", {}, `of ${plural(b.row_count, "row")}`),
  ].filter(Boolean);
  const rate = [
    h("span", {}, `${b.rows_per_minute} rows/min`),
    running && b.eta_seconds !== null ? h("span", {}, `about ${seconds(b.eta_seconds)} left`) : null,
    h("span", { title: `Every row: ${usd(b.cost_usd_all_rows)}` }, `${usd(b.cost_usd)} so far`),
    h("span", {}, b.processor),
    h("span", { class: "age", "data-at": b.created_at, title: b.created_at ? new Date(b.created_at).toLocaleString() : "" },
      `created ${ago(b.created_at)} ago`),
  ].filter(Boolean);
  const status = b.status === "completed" && b.failed ? "completed with failures" : b.status;
  return h("li", { class: "batch", "data-id": b.id, "data-status": b.status },
    h("div", { class: "batch-head" },
      h("a", { class: "batch-name", href: b.urls.page, title: b.name }, b.name),
      h("span", { class: `badge s-${b.status === "completed" && b.failed ? "failed" : b.status}` }, status)),
    h("div", { class: "batch-progress" }, progressBar(b), h("span", { class: "pct" }, `${b.percent} %`)),
    h("p", { class: "batch-facts" }, joined(facts)),
    h("p", { class: "batch-facts muted" }, joined(rate)));
}

function joined(parts) {
  const out = [];
  parts.forEach((p, i) => { if (i) out.push(" · "); out.push(p); });
  return out;
}

function renderList() {
  const list = data.batches || [];
  $("batches").replaceChildren(...list.map(batchItem));
  $("empty").hidden = list.length > 0;
  $("list-count").textContent = list.length ? `${list.length} in all` : "";
  const live = list.filter((b) => b.status !== "completed").length;
  $("list-note").textContent = live ? `${plural(live, "batch", "batches")} going: updated every few seconds.` : "";
}

let refreshTimer = null;
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  if ((data.batches || []).some((b) => b.status !== "completed")) refreshTimer = setTimeout(refresh, REFRESH_MS);
}

async function refresh() {
  if (document.hidden) { scheduleRefresh(); return; }
  try {
    const fresh = await api("GET", "/batches.json");
    data.batches = fresh.batches;
    renderList();
  } catch (e) {
    if (e.status === 401) { $("list-note").textContent = "Signed out: reload the page to sign in again."; return; }
  }
  scheduleRefresh();
}

// -- the drop zone -----------------------------------------------------------------------------
function wireDrop() {
  const zone = $("drop");
  let depth = 0;
  const on = (e) => { e.preventDefault(); if (e.dataTransfer) e.dataTransfer.dropEffect = "copy"; };
  zone.addEventListener("dragenter", (e) => { on(e); depth += 1; zone.classList.add("over"); });
  zone.addEventListener("dragover", on);
  zone.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) zone.classList.remove("over"); });
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    zone.classList.remove("over");
    const files = e.dataTransfer ? e.dataTransfer.files : null;
    if (files && files.length > 1) $("file-error").textContent = "One table at a time: the first file is read.";
    if (files && files.length) takeFile(files[0]);
  });
  // A file dropped next to the zone must not make the browser leave the page (and the form) for it.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (e) => { if (!zone.contains(e.target)) e.preventDefault(); });
  }
  $("choose-file").addEventListener("click", () => $("file").click());
  zone.addEventListener("click", (e) => { if (e.target === zone) $("file").click(); });
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) takeFile(file);
    $("file").value = "";  // choosing the same file again reads it again
  });
}

// -- wiring ------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  const limit = data.limits || {};
  $("drop-hint").textContent = `CSV or TSV (any delimiter, with a header row), JSON array or JSON Lines; ` +
    `up to ${Number(limit.max_batch_rows).toLocaleString("en-US")} rows. Nothing is paid before you confirm the total.`;
  $("processor").replaceChildren(...data.processors.map((p) =>
    h("option", { value: p.name }, `${p.name} — ${price(p.usd_per_run)} per row · ${p.latency}`)));
  $("processor").value = DEFAULT_PROCESSOR;
  addOutput(null, true);
  syncMode();
  wireDrop();

  $("add-output").addEventListener("click", () => {
    const row = addOutput(null, false);
    row.querySelector("input").focus();
    changed();
  });
  $("columns-all").addEventListener("click", () => {
    for (const b of $("columns").querySelectorAll("input")) b.checked = true;
    changed();
  });
  $("columns-none").addEventListener("click", () => {
    for (const b of $("columns").querySelectorAll("input")) b.checked = false;
    changed();
  });
  $("template-columns").addEventListener("click", (e) => {
    const button = e.target.closest("button.insert");
    if (button) insertColumn(button.dataset.column);
  });
  $("format").addEventListener("change", () => { hidePreview(); readTable(); });
  for (const type of ["input", "change"]) {
    $("spec-form").addEventListener(type, (e) => {
      if (e.target.name === "input_mode") syncMode();
      if (e.target.getAttribute("aria-invalid")) {
        e.target.removeAttribute("aria-invalid");
        const row = e.target.closest(".output-row");
        if (row) row.querySelector(".field-error").textContent = "";
      }
      changed();
    });
  }
  $("spec-form").addEventListener("submit", (e) => { e.preventDefault(); preview(); });
  $("run-button").addEventListener("click", run);

  renderList();
  scheduleRefresh();
  setInterval(() => {
    for (const el of document.querySelectorAll("#batches .age")) el.textContent = `created ${ago(el.dataset.at)} ago`;
  }, 15000);
  // Back from a batch's page: the list may be old (the form is kept as it was).
  window.addEventListener("pageshow", (e) => {
    syncMode();
    if (e.persisted) refresh();
  });
});
