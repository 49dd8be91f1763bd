"""The page at /: drop a picture, see the top-k with probabilities and the version. It
sends the file's bytes base64-encoded to the same v2 infer endpoint clients use."""

from __future__ import annotations

import html
import json

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }
#drop { border: 2px dashed #888; border-radius: 8px; padding: 2rem; text-align: center; }
#drop.over { background: #eef; }
#preview { max-width: 12rem; max-height: 12rem; display: block; margin: 1rem auto; }
table { border-collapse: collapse; width: 100%; } td { padding: .2rem .5rem; }
.bar { background: #4a7; height: .8rem; } .error { color: #b00; }
</style></head><body>
<h1>__TITLE__</h1>
<p>version <b id="version">__VERSION__</b> · file __FILE__</p>
<div id="drop">Drop a picture here, or <input type="file" id="file" accept="image/*"></div>
<img id="preview" alt="">
<p id="status"></p>
<table id="top"></table>
<script>
const MODEL = __MODEL__;
const drop = document.getElementById("drop");
const status = document.getElementById("status");
function show(file) {
  document.getElementById("preview").src = URL.createObjectURL(file);
  status.textContent = "asking the model..."; status.className = "";
  const reader = new FileReader();
  reader.onload = async () => {
    const b64 = reader.result.split(",")[1];
    const body = {inputs: [{name: "image", shape: [1], datatype: "BYTES", data: [b64]}]};
    const response = await fetch("/v2/models/" + MODEL + "/infer", {
      method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)});
    const answer = await response.json();
    const table = document.getElementById("top");
    table.innerHTML = "";
    if (!response.ok) { status.textContent = answer.error; status.className = "error"; return; }
    const labels = answer.outputs.find(o => o.name === "label").data;
    const probs = answer.outputs.find(o => o.name === "probability").data;
    labels.forEach((label, i) => {
      const row = table.insertRow();
      row.className = "prediction";
      row.insertCell().textContent = label;
      row.insertCell().textContent = probs[i].toFixed(3);
      row.insertCell().innerHTML = '<div class="bar" style="width:' + (probs[i] * 100) + '%"></div>';
    });
    const ood = answer.outputs.find(o => o.name === "out_of_distribution");
    status.textContent = "version " + answer.model_version +
      (ood ? (ood.data[0] ? " · unlike the training images" : " · like the training images") : "");
  };
  reader.readAsDataURL(file);
}
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) show(e.dataTransfer.files[0]);
});
document.getElementById("file").addEventListener("change", e => show(e.target.files[0]));
</script></body></html>
"""


def page(served) -> str:
    return (
        TEMPLATE.replace("__TITLE__", html.escape(served.name))
        .replace("__VERSION__", html.escape(served.version))
        .replace("__FILE__", html.escape(served.file.name))
        .replace("__MODEL__", json.dumps(served.name))
    )
