// Documents: upload by drag-and-drop or file picker (several at once), progress while sending and
// ingesting, the list with type, chunks, status and any error, delete after a confirmation.

import { AuthError, json, request, upload } from "./api.js";
import { $, clear, h, splitPath, when } from "./dom.js";

const el = {
  zone: $("#dropzone"),
  input: $("#file-input"),
  upload: $("#upload"),
  progress: $("#upload-progress"),
  status: $("#upload-status"),
  failures: $("#upload-failures"),
  count: $("#doc-count"),
  list: $("#doc-list"),
  dialog: $("#confirm-delete"),
  confirmText: $("#confirm-text"),
  confirmOk: $("#confirm-ok"),
  confirmCancel: $("#confirm-cancel"),
};
let hooks = { onAuthError() {} };
let pendingDelete = null;
let busy = false;

export function initDocuments(given) {
  hooks = { ...hooks, ...given };
  el.input.addEventListener("change", () => {
    if (el.input.files.length) send([...el.input.files]);
    el.input.value = "";
  });
  for (const name of ["dragenter", "dragover"]) {
    el.zone.addEventListener(name, (e) => {
      e.preventDefault();
      el.zone.classList.add("over");
    });
  }
  el.zone.addEventListener("dragleave", (e) => {
    if (!el.zone.contains(e.relatedTarget)) el.zone.classList.remove("over");
  });
  el.zone.addEventListener("drop", (e) => {
    e.preventDefault();
    el.zone.classList.remove("over");
    const files = [...(e.dataTransfer?.files || [])];
    if (files.length) send(files);
  });
  el.confirmCancel.addEventListener("click", () => el.dialog.close("cancel"));
  el.confirmOk.addEventListener("click", () => el.dialog.close("delete"));
  el.dialog.addEventListener("close", () => {
    const target = pendingDelete;
    pendingDelete = null;
    if (target && el.dialog.returnValue === "delete") remove(target);
    else if (target) target.button.focus();
  });
}

function say(message, kind = "") {
  el.status.textContent = message;
  el.status.className = `status ${kind}`.trim();
}

export function clearDocuments() {
  clear(el.list);
  clear(el.failures);
  el.count.textContent = "Documents";
  say("");
}

export async function loadDocuments() {
  let docs;
  try {
    docs = (await json("/v1/documents")).documents;
  } catch (err) {
    if (err instanceof AuthError) hooks.onAuthError();
    else say(`Could not list documents: ${err.message}`, "error");
    return;
  }
  clear(el.list);
  const chunks = docs.reduce((n, d) => n + d.chunks, 0);
  el.count.textContent = docs.length
    ? `${plural(docs.length, "document")}, ${plural(chunks, "chunk")}`
    : "No documents yet";
  for (const doc of docs) el.list.append(row(doc));
}

function row(doc) {
  const [folder, name] = splitPath(doc.path);
  const remove = h("button", { type: "button", class: "quiet danger-text", "aria-label": `Delete ${name}` }, "Delete");
  remove.addEventListener("click", () => confirmDelete(doc, name, remove));
  return h(
    "li",
    { class: `doc status-${doc.status}`, dataset: { id: doc.id, name } },
    h(
      "div",
      { class: "doc-main" },
      h("strong", { class: "doc-name", title: doc.path }, name),
      doc.title && doc.title !== name ? h("span", { class: "doc-title" }, doc.title) : null,
      h("span", { class: "folder" }, folder),
    ),
    h(
      "p",
      { class: "doc-facts" },
      h("span", { class: "doc-type" }, (doc.doc_type || "?").toUpperCase()),
      h("span", { class: "doc-chunks" }, plural(doc.chunks, "chunk")),
      h("span", { class: `badge status ${doc.status}` }, doc.status),
      h("span", {}, size(doc.size)),
      h("time", { datetime: doc.updated_at }, when(doc.updated_at)),
    ),
    doc.error ? h("p", { class: "doc-error" }, h("strong", {}, "Error: "), doc.error) : null,
    remove,
  );
}

async function send(files) {
  if (busy) {
    say("An upload is still running; wait for it to finish.", "error");
    return;
  }
  busy = true;
  clear(el.failures);
  el.upload.hidden = false;
  el.progress.value = 0;
  const what = plural(files.length, "file");
  say(`Uploading ${what}…`);
  try {
    const summary = await upload(files, (fraction) => {
      if (fraction === null) {
        el.progress.removeAttribute("value"); // indeterminate while the server ingests
        say(`Ingesting ${what}: reading, chunking and embedding…`);
      } else {
        el.progress.value = Math.round(fraction * 100);
        say(`Uploading ${what}… ${Math.round(fraction * 100)}%`);
      }
    });
    const names = new Map(summary.uploaded.map((u) => [u.path, u.filename]));
    for (const f of summary.failed) {
      el.failures.append(h("li", {}, h("strong", {}, names.get(f.path) || splitPath(f.path)[1]), `: ${f.error}`));
    }
    for (const d of summary.duplicates) {
      const what = `: same content as document ${d.document_id} (${splitPath(d.of_path)[1]}); not ingested again`;
      el.failures.append(h("li", {}, h("strong", {}, names.get(d.path) || splitPath(d.path)[1]), what));
    }
    await loadDocuments(); // the list first: the summary below says the upload is over
    const parts = [`added ${summary.added}`, `updated ${summary.updated}`, `unchanged ${summary.unchanged}`];
    if (summary.duplicates.length) parts.push(`duplicate ${summary.duplicates.length}`);
    say(`Done: ${parts.join(", ")}; ${summary.failed.length} failed.`, summary.failed.length ? "error" : "ok");
  } catch (err) {
    if (err instanceof AuthError) hooks.onAuthError();
    else say(`Upload failed: ${err.message}`, "error");
  } finally {
    el.upload.hidden = true;
    busy = false;
  }
}

function confirmDelete(doc, name, button) {
  pendingDelete = { doc, name, button };
  el.confirmText.textContent = `“${name}” and its ${plural(doc.chunks, "chunk")} will be removed from the index.`;
  el.dialog.returnValue = "";
  el.dialog.showModal();
  el.confirmCancel.focus();
}

async function remove({ doc, name }) {
  try {
    await request(`/v1/documents/${doc.id}`, { method: "DELETE" });
    await loadDocuments();
    say(`Deleted ${name}.`, "ok");
    el.count.focus();
  } catch (err) {
    if (err instanceof AuthError) hooks.onAuthError();
    else say(`Could not delete ${name}: ${err.message}`, "error");
  }
}

function plural(n, word) {
  return `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}
