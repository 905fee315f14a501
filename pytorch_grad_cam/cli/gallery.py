"""``index.html``: a self-contained gallery of a dataset run (no server, no network)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1rem; background: #f6f6f6; color: #222; }
  header { display: flex; flex-wrap: wrap; gap: 1rem; align-items: center; }
  h1 { font-size: 1.3rem; margin: 0; }
  #grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr));
          gap: .6rem; margin-top: 1rem; }
  .card { margin: 0; background: #fff; border-radius: 6px; padding: .3rem; cursor: zoom-in;
          box-shadow: 0 1px 3px #0002; }
  .card img { width: 100%; height: 150px; object-fit: contain; background: #222; }
  .card figcaption { font-size: .75rem; overflow-wrap: anywhere; }
  .card[hidden] { display: none; }
  #viewer { position: fixed; inset: 0; background: #000d; display: flex; flex-direction: column;
            align-items: center; justify-content: center; color: #fff; cursor: zoom-out; }
  #viewer[hidden] { display: none; }
  #viewer img { max-width: 95vw; max-height: 85vh; }
  .errors { color: #a00; font-size: .8rem; }
</style>
</head>
<body>
<header>
  <h1>__TITLE__</h1>
  <label>class <select id="class"><option value="">all</option></select></label>
  <label>sort <select id="sort">
    <option value="desc">confidence, highest first</option>
    <option value="asc">confidence, lowest first</option>
    <option value="name">image name</option>
  </select></label>
  <span id="shown"></span>
</header>
<p class="errors" id="errors"></p>
<div id="grid"></div>
<div id="viewer" hidden><img id="full" alt=""><p id="caption"></p></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const grid = document.getElementById("grid");
const classSelect = document.getElementById("class");
const sortSelect = document.getElementById("sort");
const viewer = document.getElementById("viewer");
const full = document.getElementById("full");
const cards = data.items.map((item, index) => {
  const card = document.createElement("figure");
  card.className = "card";
  card.dataset.index = index;
  card.dataset.category = item.label;
  const img = document.createElement("img");
  img.alt = item.image;
  img.addEventListener("load", () => { img.dataset.loaded = "1"; });
  img.addEventListener("error", () => { img.dataset.failed = "1"; });
  img.src = item.thumb;
  const caption = document.createElement("figcaption");
  caption.textContent = item.image + " \\u2014 " + item.label + " (" +
    item.probability.toFixed(3) + ")";
  card.append(img, caption);
  card.addEventListener("click", () => setState({open: String(index)}));
  return card;
});
for (const label of [...new Set(data.items.map(i => i.label))].sort()) {
  const option = document.createElement("option");
  option.value = option.textContent = label;
  classSelect.append(option);
}
if (data.errors.length) {
  document.getElementById("errors").textContent = data.errors.length +
    " image(s) could not be explained: " + data.errors.map(e => e.image).join(", ");
}
function state() {
  return Object.fromEntries(new URLSearchParams(location.hash.slice(1)));
}
function setState(changes) {
  const next = {...state(), ...changes};
  for (const key of Object.keys(next)) if (!next[key]) delete next[key];
  location.hash = new URLSearchParams(next).toString();
}
function render() {
  const s = state();
  classSelect.value = s.class || "";
  sortSelect.value = s.sort || "desc";
  const order = cards.slice().sort((a, b) => {
    const x = data.items[a.dataset.index], y = data.items[b.dataset.index];
    if (sortSelect.value === "name") return x.image.localeCompare(y.image);
    const sign = sortSelect.value === "asc" ? 1 : -1;
    return sign * (x.probability - y.probability);
  });
  let shown = 0;
  for (const card of order) {
    card.hidden = Boolean(s.class) && card.dataset.category !== s.class;
    shown += card.hidden ? 0 : 1;
    grid.append(card);
  }
  document.getElementById("shown").textContent = shown + " of " + cards.length + " shown";
  const item = s.open !== undefined ? data.items[Number(s.open)] : undefined;
  viewer.hidden = !item;
  if (item) {
    full.src = item.overlay;
    document.getElementById("caption").textContent = item.image + " \\u2014 " + item.label +
      ", score " + item.score.toFixed(3) + ", probability " + item.probability.toFixed(3);
  }
}
full.addEventListener("load", () => { full.dataset.loaded = full.getAttribute("src"); });
classSelect.addEventListener("change", () => setState({class: classSelect.value}));
sortSelect.addEventListener("change", () => setState({sort: sortSelect.value}));
viewer.addEventListener("click", () => setState({open: ""}));
window.addEventListener("hashchange", render);
render();
</script>
</body>
</html>
"""


def gallery_html(title: str, records: Sequence[dict[str, Any]]) -> str:
    """The page for manifest ``records`` (paths in them are relative to the page)."""
    items = [
        {
            "image": r["image"],
            "label": str(r.get("category_name") or r["category"]),
            "score": float(r["score"]),
            "probability": float(r["probability"]),
            "thumb": r["thumbnail"],
            "overlay": r["overlay"],
        }
        for r in records
        if r.get("status") == "ok"
    ]
    errors = [{"image": r["image"]} for r in records if r.get("status") != "ok"]
    data = json.dumps({"items": items, "errors": errors}).replace("</", "<\\/")
    return PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)
