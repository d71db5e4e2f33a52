// Shared helpers. Upstream text is only ever put in the page as text nodes (never innerHTML),
// and links only keep http(s) URLs, so nothing Parallel sends can run here.
"use strict";

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function safeUrl(url) {
  try {
    const u = new URL(String(url), window.location.href);
    return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
  } catch (e) {
    return null;
  }
}

function link(url, text) {
  const href = safeUrl(url);
  if (!href) return h("span", { class: "muted" }, text || String(url));
  return h("a", { href, rel: "noopener noreferrer", target: "_blank" }, text || href);
}

// A report, as the server sends it (web/markdown.py: a string is text, [tag, attrs, children] an element),
// built with DOM calls: no HTML is parsed here. The tags and attributes are checked again against the
// server's allow-list, and a link keeps only an http(s) URL or an in-page footnote anchor.
const REPORT_TAGS = new Set(["p", "br", "hr", "h3", "h4", "h5", "h6", "blockquote", "pre", "code", "ul", "ol", "li",
  "em", "strong", "s", "del", "a", "sup", "table", "thead", "tbody", "tr", "th", "td", "section"]);
const REPORT_ATTRS = new Set(["title", "target", "id", "class", "start", "align", "rel"]);

function reportNodes(nodes) {
  const out = [];
  for (const node of nodes || []) {
    if (typeof node === "string") { out.push(document.createTextNode(node)); continue; }
    const [tag, attrs, children] = node;
    if (!REPORT_TAGS.has(tag)) { out.push(...reportNodes(children)); continue; }
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (REPORT_ATTRS.has(name)) el.setAttribute(name, String(value));
      else if (name === "href" && /^#fn[\w:-]*$/.test(value)) el.setAttribute("href", value);
      else if (name === "href" && safeUrl(value)) el.setAttribute("href", safeUrl(value));
    }
    el.append(...reportNodes(children));
    out.push(el);
  }
  return out;
}

function report(tree) {
  return h("div", { class: "markdown report" }, reportNodes(tree));
}

// The CSRF token of this page's session (or of the signed-out browser): sent with every unsafe request.
function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function setCsrfToken(token) {
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta && token) meta.content = token;
}

async function api(method, path, body) {
  const init = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD") init.headers["x-csrf-token"] = csrfToken();
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok) {
    const err = new Error(humanError(resp.status, data));
    err.status = resp.status;
    err.problems = (data && data.error && data.error.problems) || [];
    throw err;
  }
  return data;
}

// What a person should read: the API's messages speak to scripts too ("x-api-key header").
function humanError(status, data) {
  const message = data && data.error && data.error.message;
  if (status === 401) return "Enter your Parallel API key above to continue.";
  if (status === 403) return "This page is out of date. Reload it and try again.";
  if (status === 413) return "That is too large to send. Shorten the input or the schema.";
  if (status === 429) return "Too many requests just now. Wait a moment and try again.";
  if (status >= 500) return "Taskdeck could not do that just now. Try again in a moment.";
  return message || `The server answered ${status}.`;
}

function seconds(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "—";
  s = Math.max(0, s);
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
}

// How long ago, coarse (a list does not need seconds after the first minute).
function ago(iso) {
  if (!iso) return "—";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d`;
}

function elapsed(iso) {
  return iso ? seconds((Date.now() - Date.parse(iso)) / 1000) : "—";
}

// A time in the reader's zone; the exact UTC value on hover.
function localTime(iso, timeOnly) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const d = new Date(iso);
  return h("time", { datetime: iso, title: `${d.toISOString()} (UTC)` }, timeOnly ? d.toLocaleTimeString() : d.toLocaleString());
}

function fillTime(el, iso) {
  el.replaceWith(iso ? Object.assign(localTime(iso), { id: el.id }) : Object.assign(h("span", {}, "—"), { id: el.id }));
}

async function copyText(text, note) {
  try {
    await navigator.clipboard.writeText(text);
    note.textContent = "Copied";
  } catch (e) {
    note.textContent = "Copy failed: select the text and copy it";
  }
  setTimeout(() => { note.textContent = ""; }, 2000);
}

// A tab list: one selected tab (aria-selected), the others not; onSelect gets the chosen tab.
function tabs(buttons, onSelect) {
  const select = (chosen) => {
    for (const b of buttons) b.setAttribute("aria-selected", String(b === chosen));
    onSelect(chosen);
  };
  for (const b of buttons) b.addEventListener("click", () => select(b));
  return select;
}

function money(usd) {
  return usd === null || usd === undefined ? "—" : `$${Number(usd).toFixed(3)}`;
}

const TERMINAL = new Set(["completed", "failed", "rejected", "submit_unknown", "cancelled"]);

(function theme() {
  const saved = localStorage.getItem("taskdeck-theme");
  if (saved) document.documentElement.dataset.theme = saved;
  const button = document.getElementById("theme-toggle");
  if (button) button.addEventListener("click", () => {
    const dark = document.documentElement.dataset.theme === "dark" ||
      (!document.documentElement.dataset.theme && matchMedia("(prefers-color-scheme: dark)").matches);
    document.documentElement.dataset.theme = dark ? "light" : "dark";
    localStorage.setItem("taskdeck-theme", document.documentElement.dataset.theme);
  });
})();
