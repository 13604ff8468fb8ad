// Ask: stream an answer over server-sent events, then show its sentences tinted by risk and its sources
// with attention-share bars. Selecting a sentence lights up the source(s) it drew on: its evidence spans
// when the Answer has them, else the source with the largest share of the sentence's attention.

import { ApiError, AuthError, askStream, getKey, json, request } from "./api.js";
import { $, RISK_WORDS, bar, clear, h, ms, riskLevel, share, splitPath } from "./dom.js";

const CLAMP_CHARS = 420; // longer source texts start collapsed
const CITATION = /\[(\d+(?:\s*[,;]\s*\d+)*)\]/g;

const el = {
  form: $("#ask-form"),
  question: $("#question"),
  button: $("#ask-button"),
  status: $("#ask-status"),
  answer: $("#answer"),
  echo: $("#answer-question"),
  notice: $("#answer-notice"),
  text: $("#answer-text"),
  draft: $("#answer-draft"),
  hint: $("#answer-hint"),
  summary: $("#answer-summary"),
  timings: $("#answer-timings"),
  actions: $("#answer-actions"),
  report: $("#report-link"),
  copy: $("#copy-answer"),
  copyStatus: $("#copy-status"),
  sources: $("#sources"),
  sourceList: $("#source-list"),
};

const state = { answer: null, selected: null, controller: null, cards: new Map() };
let hooks = { onAuthError() {}, onAnswered() {} };

export function initAsk(given) {
  hooks = { ...hooks, ...given };
  el.form.addEventListener("submit", (e) => {
    e.preventDefault();
    const body = requestBody();
    if (body) ask(body);
  });
  el.question.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      el.form.requestSubmit();
    }
  });
  el.text.addEventListener("click", (e) => {
    const sentence = e.target.closest(".sent[data-i]");
    if (sentence) select(Number(sentence.dataset.i));
  });
  el.text.addEventListener("keydown", (e) => {
    const sentence = e.target.closest(".sent[data-i]");
    if (sentence && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      select(Number(sentence.dataset.i));
    } else if (e.key === "Escape" && state.selected !== null) {
      select(state.selected);
    }
  });
  el.copy.addEventListener("click", copyMarkdown);
  el.report.addEventListener("click", downloadReportWithKey);
}

function requestBody() {
  const form = new FormData(el.form);
  const question = String(form.get("question") || "").trim();
  if (!question) {
    say("Type a question first.", "error");
    el.question.focus();
    return null;
  }
  const body = { question };
  const k = String(form.get("k") || "").trim();
  if (k) body.k = Number(k);
  const filters = {};
  for (const name of ["path_prefix", "doc_type"]) {
    const value = String(form.get(name) || "").trim();
    if (value) filters[name] = value;
  }
  if (Object.keys(filters).length) body.filters = filters;
  const mode = String(form.get("mode") || "");
  if (mode) body.mode = mode;
  return body;
}

function say(message, kind = "") {
  el.status.textContent = message;
  el.status.className = `status ${kind}`.trim();
}

export function resetAsk() {
  if (state.controller) state.controller.abort();
  state.answer = null;
  state.selected = null;
  state.cards.clear();
  el.answer.hidden = true;
  el.answer.dataset.state = "idle";
  el.sources.hidden = true;
  for (const node of [el.echo, el.notice, el.text, el.draft, el.summary, el.timings, el.sourceList]) clear(node);
  el.hint.hidden = true;
  el.actions.hidden = true;
  say("");
}

async function ask(body) {
  resetAsk();
  const controller = new AbortController();
  state.controller = controller;
  el.answer.hidden = false;
  el.answer.dataset.state = "streaming";
  el.answer.setAttribute("aria-busy", "true");
  el.answer.dataset.tokens = "0";
  el.echo.textContent = body.question;
  el.button.disabled = true;
  say("Finding sources…");
  let tokens = 0;
  try {
    await askStream(
      body,
      (event, data) => {
        if (event === "sources") {
          renderSources(data.sources, null);
          say(`Writing an answer from ${count(data.sources.length, "source")}…`);
        } else if (event === "token") {
          tokens += 1;
          el.text.append(data.text);
          el.answer.dataset.tokens = String(tokens);
        } else if (event === "done") {
          renderAnswer(data);
          hooks.onAnswered(data);
        } else if (event === "error") {
          throw new ApiError(data.status, data.detail);
        }
      },
      controller.signal,
    );
    if (el.answer.dataset.state !== "done") throw new ApiError(0, "the answer stream ended early");
  } catch (err) {
    if (controller.signal.aborted) return;
    failed(err);
  } finally {
    el.answer.removeAttribute("aria-busy");
    el.button.disabled = false;
    if (state.controller === controller) state.controller = null;
  }
}

function failed(err) {
  if (err instanceof AuthError) {
    resetAsk();
    hooks.onAuthError();
    return;
  }
  el.answer.dataset.state = "error";
  say(`Could not answer: ${err.message}`, "error");
}

export async function showAnswer(id) {
  resetAsk();
  say("Opening the answer…");
  try {
    const answer = await json(`/v1/answers/${encodeURIComponent(id)}`);
    el.question.value = answer.question;
    renderAnswer(answer, false);
    return true;
  } catch (err) {
    if (err instanceof AuthError) hooks.onAuthError();
    else say(`Could not open that answer: ${err.message}`, "error");
    return false;
  }
}

// ---- the answer

function kindOf(answer) {
  return answer.answer_kind || (answer.abstained ? "refusal" : "generated");
}

function renderAnswer(answer, fresh = true) {
  state.answer = answer;
  state.selected = null;
  const threshold = answer.hallucination.threshold;
  const sentences = answer.sentences || [];
  el.answer.hidden = false;
  el.answer.dataset.state = "done";
  el.answer.dataset.kind = kindOf(answer);
  el.echo.textContent = answer.question;
  renderNotice(answer);
  clear(el.text);
  for (const [text, i] of segments(answer)) {
    if (i === null) {
      el.text.append(...withCitations(text));
      continue;
    }
    const s = sentences[i];
    const level = riskLevel(s.risk, s.flagged, threshold);
    el.text.append(
      h(
        "span",
        {
          class: `sent risk-${level}`,
          role: "button",
          tabindex: "0",
          "aria-pressed": "false",
          title: `risk ${share(s.risk)} (${RISK_WORDS[level]})`,
          dataset: { i },
        },
        ...withCitations(text),
        s.flagged ? h("span", { class: "flag", "aria-hidden": "true" }, "!") : null,
        h("span", { class: "visually-hidden" }, ` (sentence ${i + 1}, ${RISK_WORDS[level]}, risk ${share(s.risk)})`),
      ),
    );
  }
  renderDraft(answer);
  el.hint.hidden = sentences.length === 0;
  const hal = answer.hallucination;
  const risk = `${share(hal.risk)}, ${hal.flagged ? "flagged" : "not flagged"} (threshold ${share(threshold)}, ${hal.method})`;
  if (kindOf(answer) !== "refusal") el.summary.textContent = `Answer risk ${risk}.`;
  else el.summary.textContent = answer.draft ? `The draft's risk: ${risk}.` : "";
  el.summary.className = `summary ${hal.flagged ? "risk-high-text" : ""}`.trim();
  const t = answer.timings;
  el.timings.textContent =
    `retrieve ${ms(t.retrieve_ms)} · prefill ${ms(t.prefill_ms)} · decode ${ms(t.decode_ms)} · ` +
    `attribute ${ms(t.attribute_ms)} · total ${ms(t.total_ms)} · ${answer.model.generator}`;
  renderSources(answer.sources, threshold);
  el.actions.hidden = false;
  el.report.href = `/v1/answers/${encodeURIComponent(answer.id)}/report`;
  el.report.textContent = getKey() ? "Download full report" : "Full report";
  el.copyStatus.textContent = "";
  const flagged = sentences.filter((s) => s.flagged).length;
  if (kindOf(answer) === "refusal") say(`No answer from your documents. ${fresh ? "" : "(stored answer)"}`.trim());
  else say(`Answer ready: ${count(sentences.length, "sentence")}, ${flagged} flagged.${fresh ? "" : " (stored answer)"}`);
}

function renderNotice(answer) {
  clear(el.notice);
  const kind = kindOf(answer);
  if (kind === "refusal") {
    el.notice.append(
      h("p", { class: "notice refusal" }, h("strong", {}, "Held back. "), "sightline did not answer: ", reason(answer)),
    );
  } else if (kind === "quotes") {
    el.notice.append(
      h(
        "p",
        { class: "notice quotes" },
        h("strong", {}, "Quoted. "),
        "These sentences are copied from the sources, not generated",
        answer.held_back ? `: the draft was held back because ${reason(answer)}` : ".",
      ),
    );
  } else if (answer.abstained) {
    el.notice.append(h("p", { class: "notice refusal" }, h("strong", {}, "Declined. "), "The model said the sources do not hold the answer."));
  }
}

// why, as the server decided it (answer.held_back, rag/answer/verdict.py); a decline is the model's own
function reason(answer) {
  if (answer.held_back === "no_sources") return `retrieval found nothing relevant: ${answer.held_back_reason}.`;
  if (answer.held_back) return `${answer.held_back_reason}.`;
  return "the sources do not hold the answer.";
}

function renderDraft(answer) {
  clear(el.draft);
  if (!answer.draft) return;
  el.draft.append(
    h(
      "details",
      { class: "draft" },
      h("summary", {}, "The held-back draft"),
      h("p", { class: "hint" }, "Not an answer: it is shown only so you can see what was held back."),
      h("p", { class: "draft-text" }, answer.draft),
    ),
  );
}

// The answer text cut into [text, sentence index | null] pieces, from the sentences' offsets when they
// match the text, else from the sentences' own texts (as the HTML report does).
function segments(answer) {
  const text = answer.answer;
  const sentences = answer.sentences || [];
  if (!sentences.length) return [[text, null]];
  let at = 0;
  const consistent = sentences.every((s) => {
    const ok = at <= s.start && s.start <= s.end && s.end <= text.length && text.slice(s.start, s.end).trim() === s.text.trim();
    at = s.end;
    return ok;
  });
  const out = [];
  if (!consistent) {
    sentences.forEach((s, i) => {
      if (i) out.push([" ", null]);
      out.push([s.text, i]);
    });
    return out;
  }
  at = 0;
  sentences.forEach((s, i) => {
    if (s.start > at) out.push([text.slice(at, s.start), null]);
    out.push([text.slice(s.start, s.end), i]);
    at = s.end;
  });
  if (at < text.length) out.push([text.slice(at), null]);
  return out;
}

function withCitations(text) {
  const out = [];
  let at = 0;
  for (const m of text.matchAll(CITATION)) {
    out.push(text.slice(at, m.index));
    out.push(h("span", { class: "cite" }, m[0]));
    at = m.index + m[0].length;
  }
  out.push(text.slice(at));
  return out.filter((x) => x !== "");
}

function cited(text) {
  const numbers = [];
  for (const m of text.matchAll(CITATION)) for (const part of m[1].split(/[,;]/)) numbers.push(Number(part));
  return numbers;
}

// ---- the sources

function renderSources(sources, threshold) {
  clear(el.sourceList);
  state.cards.clear();
  const sorted = [...sources].sort((a, b) => a.rank - b.rank);
  sorted.forEach((src, i) => {
    const card = sourceCard(src, src.rank || i + 1, threshold === null);
    state.cards.set(src.chunk_id, { card, src });
    el.sourceList.append(card);
  });
  el.sources.hidden = sorted.length === 0;
}

function sourceCard(src, n, pending) {
  const [folder, name] = splitPath(src.path);
  const where = [
    src.title && src.title !== name ? src.title : null,
    src.page !== null && src.page !== undefined ? `page ${src.page}` : null,
    src.heading ? `§ ${src.heading}` : null,
  ].filter(Boolean);
  const mass = src.attention_mass;
  const text = h("blockquote", { class: "chunk-text", id: `src-${n}-text` });
  text.textContent = src.text;
  const long = src.text.length > CLAMP_CHARS;
  if (long) text.classList.add("clamped");
  const toggle = long
    ? h("button", { type: "button", class: "quiet more", "aria-expanded": "false", "aria-controls": `src-${n}-text` }, "Show all")
    : null;
  toggle?.addEventListener("click", () => expand(text, toggle, text.classList.contains("clamped")));
  return h(
    "li",
    { class: "source", id: `src-${n}`, tabindex: "-1", dataset: { chunk: src.chunk_id, n } },
    h(
      "div",
      { class: "source-head" },
      h("span", { class: "rank", "aria-label": `source ${n}` }, String(n)),
      h("span", { class: "source-doc", title: src.path }, h("strong", {}, name), folder ? h("span", { class: "folder" }, ` ${folder}`) : null),
    ),
    where.length ? h("p", { class: "where" }, where.join(" · ")) : null,
    src.stale ? staleNote(src) : null,
    h(
      "div",
      { class: "bars" },
      h(
        "div",
        { class: "bar-row attention" },
        h("span", { class: "bar-label" }, "attention"),
        bar(mass),
        h("span", { class: "bar-value" }, pending ? "…" : share(mass)),
      ),
      h(
        "div",
        { class: "bar-row sentence-share", hidden: true },
        h("span", { class: "bar-label" }, "this sentence"),
        bar(0, "sentence"),
        h("span", { class: "bar-value" }, ""),
      ),
    ),
    h("p", { class: "meta" }, `retrieval score ${Number(src.score).toFixed(3)}${src.doc_type ? ` · ${src.doc_type}` : ""}`),
    text,
    toggle,
  );
}

// A stored answer's source whose chunk has changed or gone since (the text shown is what the answer saw).
function staleNote(src) {
  const now = src.stale === "changed" ? "now holds other text" : "was deleted or re-ingested";
  return h(
    "p",
    { class: "stale", role: "note", dataset: { stale: src.stale } },
    h("strong", {}, `${src.stale === "changed" ? "Changed" : "Gone"} since this answer. `),
    `Chunk ${src.chunk_id} ${now}; shown here is the text the answer saw.`,
  );
}

function expand(text, toggle, open) {
  text.classList.toggle("clamped", !open);
  toggle.setAttribute("aria-expanded", String(open));
  toggle.textContent = open ? "Show less" : "Show all";
}

// ---- selecting a sentence

function select(i) {
  const answer = state.answer;
  if (!answer) return;
  state.selected = state.selected === i ? null : i;
  for (const node of el.text.querySelectorAll(".sent[data-i]")) {
    node.setAttribute("aria-pressed", String(Number(node.dataset.i) === state.selected));
  }
  for (const { card, src } of state.cards.values()) {
    card.classList.remove("hit");
    card.querySelector(".chunk-text").textContent = src.text;
    const row = card.querySelector(".sentence-share");
    row.hidden = true;
  }
  if (state.selected === null) {
    say("No sentence selected.");
    return;
  }
  const sentence = answer.sentences[state.selected];
  const support = sentence.support || {};
  for (const { card, src } of state.cards.values()) {
    const value = support[String(src.chunk_id)];
    if (value === undefined) continue;
    const row = card.querySelector(".sentence-share");
    row.hidden = false;
    row.querySelector(".fill").style.width = `${Math.max(0, Math.min(1, value)) * 100}%`;
    row.querySelector(".bar-value").textContent = share(value);
  }
  const spans = evidenceSpans(sentence);
  let hits = [...spans.keys()];
  if (!hits.length) hits = topSupported(sentence);
  for (const chunkId of hits) {
    const { card, src } = state.cards.get(chunkId);
    card.classList.add("hit");
    const marks = spans.get(chunkId);
    if (marks) {
      markText(card.querySelector(".chunk-text"), src.text, marks);
      const toggle = card.querySelector(".more");
      if (toggle) expand(card.querySelector(".chunk-text"), toggle, true);
    }
  }
  const first = hits.length ? state.cards.get(hits[0]) : null;
  if (first) {
    first.card.scrollIntoView({ block: "nearest" });
    const [, name] = splitPath(first.src.path);
    const how = spans.size ? "its evidence is marked" : "the source it attended to most";
    say(`Sentence ${state.selected + 1}: source ${first.card.dataset.n} (${name}), ${how}.`);
  } else {
    say(`Sentence ${state.selected + 1} has no attribution to the sources.`);
  }
}

// chunk id -> [[start, end]] in that source's text, for evidence spans that fall inside a shown source.
function evidenceSpans(sentence) {
  const out = new Map();
  for (const ev of sentence.evidence || []) {
    const found = state.cards.get(ev.chunk_id) || [...state.cards.values()].find(
      ({ src }) => src.document_id === ev.document_id && src.char_start <= ev.char_start && ev.char_end <= src.char_end,
    );
    if (!found) continue;
    const span = localSpan(found.src, ev);
    if (!span) continue;
    const key = found.src.chunk_id;
    out.set(key, [...(out.get(key) || []), span]);
  }
  return out;
}

// An evidence span's offsets are the document's; a source's text covers [char_start, char_end) of it.
function localSpan(src, ev) {
  const len = src.text.length;
  let start = Math.max(0, Math.min(len, ev.char_start - src.char_start));
  let end = Math.max(start, Math.min(len, ev.char_end - src.char_start));
  if (ev.text && src.text.slice(start, end) !== ev.text) {
    const at = src.text.indexOf(ev.text);
    if (at >= 0) [start, end] = [at, at + ev.text.length];
  }
  return end > start ? [start, end] : null;
}

function topSupported(sentence) {
  const entries = Object.entries(sentence.support || {})
    .map(([id, value]) => [Number(id), value])
    .filter(([id]) => state.cards.has(id))
    .sort((a, b) => b[1] - a[1]);
  if (entries.length) return [entries[0][0]];
  const byRank = [...state.cards.values()];
  return cited(sentence.text)
    .map((n) => byRank.find(({ card }) => Number(card.dataset.n) === n))
    .filter(Boolean)
    .map(({ src }) => src.chunk_id);
}

function markText(node, text, spans) {
  const merged = [];
  for (const [a, b] of [...spans].sort((x, y) => x[0] - y[0])) {
    const last = merged[merged.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else merged.push([a, b]);
  }
  clear(node);
  let at = 0;
  for (const [a, b] of merged) {
    node.append(text.slice(at, a), h("mark", { class: "evidence" }, text.slice(a, b)));
    at = b;
  }
  node.append(text.slice(at));
}

// ---- report and Markdown

function markdown(answer) {
  const lines = [`**${answer.question}**`, "", answer.answer.trim()];
  const sources = [...answer.sources].sort((a, b) => a.rank - b.rank);
  if (sources.length) lines.push("", "Sources:");
  for (const s of sources) {
    const [, name] = splitPath(s.path);
    const where = [s.page !== null && s.page !== undefined ? `p. ${s.page}` : null, s.heading].filter(Boolean).join(", ");
    const title = s.title && s.title !== name ? ` — ${s.title}` : "";
    lines.push(`[${s.rank}] ${name}${title}${where ? ` (${where})` : ""}, attention ${share(s.attention_mass)}`);
  }
  return `${lines.join("\n")}\n`;
}

async function copyMarkdown() {
  if (!state.answer) return;
  const text = markdown(state.answer);
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = h("textarea", { class: "visually-hidden", "aria-hidden": "true" });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  el.copyStatus.textContent = "Copied.";
}

// With an API key the report cannot be a plain link (a navigation cannot carry the key): fetch it and
// save it as a file instead.
async function downloadReportWithKey(e) {
  if (!getKey() || !state.answer) return;
  e.preventDefault();
  try {
    const response = await request(el.report.getAttribute("href"));
    const url = URL.createObjectURL(await response.blob());
    const link = h("a", { href: url, download: `sightline-report-${state.answer.id}.html` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    if (err instanceof AuthError) hooks.onAuthError();
    else say(`Could not fetch the report: ${err.message}`, "error");
  }
}

function count(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}
