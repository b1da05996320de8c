"use strict";
const MODELS = /*MODELS*/[];
const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 120;
let latest = 0;
let streaming = null;
let timer = null;

for (const name of MODELS) $("model").add(new Option(name, name));
$("key").value = sessionStorage.getItem("pxgl-key") || "";
$("key").addEventListener("change", () => { sessionStorage.setItem("pxgl-key", $("key").value); changed(); });
$("prompt").addEventListener("input", changed);
$("model").addEventListener("change", changed);
$("steps").addEventListener("change", changed);

async function call(path, body, signal) {
  const headers = { "Content-Type": "application/json" };
  if ($("key").value) headers.Authorization = "Bearer " + $("key").value;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body), signal });
  if (response.status === 401) $("keybox").hidden = false;
  if (!response.ok) throw new Error((await response.json()).error.message);
  return response;
}

async function showTrace(model, prompt, turn) {
  const answer = await (await call("/v1/trace", { model, prompt })).json();
  if (turn !== latest) return;  // a newer prompt was typed meanwhile
  $("view").innerHTML = answer.html;
  $("view").dataset.prompt = prompt;
}

async function streamContinuation(model, prompt, turn) {
  if (streaming) streaming.abort();
  streaming = new AbortController();
  const out = $("continuation");
  out.replaceChildren(Object.assign(document.createElement("span"), { className: "prompt", textContent: prompt }));
  const text = out.appendChild(document.createElement("span"));
  text.id = "generated";
  delete out.dataset.done;
  const body = { model, prompt, max_tokens: Number($("steps").value) || 24, temperature: 0, stream: true };
  const reader = (await call("/v1/completions", body, streaming.signal)).body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (!event.startsWith("data: ")) continue;
      const data = event.slice(6);
      if (data === "[DONE]") {
        if (turn === latest) out.dataset.done = prompt;
        continue;
      }
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      text.textContent += chunk.choices[0].text;
    }
  }
}

function changed() {
  clearTimeout(timer);
  timer = setTimeout(() => {
    const prompt = $("prompt").value;
    if (!prompt) return;
    const turn = ++latest;
    const model = $("model").value;
    $("status").textContent = "";
    const report = (error) => {
      if (error.name !== "AbortError" && turn === latest) $("status").textContent = error.message;
    };
    showTrace(model, prompt, turn).catch(report);
    streamContinuation(model, prompt, turn).catch(report);
  }, DEBOUNCE_MS);
}
