// Calls to the /v1 REST API with the API key the user typed (sessionStorage, never the URL).

const KEY = "sightline.apiKey";

export class AuthError extends Error {}

export class ApiError extends Error {
  constructor(status, detail) {
    super(describe(detail) || `the server answered ${status}`);
    this.status = status;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

function headers(extra = {}) {
  const key = getKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

// A 422's detail is a list of {loc, msg}; anything else a sentence.
export function describe(detail) {
  if (Array.isArray(detail)) {
    return detail.map((d) => [(d.loc || []).slice(1).join("."), d.msg].filter(Boolean).join(": ")).join("; ");
  }
  return typeof detail === "string" ? detail : detail ? JSON.stringify(detail) : "";
}

async function failure(response) {
  if (response.status === 401) return new AuthError("missing or invalid API key");
  let detail = "";
  try {
    detail = (await response.json()).detail;
  } catch {
    detail = response.statusText;
  }
  return new ApiError(response.status, detail);
}

export async function request(path, { method = "GET", body } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response;
}

export async function json(path, options) {
  return (await request(path, options)).json();
}

// POST /v1/ask with stream: true; onEvent(name, data) for each server-sent event until done or error.
export async function askStream(body, onEvent, signal) {
  const response = await fetch("/v1/ask", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

// POST /v1/documents (field `file`, repeated) with upload progress: onProgress(fraction) while
// sending, onProgress(null) once the bytes are sent and the server is ingesting.
export function upload(files, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const file of files) form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/documents");
    const key = getKey();
    if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.upload.onload = () => onProgress(null);
    xhr.onerror = () => reject(new ApiError(0, "the upload failed: the server could not be reached"));
    xhr.onload = () => {
      if (xhr.status === 200) resolve(xhr.response);
      else if (xhr.status === 401) reject(new AuthError("missing or invalid API key"));
      else reject(new ApiError(xhr.status, xhr.response && xhr.response.detail));
    };
    xhr.send(form);
  });
}
