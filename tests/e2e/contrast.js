// WCAG 2 contrast of every visible text against its painted background (what axe's color-contrast
// rule checks): returns the texts below 4.5:1 (3:1 for large text), with their colours.
(() => {
  const parse = (c) => { const m = c.match(/[\d.]+/g); return m ? m.map(Number) : [0, 0, 0, 0]; };
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bgOf = (el) => { let layers = [];
    for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
      const a = c.length > 3 ? c[3] : 1; if (a > 0) { layers.push([c[0], c[1], c[2], a]); if (a >= 1) break; } }
    let out = [255, 255, 255]; if (getComputedStyle(document.documentElement).colorScheme === "dark") out = [0, 0, 0];
    for (const [r, g, b, a] of layers.reverse()) out = [r * a + out[0] * (1 - a), g * a + out[1] * (1 - a), b * a + out[2] * (1 - a)];
    return out; };
  const bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.textContent.trim()) continue;
    const el = n.parentElement; const r = el.getBoundingClientRect();
    if (!r.width || !r.height || el.closest("[hidden]") || getComputedStyle(el).visibility === "hidden") continue;
    if (el.closest("option, select")) continue;
    const style = getComputedStyle(el); const fg = parse(style.color); const bg = bgOf(el);
    const l1 = lum(fg), l2 = lum(bg); const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    const size = parseFloat(style.fontSize); const bold = Number(style.fontWeight) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need) bad.push(`${ratio.toFixed(2)}:1 ${el.tagName}.${el.className} "${n.textContent.trim().slice(0, 30)}" ${style.color} on rgb(${bg.map(Math.round)})`);
  }
  return bad;
})
