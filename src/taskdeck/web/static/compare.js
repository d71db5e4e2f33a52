"use strict";
// Several tasks side by side: one row per output field, one column per task.

const data = JSON.parse(document.getElementById("compare-data").textContent);

function cellNode(cell) {
  if (!cell.present) return h("span", { class: "muted" }, "—");
  if (cell.report) return report(cell.report);
  const value = cell.value !== null && typeof cell.value === "object" ? JSON.stringify(cell.value, null, 1) : String(cell.value ?? "null");
  return h("div", {},
    h("div", { class: "value" }, value),
    cell.confidence ? h("span", { class: `badge c-${String(cell.confidence).toLowerCase()}` }, String(cell.confidence)) : "",
    cell.citations.length ? h("ul", { class: "citations" }, cell.citations.map((c) => h("li", {}, link(c.url, c.title || c.url)))) : "");
}

document.addEventListener("DOMContentLoaded", () => {
  const head = h("tr", {}, h("th", {}, "Field"), data.tasks.map((t) =>
    h("th", {}, h("a", { href: t.urls.page }, t.input_preview || t.id), h("div", { class: "muted small" }, `${t.processor} · ${t.status} · ${money(t.cost_usd)}`))));
  const rows = data.rows.map((r) => h("tr", {}, h("th", {}, r.field), r.cells.map((c) => h("td", {}, cellNode(c)))));
  document.getElementById("compare").replaceChildren(h("thead", {}, head), h("tbody", {}, rows));
  document.getElementById("compare-empty").hidden = data.rows.length > 0;
});
