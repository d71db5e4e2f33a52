"use strict";

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

async function refreshKey() {
  try {
    const who = await api("GET", "/api/session");
    document.getElementById("key-mask").textContent = who.key;
    document.getElementById("key-signed-in").hidden = false;
    document.getElementById("key-form").hidden = true;
    return true;
  } catch (e) {
    document.getElementById("key-signed-in").hidden = true;
    document.getElementById("key-form").hidden = false;
    return false;
  }
}

function row(t) {
  return h("tr", { "data-id": t.id, tabindex: "0", onclick: () => (location.href = `/task/${t.id}`),
                   onkeydown: (e) => { if (e.key === "Enter") location.href = `/task/${t.id}`; } },
    h("td", {}, h("span", { class: `badge s-${t.status}` }, t.status)),
    h("td", {}, t.processor),
    h("td", { class: "preview" }, t.input_preview),
    h("td", {}, ago(t.created_at)),
    h("td", {}, t.duration_seconds === null ? "—" : `${Math.round(t.duration_seconds)} s`),
    h("td", {}, t.cost_usd === null ? "—" : `$${t.cost_usd.toFixed(3)}`),
    h("td", {}, h("a", { href: t.urls.json, onclick: (e) => e.stopPropagation() }, "Raw JSON Output")));
}

async function loadTasks() {
  const body = document.querySelector("#tasks tbody");
  try {
    const data = await api("GET", "/api/tasks?limit=100");
    body.replaceChildren(...data.tasks.map(row));
  } catch (e) {
    body.replaceChildren();
  }
}

function watchTasks() {
  const source = new EventSource("/api/tasks/stream");
  source.addEventListener("task", (e) => {
    const t = JSON.parse(e.data);
    const body = document.querySelector("#tasks tbody");
    const old = body.querySelector(`tr[data-id="${CSS.escape(t.id)}"]`);
    if (old) old.replaceWith(row(t)); else body.prepend(row(t));
  });
  source.addEventListener("removed", (e) => {
    const { id } = JSON.parse(e.data);
    const old = document.querySelector(`#tasks tbody tr[data-id="${CSS.escape(id)}"]`);
    if (old) old.remove();
  });
}

function updateCost() {
  const opt = document.getElementById("processor").selectedOptions[0];
  document.getElementById("cost").textContent = `$${Number(opt.dataset.price).toFixed(3)}`;
}

function schemaMode() {
  return document.querySelector('input[name="schema_mode"]:checked').value;
}

function checkSchema() {
  const error = document.getElementById("schema-error");
  error.textContent = "";
  if (schemaMode() !== "json") return true;
  try {
    const schema = JSON.parse(document.getElementById("schema").value);
    if (schema.type !== "object" || typeof schema.properties !== "object") {
      error.textContent = 'The schema\'s root must be {"type": "object", "properties": {...}}.';
      return false;
    }
  } catch (e) {
    error.textContent = `Not valid JSON: ${e.message}`;
    return false;
  }
  return true;
}

function buildRequest() {
  const form = document.getElementById("task-form");
  const raw = document.getElementById("input").value;
  const kind = form.querySelector('input[name="input_kind"]:checked').value;
  const body = { processor: document.getElementById("processor").value, input: kind === "json" ? JSON.parse(raw) : raw };
  const mode = schemaMode();
  const schemaText = document.getElementById("schema").value;
  if (mode === "auto") body.task_spec = { output_schema: { type: "auto" } };
  else if (mode === "text") body.task_spec = { output_schema: { type: "text", description: schemaText } };
  else body.task_spec = { output_schema: { type: "json", json_schema: JSON.parse(schemaText) } };
  const split = (v) => v.split(",").map((s) => s.trim()).filter(Boolean);
  const include = split(document.getElementById("include").value);
  const exclude = split(document.getElementById("exclude").value);
  if (include.length || exclude.length) body.source_policy = { include_domains: include, exclude_domains: exclude };
  const meta = document.getElementById("metadata").value.trim();
  if (meta) body.metadata = JSON.parse(meta);
  return body;
}

// Runs of $1 or more are confirmed first, showing what they cost.
function confirmCost(price) {
  const dialog = document.getElementById("confirm-cost");
  document.getElementById("confirm-cost-amount").textContent = `$${price.toFixed(2)}`;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "run"), { once: true });
    dialog.showModal();
    document.getElementById("confirm-cost-run").focus();
  });
}

document.addEventListener("DOMContentLoaded", async () => {
  updateCost();
  document.getElementById("processor").addEventListener("change", updateCost);
  for (const radio of document.querySelectorAll('input[name="schema_mode"]')) {
    radio.addEventListener("change", () => {
      const mode = schemaMode();
      document.getElementById("schema").hidden = mode === "auto";
      document.getElementById("schema-example").hidden = mode !== "json";
      document.getElementById("schema").placeholder = mode === "text" ? "A short report on ..." : "";
      checkSchema();
    });
  }
  document.getElementById("schema").addEventListener("input", checkSchema);
  document.getElementById("schema-example").addEventListener("click", () => {
    document.getElementById("schema").value = JSON.stringify(EXAMPLE_SCHEMA, null, 2);
    checkSchema();
  });
  document.getElementById("key-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const error = document.getElementById("key-error");
    error.textContent = "";
    try {
      const session = await api("POST", "/api/session", { api_key: document.getElementById("api-key").value });
      setCsrfToken(session.csrf_token);
      document.getElementById("api-key").value = "";
      await refreshKey();
      await loadTasks();
      watchTasks();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  document.getElementById("forget-key").addEventListener("click", async () => {
    const out = await api("DELETE", "/api/session");
    setCsrfToken(out.csrf_token);
    await refreshKey();
    document.querySelector("#tasks tbody").replaceChildren();
  });
  document.getElementById("erase-key").addEventListener("click", async () => {
    const result = document.getElementById("erase-result");
    try {
      const out = await api("DELETE", "/api/key");
      const token = await api("GET", "/api/csrf");
      setCsrfToken(token.csrf_token);
      await refreshKey();
      document.querySelector("#tasks tbody").replaceChildren();
      document.getElementById("key-note").textContent =
        `Key erased from this server; ${out.runs_no_longer_followed} active run(s) are no longer followed.`;
    } catch (err) {
      result.textContent = err.message;
    }
  });
  document.getElementById("task-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const error = document.getElementById("task-error");
    error.textContent = "";
    if (!checkSchema()) return;
    let body;
    try { body = buildRequest(); } catch (err) { error.textContent = `Not valid JSON: ${err.message}`; return; }
    const price = Number(document.getElementById("processor").selectedOptions[0].dataset.price);
    if (price >= 1 && !(await confirmCost(price))) return;
    try {
      const created = await api("POST", "/api/tasks", body);
      location.href = `/task/${created.task.id}`;
    } catch (err) {
      error.textContent = err.message;
    }
  });
  if (await refreshKey()) {
    await loadTasks();
    watchTasks();
  }
});
