// Recent answers from GET /v1/answers (newest first, a page at a time); each reopens its view.

import { AuthError, json } from "./api.js";
import { $, clear, h, share, when } from "./dom.js";

const PAGE = 10;

const el = { list: $("#history-list"), more: $("#history-more"), status: $("#history-status") };
let hooks = { onOpen() {}, onAuthError() {} };
let loaded = 0;

export function initHistory(given) {
  hooks = { ...hooks, ...given };
  el.more.addEventListener("click", () => loadHistory(false));
  el.list.addEventListener("click", (e) => {
    const link = e.target.closest("a[data-id]");
    if (!link || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    hooks.onOpen(link.dataset.id);
  });
}

export function clearHistory() {
  clear(el.list);
  el.more.hidden = true;
  el.status.textContent = "";
  loaded = 0;
}

export async function loadHistory(fromStart = true) {
  const offset = fromStart ? 0 : loaded;
  let page;
  try {
    page = await json(`/v1/answers?limit=${PAGE}&offset=${offset}`);
  } catch (err) {
    if (err instanceof AuthError) hooks.onAuthError();
    else el.status.textContent = `Could not list answers: ${err.message}`;
    return;
  }
  if (fromStart) clearHistory();
  for (const a of page.answers) el.list.append(item(a));
  loaded = offset + page.answers.length;
  el.more.hidden = loaded >= page.total;
  el.status.textContent = page.total ? `${loaded} of ${page.total}` : "No answers yet: ask something above.";
}

function item(a) {
  const level = a.flagged ? "high" : "low"; // the list has no threshold: the detector's verdict decides
  return h(
    "li",
    {},
    h(
      "a",
      { href: `/?answer=${encodeURIComponent(a.id)}`, dataset: { id: a.id }, class: "history-item" },
      h("span", { class: "history-question" }, a.question),
      h(
        "span",
        { class: "history-facts" },
        h("span", { class: `badge risk-${level}` }, `${a.flagged ? "flagged" : "risk"} ${share(a.risk)}`),
        h("time", { datetime: a.created_at }, when(a.created_at)),
      ),
    ),
  );
}
