"""The chat page `python -m lm.serve` shows at `/`: one HTML file, its CSS and JavaScript inline, no
external assets (it works offline and loads nothing from anywhere else).

The script keeps the conversation in the page, POSTs it to /v1/chat/completions with
`"stream": true` (or the text so far to /v1/completions for a model without a chat template),
reads the server-sent events with `fetch` and a stream reader, and appends each piece to the
reply as it arrives, with `textContent` (the model's text is never parsed as HTML). "Stop" aborts
the request (the server then stops generating); "New chat" forgets the conversation. A message the
server refuses (too long, ...) is shown as a note and left out of the conversation.
`document.body.dataset.state` is "busy" while a reply streams and "idle" otherwise (what a test
in a headless browser waits for).
"""
from __future__ import annotations

import json

from lm.inference.engine import Engine

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lm chat</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0; display: flex; flex-direction: column; height: 100vh; }
  header { padding: .5em 1em; border-bottom: 1px solid #ddd; display: flex; gap: 1em; align-items: center;
           flex-wrap: wrap; }
  header b { margin-right: auto; }
  header input { width: 4.5em; }
  #log { flex: 1; overflow-y: auto; padding: 1em; }
  .msg { white-space: pre-wrap; margin: .4em 0; padding: .5em .8em; border-radius: 8px; max-width: 80%; }
  .user { background: #dbeafe; margin-left: auto; }
  .assistant { background: #f3f4f6; }
  .note { color: #b91c1c; font-size: 90%; }
  form { display: flex; gap: .5em; padding: .8em 1em; border-top: 1px solid #ddd; }
  textarea { flex: 1; font: inherit; resize: vertical; min-height: 2.5em; }
</style>
</head>
<body data-state="idle">
<header>
  <b id="model"></b>
  <label>temperature <input id="temperature" type="number" min="0" max="2" step="0.1" value="0.7"></label>
  <label>max tokens <input id="max_tokens" type="number" min="1" step="1" placeholder="auto"></label>
  <label id="keybox" hidden>API key <input id="key" type="password" autocomplete="off"></label>
  <button id="reset" type="button">New chat</button>
</header>
<div id="log"></div>
<form id="form">
  <textarea id="input" placeholder="Write a message; Enter sends, Shift+Enter for a new line"></textarea>
  <button id="send">Send</button>
  <button id="stop" type="button" disabled>Stop</button>
</form>
<script>
"use strict";
const CONFIG = /*CONFIG*/null;
const $ = (id) => document.getElementById(id);
let messages = [], documentText = "", controller = null;
$("model").textContent = CONFIG.model + (CONFIG.chat ? "" : " (no chat template: your text is continued)");
$("keybox").hidden = !CONFIG.needsKey;

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

function setBusy(busy) {
  document.body.dataset.state = busy ? "busy" : "idle";
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

async function send(text) {
  if (!text.trim() || controller) return;
  bubble("user", text);
  const out = bubble("assistant", "");
  const settings = { stream: true, temperature: Number($("temperature").value) };
  if ($("max_tokens").value) settings.max_tokens = Number($("max_tokens").value);   // else: what the context leaves
  let url, body, failed = false;
  const before = documentText;
  if (CONFIG.chat) {
    messages.push({ role: "user", content: text });
    url = "/v1/chat/completions"; body = { ...settings, messages };
  } else {
    documentText += (documentText ? "\\n" : "") + text;
    url = "/v1/completions"; body = { ...settings, prompt: documentText };
  }
  const headers = { "Content-Type": "application/json" };
  if (CONFIG.needsKey) headers["Authorization"] = "Bearer " + $("key").value;
  controller = new AbortController();
  setBusy(true);
  try {
    const resp = await fetch(url, { method: "POST", headers, body: JSON.stringify(body), signal: controller.signal });
    if (!resp.ok) {
      const err = await resp.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || resp.status + " " + resp.statusText);
    }
    const reader = resp.body.getReader(), decoder = new TextDecoder();
    let buffer = "", done = false;
    while (!done) {
      const part = await reader.read();
      if (part.done) break;
      buffer += decoder.decode(part.value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\\n\\n")) >= 0) {
        const line = buffer.slice(0, end); buffer = buffer.slice(end + 2);
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") { done = true; break; }
        const obj = JSON.parse(data);
        if (obj.error) throw new Error(obj.error.message);
        const choice = obj.choices[0];
        if (!choice) continue;
        out.textContent += CONFIG.chat ? (choice.delta.content || "") : (choice.text || "");
        $("log").scrollTop = $("log").scrollHeight;
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") {
      failed = !out.textContent;
      if (failed) out.remove();
      bubble("note", String(e.message || e));
    }
  } finally {
    if (failed && CONFIG.chat) messages.pop();                 // the message was not answered: forget it
    else if (failed) documentText = before;
    else if (CONFIG.chat) messages.push({ role: "assistant", content: out.textContent });   // what was shown
    else documentText += out.textContent;
    controller = null;
    setBusy(false);
  }
}

$("form").addEventListener("submit", (e) => { e.preventDefault(); const t = $("input").value; $("input").value = ""; send(t); });
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
});
$("stop").addEventListener("click", () => { if (controller) controller.abort(); });
$("reset").addEventListener("click", () => {
  if (controller) controller.abort();
  messages = []; documentText = ""; $("log").textContent = "";
});
</script>
</body>
</html>
"""


def render_page(engine: Engine, needs_key: bool = False) -> str:
    """The page with what its script needs to know: the model's name, whether it chats, whether
    the server wants a key. JSON, with "</" escaped so no name can close the script element."""
    config = json.dumps({"model": engine.name, "chat": engine.format is not None, "needsKey": needs_key,
                         "context": engine.context}).replace("</", "<\\/")
    return PAGE.replace("/*CONFIG*/null", config)
