"""GET /: one small page, HTML and inline JavaScript, no build step, nothing loaded from
elsewhere. A person types a prompt, picks a model (GET /v1/models), optionally gives an API
key (kept in sessionStorage, for this tab only), and watches the tokens stream: fetch() POSTs
/v1/responses with `background: true, stream: true` and reads the SSE body as it arrives.

In the background, the response runs to its end whatever the page does. After every event the
page keeps, together in sessionStorage, the response id, the event's `sequence_number` and the
text so far. A reload mid-stream shows that text again and reattaches with
GET /v1/responses/{id}?stream=true&starting_after=N: the events after that one only, so the
text has no gap and no repeat. A connection lost mid-stream is reattached the same way. Stop
is POST /v1/responses/{id}/cancel. Text is only ever set with textContent, never parsed as
HTML.

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
const STATE = "genq.response", KEY = "genq.key", RETRIES = 5, RETRY_MS = 1000;
const ENDED = {"response.completed": "done", "response.incomplete": "done",
               "response.cancelled": "cancelled", "response.failed": "error"};
const $ = (id) => document.getElementById(id);
let state = null;  // kept: {response, model, seq, text, done}; text = the deltas up to seq
let shown = "";  // the text shown
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
  $("response").textContent = state && state.response ? state.response : "";
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

// One event of the Responses API. Each has a sequence_number of its own, and a reattach sends
// the events after it: so the text is kept with every event's number, and a reload resumes
// exactly after the last event kept. True once the response has ended.
function apply(data) {
  if (data === "[DONE]") return true;
  const event = JSON.parse(data);
  if (event.type === "error") throw new Error(event.message || "the stream failed");
  if (event.response && event.response.id && !state.response) state.response = event.response.id;
  if (event.type === "response.output_text.delta") shown += event.delta;
  if (typeof event.sequence_number === "number") {
    state.seq = event.sequence_number; state.text = shown; save();
  }
  render();
  const ended = ENDED[event.type];
  if (!ended) return false;
  state.done = true; save();
  const error = event.response && event.response.error;
  show(ended, ended === "error" ? (error && error.message) || "the response failed"
    : event.type.slice("response.".length));
  return true;
}

// The SSE wire format, read incrementally: lines end with \n, \r\n or \r; a blank line ends
// an event. A \r at the end of what has arrived may be half of a \r\n: wait for more.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "", data = [];
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
        if (data.length && onEvent(data.join("\n"))) return true;
        data = [];
        continue;
      }
      if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      // anything else (event:, id:, a comment as keep-alive) tells the page nothing more
    }
  }
}

// Reads a stream to the response's end; a connection lost on the way reattaches after the
// last event kept.
async function follow(response) {
  for (let attempt = 0; ; attempt++) {
    try {
      if (response && response.ok && await readEvents(response, apply)) return;
      if (response && !response.ok) { show("error", await failure(response)); return; }
    } catch (error) {
      // fetch() fails with a TypeError when the connection is lost; anything else is final.
      if (!(error instanceof TypeError)) { show("error", String(error.message || error)); return; }
    }
    if (!state.response) { show("error", "the stream was lost before the response began"); return; }
    if (attempt >= RETRIES) { show("error", "the stream was lost; reload to resume"); return; }
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    response = await reattach().catch(() => null);
  }
}

function url(suffix) {
  return "/v1/responses/" + encodeURIComponent(state.response) + suffix;
}

function reattach() {
  let query = "?stream=true";
  if (state.seq !== null) query += "&starting_after=" + state.seq;
  else state.text = "";  // nothing kept yet: from the start
  shown = state.text;
  render();
  return fetch(url(query), {headers: headers(false)});
}

async function send(event) {
  event.preventDefault();
  const prompt = $("prompt").value, model = $("model").value, most = $("max").value;
  if (!prompt.trim() || !model) { show("error", "type a prompt and pick a model"); return; }
  // In the background: the response runs to its end whether or not this page stays.
  const request = {model, input: prompt, stream: true, background: true};
  if (most) request.max_output_tokens = Number(most);
  if ($("temperature").value) request.temperature = Number($("temperature").value);
  state = {response: null, model, seq: null, text: "", done: false};
  shown = "";
  save(); render();
  show("streaming", "submitting");
  const response = await fetch("/v1/responses", {
    method: "POST", headers: headers(true),
    body: JSON.stringify(request),
  });
  if (!response.ok) { show("error", await failure(response)); return; }
  show("streaming", "streaming");
  await follow(response);
}

async function stop() {
  if (!state || !state.response) return;
  const response = await fetch(url("/cancel"), {method: "POST", headers: headers(false)});
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
  if (state && state.response && !state.done) {
    show("streaming", "resuming after event " + (state.seq === null ? "(none)" : state.seq));
    document.body.dataset.resumedFrom = state.seq === null ? "" : String(state.seq);
    document.body.dataset.resumedAt = String(state.text.length);
    follow(await reattach().catch(() => null));
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
<p>Response <code id="response"></code></p>
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
