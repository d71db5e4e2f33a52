"use strict";
// The live batch grid: the batch's header (progress, rate, ETA, cost, exports, retry) and its rows as a
// spreadsheet that fills in while the rows run. Rows load in pages of 2,000; only the rows on screen
// (and a margin) are in the DOM, so 10,000 rows scroll as smoothly as ten. Filter, search and sort
// work on the rows loaded. Every upstream string becomes text (textContent via h()), and a link
// keeps only an absolute http(s) URL: the emulator's `xss` runs must execute nothing.

const $ = (id) => document.getElementById(id);
const initial = JSON.parse($("batch-data").textContent);
let batch = initial.batch;

const ROW_H = 36;        // px: every grid row has this height (batch.css .gbody .grow)
const MARGIN = 12;       // rows rendered above and below the visible ones
const PAGE = 2000;       // rows per request
const POLL_MS = 1500;    // while the batch runs
const FAILED = new Set(["failed", "cancelled", "rejected", "submit_unknown"]);
const ENDED = new Set([...FAILED, "completed"]);
// Sorting by status puts what needs attention first.
const STATUS_RANK = { failed: 0, rejected: 0, cancelled: 0, submit_unknown: 0, running: 1, queued: 1,
  submitting: 2, pending: 2, completed: 3 };

const columns = batch.columns || [];
const outputs = batch.outputs && batch.outputs.length ? batch.outputs : ["output"];
const rows = [];                    // by row index
let loaded = 0;                     // rows held
let view = [];                      // row indices shown, in order
let filter = "all";
let query = "";
let sort = { key: "#", dir: 1 };    // "#" (row number), "status", "in:<column>" or "out:<field>"
let since = null;                   // the `now` of the poll the next one asks what changed since
let polling = false;
let allLoaded = false;
const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

// -- small formatting helpers ------------------------------------------------------------------------
const num = (n) => Number(n || 0).toLocaleString("en-US");

function usd(v) {
  if (v === null || v === undefined) return "—";
  const n = Number(v);
  return n >= 100 ? `$${n.toLocaleString("en-US", { maximumFractionDigits: 2, minimumFractionDigits: 2 })}`
    : `$${n.toFixed(n >= 1 ? 2 : 3)}`;
}

function text(v) {
  if (v === null || v === undefined) return "";
  return typeof v === "string" ? v : JSON.stringify(v);
}

// An output field's value in a row: a JSON result's field, or a text (or auto) result in its one column.
function outValue(r, field) {
  const o = r.output;
  if (o === null || o === undefined) return undefined;
  if (typeof o !== "object" || Array.isArray(o)) return field === outputs[0] ? o : undefined;
  if (Object.prototype.hasOwnProperty.call(o, field)) return o[field];
  return outputs.length === 1 ? o : undefined;
}

function basisOf(r, field) {
  const b = (r.basis || {})[field];
  if (b) return b;
  return outputs.length === 1 ? Object.values(r.basis || {})[0] || null : null;
}

function level(conf) {
  const c = String(conf || "").toLowerCase();
  return c === "high" || c === "medium" || c === "low" ? c : null;
}

function group(status) {
  if (status === "completed") return "completed";
  return FAILED.has(status) ? "failed" : "running";
}

// -- the header ----------------------------------------------------------------------------------------
function showSummary(b) {
  batch = b;
  const status = $("batch-status");
  status.textContent = b.status;
  status.className = `badge s-${b.status}`;
  $("batch-about").textContent = `${b.processor || "?"} · ${num(b.row_count)} rows · ${usd(b.usd_per_row)} a row`;
  const total = Math.max(1, b.row_count);
  $("seg-done").style.width = `${(100 * b.done) / total}%`;
  $("seg-failed").style.width = `${(100 * b.failed) / total}%`;
  $("seg-running").style.width = `${(100 * b.running) / total}%`;
  $("seg-queued").style.width = `${(100 * b.queued) / total}%`;
  $("bar").setAttribute("aria-valuenow", String(b.percent));
  $("bar").setAttribute("aria-valuetext", `${b.percent}% of rows ended: ${b.done} done, ${b.failed} failed`);
  $("n-done").textContent = num(b.done);
  $("n-failed").textContent = num(b.failed);
  $("n-running").textContent = num(b.running);
  $("n-queued").textContent = num(b.queued);
  $("n-waiting").textContent = num(b.waiting);
  $("percent").textContent = `${b.percent}%`;
  const done = b.status === "completed";
  $("rate").textContent = b.rows_per_minute ? `${num(b.rows_per_minute)} rows/min` : "—";
  $("eta-label").textContent = done ? "Took" : "Time left";
  if (done) {
    const took = b.completed_at && b.created_at ? (Date.parse(b.completed_at) - Date.parse(b.created_at)) / 1000 : null;
    $("eta").textContent = seconds(took);
  } else {
    $("eta").textContent = b.eta_seconds === null || b.eta_seconds === undefined ? "—" : `about ${seconds(b.eta_seconds)}`;
  }
  $("cost").textContent = usd(b.cost_usd);
  $("cost-all").textContent = usd(b.cost_usd_all_rows);
  const created = $("created");
  if (created.dataset.iso !== b.created_at) { created.replaceChildren(localTime(b.created_at)); created.dataset.iso = b.created_at || ""; }
  const completed = $("completed");
  if (completed.dataset.iso !== (b.completed_at || "")) {
    completed.replaceChildren(b.completed_at ? localTime(b.completed_at) : "—");
    completed.dataset.iso = b.completed_at || "";
  }
  const retry = $("retry");
  retry.hidden = !(done && b.failed > 0);
  retry.textContent = `Retry failed rows (${num(b.failed)})`;
}

// -- rows: loading, live polling, merging --------------------------------------------------------------
function merge(list) {
  let changed = false;
  for (const r of list) {
    if (typeof r.index !== "number" || r.index < 0) continue;
    if (!rows[r.index]) loaded += 1;
    rows[r.index] = r;
    changed = true;
  }
  return changed;
}

async function fetchRows(params) {
  const q = new URLSearchParams({ limit: String(PAGE), ...params });
  return api("GET", `${batch.urls.rows}?${q}`);
}

// Rows added upstream or ended since the last poll, every page of them.
async function pollRows() {
  let after = -1;
  let first = null;
  let changed = false;
  for (;;) {
    const page = await fetchRows({ after: String(after), changed_since: String(since) });
    if (first === null) first = page.now;
    changed = merge(page.rows) || changed;
    if (page.next_after === null || page.next_after === undefined || !page.rows.length) break;
    after = page.next_after;
  }
  since = first;
  if (changed) refresh();
}

function setLive(message) {
  $("live").textContent = message;
}

async function tick() {
  try {
    const answer = await api("GET", batch.urls.self);
    showSummary(answer.batch);
    await pollRows();  // after the summary: once it says completed, this poll holds every last row
    if (answer.batch.status === "completed") {
      polling = false;
      setLive("");
      $("retry-note").textContent = "";
      return;
    }
    setLive("● live");
  } catch (err) {
    setLive(err.status === 401 ? "Signed out: sign in again to follow this batch." : "Connection lost; trying again…");
    if (err.status === 401 || err.status === 404) { polling = false; return; }
  }
  setTimeout(tick, document.hidden ? POLL_MS * 4 : POLL_MS);
}

function startPolling() {
  if (polling) return;
  polling = true;
  setLive("● live");
  setTimeout(tick, 0);  // at once: the header the page came with may be behind the rows just read
}

// -- filter, search, sort ------------------------------------------------------------------------------
function haystack(r) {
  if (r._hay === undefined) {
    const parts = [];
    for (const c of columns) parts.push(text((r.values || {})[c]));
    for (const f of outputs) parts.push(text(outValue(r, f)));
    if (r.error) parts.push(r.error);
    Object.defineProperty(r, "_hay", { value: parts.join("\u0001").toLowerCase(), enumerable: false });
  }
  return r._hay;
}

function sortValue(r, key) {
  if (key === "status") return STATUS_RANK[r.status] ?? 1;
  if (key.startsWith("in:")) return (r.values || {})[key.slice(3)];
  if (key.startsWith("out:")) return FAILED.has(r.status) ? undefined : outValue(r, key.slice(4));
  return r.index;
}

function compareRows(a, b) {
  const dir = sort.dir;
  const x = sortValue(a, sort.key);
  const y = sortValue(b, sort.key);
  const xe = x === null || x === undefined || x === "";
  const ye = y === null || y === undefined || y === "";
  if (xe || ye) return xe && ye ? a.index - b.index : xe ? 1 : -1;  // empty cells last either way
  let c;
  if (typeof x === "number" && typeof y === "number") c = x - y;
  else c = collator.compare(text(x), text(y));
  return c ? c * dir : a.index - b.index;
}

function counts() {
  const n = { all: 0, failed: 0, completed: 0, running: 0 };
  for (const r of rows) {
    if (!r) continue;
    n.all += 1;
    n[group(r.status)] += 1;
  }
  for (const k of Object.keys(n)) $(`c-${k}`).textContent = num(n[k]);
}

function computeView() {
  const q = query.trim().toLowerCase();
  const out = [];
  for (const r of rows) {
    if (!r) continue;
    if (filter !== "all" && group(r.status) !== filter) continue;
    if (q && !haystack(r).includes(q)) continue;
    out.push(r);
  }
  if (sort.key !== "#") out.sort(compareRows);
  else if (sort.dir < 0) out.reverse();
  view = out.map((r) => r.index);
}

function showCount() {
  const shown = view.length;
  let line = shown === loaded ? `${num(loaded)} rows` : `Showing ${num(shown)} of ${num(loaded)} rows`;
  if (!allLoaded) line += ` · loading… ${num(loaded)} of ${num(batch.row_count)}`;
  $("grid-count").textContent = line;
  $("grid-empty").hidden = shown > 0 || !allLoaded;
}

// Everything that depends on the rows changed: counts, the view, the grid, an open panel.
function refresh() {
  counts();
  computeView();
  showCount();
  $("grid-body").style.height = `${view.length * ROW_H}px`;
  $("grid").setAttribute("aria-rowcount", String(view.length + 1));
  lastRange = "";
  render();
  if (panel.index !== null && rows[panel.index] !== panel.row) renderPanel();
}

// -- the grid --------------------------------------------------------------------------------------------
const scroller = $("grid-scroll");
const win = $("grid-win");
let cache = new Map();  // row index -> { row, el } of the rows in the DOM
let lastRange = "";
let frame = 0;

function widthFor(label, samples, min, max) {
  let chars = String(label).length + 3;  // the header is bold and holds the sort arrow
  for (const s of samples) chars = Math.max(chars, Math.min(String(s).length, 60));
  return Math.round(Math.min(max, Math.max(min, chars * 8.2 + 24)));
}

// Column widths are fixed once (from the names and the first rows), so the grid never jumps as rows arrive.
function layoutColumns() {
  const sample = rows.slice(0, 200).filter(Boolean);
  const widths = ["var(--num-w)", "var(--st-w)"];  // batch.css: narrower on phones
  for (const c of columns) widths.push(`${widthFor(c, sample.map((r) => text((r.values || {})[c])), 96, 280)}px`);
  outputs.forEach((f, i) => {
    const w = widthFor(f, sample.map((r) => text(outValue(r, f))), 180, 320) + 40;
    widths.push(i === outputs.length - 1 ? `minmax(${w}px, 1fr)` : `${w}px`);
  });
  $("grid").style.setProperty("--cols", widths.join(" "));
}

function headerCell(key, label, extra) {
  const active = sort.key === key;
  const dirWord = sort.dir > 0 ? "ascending" : "descending";
  const mark = active ? (sort.dir > 0 ? "▲" : "▼") : "";
  return h("div", { class: `gh ${extra || ""}`, role: "columnheader", "aria-sort": active ? dirWord : "none" },
    h("button", { type: "button", class: "sort", "data-sort": key, title: `Sort by ${label}` },
      h("span", { class: "gh-label" }, label), h("span", { class: "arrow", "aria-hidden": "true" }, mark)));
}

function renderHead() {
  const cells = [headerCell("#", "#", "num"), headerCell("status", "Status", "st")];
  for (const c of columns) cells.push(headerCell(`in:${c}`, c, "in"));
  for (const f of outputs) cells.push(headerCell(`out:${f}`, f, "out"));
  $("grid-head").replaceChildren(...cells);
}

function cellFor(r, field) {
  const value = outValue(r, field);
  const b = basisOf(r, field) || {};
  const conf = level(b.confidence);
  const empty = value === null || value === undefined || value === "";
  const shown = empty ? "—" : text(value);
  const label = `Row ${r.index + 1}, ${field}: ${empty ? "empty" : shown}. ${conf ? `Confidence ${conf}.` : "No confidence given."}`;
  return h("div", { class: "gc outc", role: "cell" },
    h("button", { type: "button", class: `out cf-${conf || "none"}${empty ? " empty" : ""}${isOpen(r.index, field) ? " sel" : ""}`, "data-index": r.index,
      "data-field": field, "aria-label": label, title: shown },
    h("span", { class: "v" }, shown),
    conf ? h("span", { class: "cf", "aria-hidden": "true" }, conf === "medium" ? "med" : conf) : ""));
}

// A row learns its run's status only when the run ends (the header splits queued from running with
// Parallel's group counts), so a row still at Parallel reads "in progress", one not yet sent "waiting".
function rowLabel(st) {
  if (st === "queued" || st === "running") return "in progress";
  if (st === "pending" || st === "submitting") return "waiting";
  return st.replace("_", " ");
}

function rowEl(r, position) {
  const st = r.status || "pending";
  const cells = [
    h("div", { class: "gc num", role: "cell" }, String(r.index + 1)),
    h("div", { class: "gc st", role: "cell" }, h("span", { class: `badge s-${st}` }, rowLabel(st))),
  ];
  for (const c of columns) {
    const v = text((r.values || {})[c]);
    cells.push(h("div", { class: "gc in", role: "cell", title: v }, v));
  }
  if (FAILED.has(st)) {
    const message = r.error || `This row ended ${st.replace("_", " ")}.`;
    const cell = h("div", { class: "gc errc", role: "cell" },
      h("button", { type: "button", class: `out err${isOpen(r.index, "") ? " sel" : ""}`, "data-index": r.index, "data-field": "",
        "aria-label": `Row ${r.index + 1} failed: ${message}`, title: message },
      h("span", { class: "v" }, `⚠ ${message}`)));
    cell.style.gridColumn = `span ${outputs.length}`;
    cells.push(cell);
  } else if (ENDED.has(st)) {
    for (const f of outputs) cells.push(cellFor(r, f));
  } else {
    const word = st === "pending" || st === "submitting" ? "waiting" : "running…";
    for (const f of outputs) cells.push(h("div", { class: `gc pend ${st}`, role: "cell" }, h("span", { class: "v" }, word)));
  }
  return h("div", { class: `grow g-${group(st)}`, role: "row", "aria-rowindex": String(position + 2), "data-index": r.index }, cells);
}

function render() {
  frame = 0;
  const bodyTop = $("grid-body").offsetTop;
  const top = Math.max(0, scroller.scrollTop - bodyTop);
  const height = scroller.clientHeight || 600;
  const first = Math.max(0, Math.floor(top / ROW_H) - MARGIN);
  const last = Math.min(view.length, Math.ceil((top + height) / ROW_H) + MARGIN);
  const range = `${first}:${last}`;
  if (range === lastRange) return;
  lastRange = range;
  const focused = document.activeElement && win.contains(document.activeElement)
    ? { index: document.activeElement.dataset.index, field: document.activeElement.dataset.field } : null;
  const keep = new Map();
  const els = [];
  for (let p = first; p < last; p += 1) {
    const r = rows[view[p]];
    let entry = cache.get(r.index);
    if (!entry || entry.row !== r || entry.position !== p) entry = { row: r, position: p, el: rowEl(r, p) };
    keep.set(r.index, entry);
    els.push(entry.el);
  }
  cache = keep;
  win.style.transform = `translateY(${first * ROW_H}px)`;
  win.replaceChildren(...els);
  if (focused && !win.contains(document.activeElement)) {
    const again = win.querySelector(`button[data-index="${CSS.escape(focused.index || "")}"][data-field="${CSS.escape(focused.field || "")}"]`);
    if (again) again.focus({ preventScroll: true });
  }
}

function scheduleRender() {
  if (!frame) frame = requestAnimationFrame(render);
}

scroller.addEventListener("scroll", scheduleRender, { passive: true });
new ResizeObserver(() => { lastRange = ""; scheduleRender(); }).observe(scroller);

$("grid-head").addEventListener("click", (ev) => {
  const button = ev.target.closest("button[data-sort]");
  if (!button) return;
  const key = button.dataset.sort;
  sort = sort.key === key ? { key, dir: -sort.dir } : { key, dir: 1 };
  scroller.scrollTop = 0;
  renderHead();
  refresh();
});

win.addEventListener("click", (ev) => {
  const button = ev.target.closest("button.out");
  if (!button) return;
  openPanel(Number(button.dataset.index), button.dataset.field || null, button);
});

for (const chip of document.querySelectorAll(".chip[data-filter]")) {
  chip.addEventListener("click", () => {
    filter = chip.dataset.filter;
    for (const c of document.querySelectorAll(".chip[data-filter]")) {
      c.classList.toggle("on", c === chip);
      c.setAttribute("aria-pressed", String(c === chip));
    }
    scroller.scrollTop = 0;
    refresh();
  });
}

let searchTimer = null;
$("grid-search").addEventListener("input", (ev) => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => { query = ev.target.value; scroller.scrollTop = 0; refresh(); }, 120);
});

// -- the details panel -----------------------------------------------------------------------------------
const panel = { index: null, field: null, row: null, opener: null };

function valueNode(value) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "empty");
  if (Array.isArray(value)) return h("ol", {}, value.map((v) => h("li", {}, valueNode(v))));
  if (typeof value === "object") {
    return h("dl", { class: "pobj" }, Object.entries(value).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, valueNode(v))]));
  }
  return String(value);
}

// Only an absolute http(s) address becomes a link; anything else (javascript:, data:, relative) stays text.
function webUrl(url) {
  return typeof url === "string" && /^https?:\/\//i.test(url.trim()) ? safeUrl(url.trim()) : null;
}

function citationItem(c) {
  const href = webUrl(c.url);
  const title = text(c.title) || text(c.url) || "Untitled source";
  const head = href ? h("a", { href, rel: "noopener noreferrer", target: "_blank", class: "ctitle" }, title)
    : h("span", { class: "ctitle" }, title);
  return h("li", {},
    head,
    h("div", { class: "curl" }, c.url ? text(c.url) : "no address", href ? "" : h("span", { class: "muted" }, " (not a web address: not linked)")),
    (c.excerpts || []).map((e) => h("blockquote", {}, text(e))));
}

function basisNodes(b) {
  const conf = level(b.confidence);
  const out = [h("p", { class: "pconf" }, "Confidence: ",
    conf ? h("span", { class: `cfbadge cf-${conf}` }, conf) : h("span", { class: "muted" }, "not given"))];
  out.push(h("h3", {}, "Reasoning"), b.reasoning ? h("p", { class: "preason" }, text(b.reasoning)) : h("p", { class: "muted" }, "None given."));
  const cites = b.citations || [];
  out.push(h("h3", {}, `Sources (${cites.length})`),
    cites.length ? h("ol", { class: "pcites" }, cites.map(citationItem)) : h("p", { class: "muted" }, "No citations."));
  return out;
}

function renderPanel() {
  const r = rows[panel.index];
  if (!r) return;
  panel.row = r;
  const field = panel.field;
  const st = r.status || "pending";
  $("panel-title").textContent = field ? `Row ${r.index + 1} · ${field}` : `Row ${r.index + 1}`;
  const body = [h("p", { class: "pstatus" }, h("span", { class: `badge s-${st}` }, rowLabel(st)))];
  if (FAILED.has(st)) {
    body.push(h("div", { class: "perror", role: "alert" }, h("strong", {}, "This row failed. "), text(r.error || `It ended ${st}.`)));
  } else if (!ENDED.has(st)) {
    body.push(h("p", { class: "muted" }, "This row is still in progress: its value appears here when it ends."));
  } else if (field) {
    body.push(h("h3", {}, "Value"), h("div", { class: "pvalue" }, valueNode(outValue(r, field))));
    const b = basisOf(r, field);
    if (b) body.push(...basisNodes(b));
    else body.push(h("p", { class: "muted" }, "No basis (reasoning, sources) for this field."));
  }
  if (columns.length) {
    body.push(h("h3", {}, "Row input"),
      h("dl", { class: "pinput" }, columns.flatMap((c) => [h("dt", {}, c), h("dd", {}, text((r.values || {})[c]) || "—")])));
  }
  if (typeof r.url === "string" && /^\/task\/[\w-]+$/.test(r.url)) {
    body.push(h("p", {}, h("a", { href: r.url, id: "panel-task" }, "Open this row's task page →")));
  }
  $("panel-body").replaceChildren(...body);
}

function isOpen(index, field) {
  return panel.index === index && (panel.field || "") === field;
}

// The open cell is marked in the grid (rows built later mark it themselves: isOpen).
function markOpen() {
  for (const b of win.querySelectorAll("button.out.sel")) b.classList.remove("sel");
  if (panel.index === null) return;
  const sel = `button.out[data-index="${panel.index}"][data-field="${CSS.escape(panel.field || "")}"]`;
  const cell = win.querySelector(sel);
  if (cell) cell.classList.add("sel");
}

function openPanel(index, field, opener) {
  Object.assign(panel, { index, field, opener });
  renderPanel();
  markOpen();
  $("panel").hidden = false;
  document.body.classList.add("panel-open");
  $("panel-title").focus({ preventScroll: true });
  // On a phone the sheet covers the lower part of the screen: keep the chosen row in sight above it.
  if (matchMedia("(max-width: 640px)").matches && opener) {
    const top = opener.getBoundingClientRect().top;
    if (Math.abs(top - 130) > 4) window.scrollBy({ top: top - 130 });
  } else if (opener) {
    opener.scrollIntoView({ block: "nearest", inline: "nearest" });  // the page made room for the panel
  }
}

function closePanel() {
  $("panel").hidden = true;
  document.body.classList.remove("panel-open");
  const opener = panel.opener;
  Object.assign(panel, { index: null, field: null, row: null, opener: null });
  markOpen();
  if (opener && opener.isConnected) opener.focus({ preventScroll: true });
}

$("panel-close").addEventListener("click", closePanel);
document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape" && !$("panel").hidden && !$("retry-dialog").open) closePanel();
});

// -- retry failed rows -----------------------------------------------------------------------------------
$("retry").addEventListener("click", () => {
  const n = batch.failed;
  const price = batch.usd_per_row;
  $("retry-error").textContent = "";
  $("retry-text").textContent = price === null || price === undefined
    ? `This adds the ${num(n)} failed rows again: each is a new, billed run at Parallel.`
    : `This adds the ${num(n)} failed rows again: ${num(n)} × ${usd(price)} = ${usd(n * price)}, each a new, billed run at Parallel.`;
  $("retry-confirm").textContent = price === null || price === undefined ? `Retry ${num(n)} rows` : `Retry ${num(n)} rows for ${usd(n * price)}`;
  $("retry-dialog").showModal();
});

$("retry-cancel").addEventListener("click", () => $("retry-dialog").close());

$("retry-confirm").addEventListener("click", async () => {
  const button = $("retry-confirm");
  button.disabled = true;
  try {
    const answer = await api("POST", batch.urls.retry);
    $("retry-dialog").close();
    $("retry-note").textContent = `${num(answer.retried)} rows added again.`;
    // The retried rows wait to be added again: show them so at once (the polls bring what follows).
    for (let i = 0; i < rows.length; i += 1) {
      const r = rows[i];
      if (r && FAILED.has(r.status)) rows[i] = { ...r, status: "pending", output: null, basis: {}, error: null };
    }
    showSummary(answer.batch);
    refresh();
    startPolling();
  } catch (err) {
    $("retry-dialog").close();
    $("retry-error").textContent = err.message;
  } finally {
    button.disabled = false;
  }
});

// -- start -----------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", async () => {
  showSummary(batch);
  renderHead();
  try {
    const first = await fetchRows({ after: "-1" });
    since = first.now;
    merge(first.rows);
    layoutColumns();
    refresh();
    // Every page first, then the polls: they ask what changed since the first page, so nothing is missed,
    // and no page read before a poll can overwrite what that poll brought.
    if (first.next_after !== null && first.next_after !== undefined && first.rows.length) await loadRest(first.next_after);
    allLoaded = true;
    showCount();
  } catch (err) {
    $("grid-count").textContent = `Could not load the rows: ${err.message}`;
    return;
  }
  if (batch.status !== "completed") startPolling();
});

async function loadRest(after) {
  for (;;) {
    showCount();
    const page = await fetchRows({ after: String(after) });
    merge(page.rows);
    refresh();
    if (page.next_after === null || page.next_after === undefined || !page.rows.length) break;
    after = page.next_after;
  }
}
