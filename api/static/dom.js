// Small DOM and formatting helpers. Text always goes in as text nodes, never as HTML.

export const $ = (selector, root = document) => root.querySelector(selector);

// h("p", {class: "x", dataset: {id: 1}}, "text", child) -> element
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export function share(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "—";
  const pct = x * 100;
  if (pct === 0) return "0%";
  return pct < 1 ? `${pct.toFixed(1)}%` : `${Math.round(pct)}%`;
}

export function ms(x) {
  if (!Number.isFinite(x)) return "—";
  return x < 1000 ? `${Math.round(x)} ms` : `${(x / 1000).toFixed(2)} s`;
}

export function when(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// "high" for flagged, "mid" from half the threshold up, else "low" (as the HTML report).
export function riskLevel(risk, flagged, threshold) {
  if (flagged) return "high";
  return risk >= (threshold || 0.5) / 2 ? "mid" : "low";
}

export const RISK_WORDS = { low: "low risk", mid: "some risk", high: "flagged" };

// A path as [folder with trailing separator, file name]; an upload's content-hash prefix is dropped.
export function splitPath(path) {
  const cut = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return [path.slice(0, cut + 1), path.slice(cut + 1).replace(/^[0-9a-f]{16}-/, "")];
}

// A decorative bar (the number beside it is what screen readers read).
export function bar(fraction, className = "") {
  const fill = h("span", { class: "fill" });
  fill.style.width = `${Math.max(0, Math.min(1, fraction || 0)) * 100}%`;
  return h("span", { class: `bar ${className}`.trim(), "aria-hidden": "true" }, fill);
}
