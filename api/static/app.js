// The page: two views (Ask at /, Documents at /documents) switched without reloading, and the API key
// box, shown when the server answers 401. A refused key hides every piece of data the page showed.

import { getKey, setKey } from "./api.js";
import { initAsk, resetAsk, showAnswer } from "./ask.js";
import { $ } from "./dom.js";
import { clearDocuments, initDocuments, loadDocuments } from "./documents.js";
import { clearHistory, initHistory, loadHistory } from "./history.js";

const TITLES = { ask: "Ask · sightline", documents: "Documents · sightline" };
const key = {
  box: $("#keybox"),
  toggle: $("#key-toggle"),
  form: $("#key-form"),
  input: $("#key-input"),
  message: $("#key-message"),
  forget: $("#key-forget"),
};
let current = null;

function viewOf(path) {
  return path.replace(/\/+$/, "") === "/documents" ? "documents" : "ask";
}

async function show(view, { focus = false } = {}) {
  current = view;
  for (const panel of document.querySelectorAll(".view")) panel.hidden = panel.dataset.view !== view;
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = TITLES[view];
  if (focus) $("#main").focus();
  if (view === "documents") {
    await loadDocuments();
    return;
  }
  const id = new URLSearchParams(location.search).get("answer");
  await Promise.all([loadHistory(), id ? showAnswer(id) : null]);
}

function navigate(url) {
  if (url !== location.pathname + location.search) history.pushState(null, "", url);
  return show(viewOf(location.pathname), { focus: true });
}

function authFailed() {
  document.body.dataset.locked = "";
  resetAsk();
  clearHistory();
  clearDocuments();
  key.message.textContent = getKey()
    ? "The server refused this API key (401 Unauthorized). Check it and enter it again."
    : "This server needs an API key. Enter one to see and ask about its documents.";
  openKeyBox();
}

function openKeyBox() {
  key.box.hidden = false;
  key.toggle.hidden = false;
  key.toggle.setAttribute("aria-expanded", "true");
  key.input.focus();
}

function closeKeyBox() {
  key.box.hidden = true;
  key.toggle.setAttribute("aria-expanded", "false");
}

key.form.addEventListener("submit", (e) => {
  e.preventDefault();
  setKey(key.input.value.trim());
  key.input.value = "";
  key.message.textContent = "";
  delete document.body.dataset.locked;
  closeKeyBox();
  show(current || viewOf(location.pathname));
});
key.forget.addEventListener("click", () => {
  setKey("");
  key.input.value = "";
  authFailed();
});
key.toggle.addEventListener("click", () => (key.box.hidden ? openKeyBox() : closeKeyBox()));

document.addEventListener("click", (e) => {
  const link = e.target.closest("a[data-nav]");
  if (!link || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(link.getAttribute("href"));
});
window.addEventListener("popstate", () => show(viewOf(location.pathname)));

initAsk({
  onAuthError: authFailed,
  onAnswered(answer) {
    history.replaceState(null, "", `/?answer=${encodeURIComponent(answer.id)}`);
    loadHistory();
  },
});
initHistory({
  onAuthError: authFailed,
  onOpen(id) {
    history.pushState(null, "", `/?answer=${encodeURIComponent(id)}`);
    showAnswer(id).then((ok) => ok && $("#answer").scrollIntoView({ block: "start" }));
  },
});
initDocuments({ onAuthError: authFailed });
if (getKey()) key.toggle.hidden = false;
show(viewOf(location.pathname));
