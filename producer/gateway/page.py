"""GET /: one small page, HTML and inline JavaScript, no build step, nothing loaded from
elsewhere. A person types a prompt, picks a model (GET /v1/models), optionally gives an API
key (kept in sessionStorage, for this tab only), and watches the tokens stream: fetch() POSTs
/v1/chat/completions with `stream: true` and reads the SSE body as it arrives.

After every event the page keeps, together in sessionStorage, the job id (the
`X-Genq-Job-Id` header), the event's `id` and the text so far. A reload mid-stream shows that
text again and continues with GET /v1/jobs/{job_id}/stream and `Last-Event-ID`: the events
after that one only, so the text has no gap and no repeat. A connection lost mid-stream is
resumed the same way. Text is only ever set with textContent, never parsed as HTML.

The page itself needs no key (it holds no data); everything it calls under /v1 does.
"""

from __future__ import annotations

import base64
import hashlib

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; }
textarea { width: 100%; box-sizing: border-box; font: inherit; }
label { margin-right: 1rem; }
#out { white-space: pre-wrap; border: 1px solid #ccc; padding: .75rem; min-height: 6rem; }
#status { color: #666; }
#status.error { color: #b00020; }
"""

SCRIPT = r"""
"use strict";
const STATE = "genq.stream", KEY = "genq.key", RETRIES = 5, RETRY_MS = 1000;
const $ = (id) => document.getElementById(id);
let state = null;  // kept: {job, model, lastId, text, done}; text = the events up to lastId
let shown = "", group = null;  // the text shown, and the id of the events read last
let leaving = false;  // a reload or navigation cuts the stream off: not an error to show
addEventListener("pagehide", () => { leaving = true; });

function headers(json) {
  const h = {};
  const key = sessionStorage.getItem(KEY);
  if (key) h["Authorization"] = "Bearer " + key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

function save() { sessionStorage.setItem(STATE, JSON.stringify(state)); }

function show(phase, message) {
  if (leaving) return;
  document.body.dataset.state = phase;
  $("status").textContent = message;
  $("status").className = phase === "error" ? "error" : "";
  $("send").disabled = phase === "streaming";
  $("stop").disabled = phase !== "streaming";
}

function render() {
  $("out").textContent = shown;
  $("job").textContent = state && state.job ? state.job : "";
}

async function failure(response) {
  try { return (await response.json()).error.message; }
  catch (_) { return "HTTP " + response.status; }
}

async function loadModels() {
  const select = $("model");
  const response = await fetch("/v1/models", {headers: headers(false)});
  if (!response.ok) { show("error", "models: " + await failure(response)); return; }
  const chosen = select.value || (state && state.model);
  select.replaceChildren();
  for (const model of (await response.json()).data) {
    const option = document.createElement("option");
    option.value = option.textContent = model.id;
    select.append(option);
  }
  if (chosen) select.value = chosen;
  if (!document.body.dataset.state) show("idle", "ready");
}

// One SSE event. Several events may share an id (one stream entry: its last token, the finish
// chunk, [DONE]), and a resume sends what follows that id: so the text is kept with an id only
// once an event with the next id shows that every event of the id has arrived.
function apply(event) {
  if (event.id !== null && event.id !== group) {
    if (group !== null) { state.lastId = group; state.text = shown; save(); }
    group = event.id;
  }
  if (event.data === "[DONE]") {
    state.text = shown; state.done = true; save(); show("done", "done");
    return true;
  }
  const chunk = JSON.parse(event.data);
  if (chunk.error) throw new Error(chunk.error.message || "the stream failed");
  for (const choice of chunk.choices || []) {
    const delta = choice.delta ? choice.delta.content : choice.text;
    if (delta) shown += delta;
  }
  render();
  return false;
}

// The SSE wire format, read incrementally: lines end with \n, \r\n or \r; a blank line ends
// an event. A \r at the end of what has arrived may be half of a \r\n: wait for more.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "", data = [], id = null;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return false;
    buffer += decoder.decode(value, {stream: true});
    let match;
    while ((match = /\r\n|\r|\n/.exec(buffer)) !== null) {
      if (match[0] === "\r" && match.index === buffer.length - 1) break;
      const line = buffer.slice(0, match.index);
      buffer = buffer.slice(match.index + match[0].length);
      if (line === "") {
        if (data.length && onEvent({id, data: data.join("\n")})) return true;
        data = []; id = null;
        continue;
      }
      const colon = line.indexOf(":");
      if (colon === 0) continue;  // a comment: keep-alive
      const field = colon < 0 ? line : line.slice(0, colon);
      let value2 = colon < 0 ? "" : line.slice(colon + 1);
      if (value2.startsWith(" ")) value2 = value2.slice(1);
      if (field === "data") data.push(value2);
      else if (field === "id") id = value2;
    }
  }
}

// Reads a stream to its [DONE]; a connection lost on the way is resumed after the last event.
async function follow(response) {
  for (let attempt = 0; ; attempt++) {
    try {
      if (response && response.ok && await readEvents(response, apply)) return;
      if (response && !response.ok) { show("error", await failure(response)); return; }
    } catch (error) {
      // fetch() fails with a TypeError when the connection is lost; anything else is final.
      if (!(error instanceof TypeError)) { show("error", String(error.message || error)); return; }
    }
    if (attempt >= RETRIES) { show("error", "the stream was lost; reload to resume"); return; }
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    response = await resume().catch(() => null);
  }
}

function resume() {
  const h = headers(false);
  if (state.lastId) h["Last-Event-ID"] = state.lastId;
  else state.text = "";  // nothing kept yet: from the start
  shown = state.text; group = state.lastId;
  render();
  return fetch("/v1/jobs/" + encodeURIComponent(state.job) + "/stream", {headers: h});
}

async function send(event) {
  event.preventDefault();
  const prompt = $("prompt").value, model = $("model").value, most = $("max").value;
  if (!prompt.trim() || !model) { show("error", "type a prompt and pick a model"); return; }
  const request = {model, stream: true, messages: [{role: "user", content: prompt}]};
  if (most) request.max_tokens = Number(most);
  if ($("temperature").value) request.temperature = Number($("temperature").value);
  state = {job: null, model, lastId: null, text: "", done: false};
  shown = ""; group = null;
  save(); render();
  show("streaming", "submitting");
  const response = await fetch("/v1/chat/completions", {
    method: "POST", headers: headers(true),
    body: JSON.stringify(request),
  });
  if (!response.ok) { show("error", await failure(response)); return; }
  state.job = response.headers.get("X-Genq-Job-Id");
  save(); render();
  show("streaming", "streaming");
  await follow(response);
}

async function stop() {
  if (!state || !state.job) return;
  const url = "/v1/jobs/" + encodeURIComponent(state.job) + "/cancel";
  const response = await fetch(url, {method: "POST", headers: headers(false)});
  if (!response.ok) show("error", "cancel: " + await failure(response));
}

async function start() {
  $("key").value = sessionStorage.getItem(KEY) || "";
  $("key").addEventListener("change", () => {
    sessionStorage.setItem(KEY, $("key").value); loadModels();
  });
  $("form").addEventListener("submit", (event) => send(event).catch(
    (error) => show("error", String(error.message || error))));
  $("stop").addEventListener("click", () => stop());
  state = JSON.parse(sessionStorage.getItem(STATE) || "null");
  shown = state ? state.text : "";
  render();
  if (state && state.job && !state.done) {
    show("streaming", "resuming after event " + (state.lastId || "(none)"));
    document.body.dataset.resumedFrom = state.lastId || "";
    document.body.dataset.resumedAt = String(state.text.length);
    follow(await resume().catch(() => null));
  } else if (state && state.done) {
    show("done", "done");
  }
  await loadModels();
}

start().catch((error) => show("error", String(error.message || error)));
"""

BODY = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>genq</title>
<style>{style}</style>
</head>
<body>
<h1>genq</h1>
<form id="form">
<p><textarea id="prompt" rows="4" placeholder="Type a prompt" required></textarea></p>
<p>
<label>Model <select id="model"></select></label>
<label>Max tokens <input id="max" type="number" min="1" size="6"></label>
<label>Temperature <input id="temperature" type="number" min="0" max="2" step="0.1" size="4">
</label>
<label>API key <input id="key" type="password" autocomplete="off" size="24"></label>
<button id="send" type="submit">Send</button>
<button id="stop" type="button" disabled>Stop</button>
</p>
</form>
<p id="status"></p>
<pre id="out"></pre>
<p>Job <code id="job"></code></p>
<script>{script}</script>
</body>
</html>
"""


def _hash(source: str) -> str:
    """A Content-Security-Policy source for one inline block: its SHA-256, base64."""
    digest = hashlib.sha256(source.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


PAGE = BODY.format(style=STYLE, script=SCRIPT)
# Only this page's own inline script and style run, and it talks to this origin only.
HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_hash(SCRIPT)}; style-src {_hash(STYLE)}; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(PAGE, headers=HEADERS)
