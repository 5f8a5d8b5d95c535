// The retrieval page: one upload -> POST /api/query -> neighbours, prediction, overlay.
"use strict";
const $ = (id) => document.getElementById(id);

function setStatus(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function element(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

async function health() {
  const h = await (await fetch("/api/health")).json();
  $("run").textContent = `${h.run} · ${h.index_size} images indexed · ${h.search} search`;
  for (const m of h.explain_methods) $("method").appendChild(element("option", {value: m}, m));
  if (!h.explain_methods.length) $("explain").disabled = true;
}

function showPrediction(prediction) {
  const box = $("prediction");
  box.replaceChildren(element("p", {id: "predicted-label"}, prediction.label || "(none)"));
  for (const [name, score] of Object.entries(prediction.scores)) {
    const row = element("div", {class: "score"});
    row.append(element("span", {}, `${name} ${score.toFixed(3)}`),
               element("span", {class: "bar", style: `width:${Math.round(score * 120)}px`}));
    box.appendChild(row);
  }
}

function showNeighbours(neighbours) {
  const grid = $("neighbours");
  grid.replaceChildren();
  neighbours.forEach((n, rank) => {
    const card = element("figure", {class: "neighbour"});
    card.append(element("img", {src: n.thumbnail, alt: n.name, loading: "lazy"}),
                element("figcaption", {}, `#${rank + 1} ${n.label} · d=${n.distance.toFixed(3)}`),
                element("div", {title: n.name, class: "name"}, n.name.split("/").pop()));
    grid.appendChild(card);
  });
}

async function query(file) {
  if (!file) return;
  $("query-image").src = URL.createObjectURL(file);
  const body = new FormData();
  body.append("image", file);
  body.append("k", $("k").value);
  if ($("explain").checked) body.append("explain", $("method").value);
  setStatus("searching…");
  const response = await fetch("/api/query", {method: "POST", body});
  const answer = await response.json();
  if (!response.ok) {
    setStatus(`${response.status}: ${answer.error}`, true);
    return;
  }
  showPrediction(answer.prediction);
  showNeighbours(answer.neighbours);
  $("explanation").hidden = !answer.explanation;
  if (answer.explanation) $("explanation").src = answer.explanation.image;
  $("answer").hidden = false;
  setStatus(`${answer.neighbours.length} nearest neighbours`);
}

function drawCurve(svg, recall, precision, low, high) {
  const w = 420, h = 320, pad = 40;
  const x = (r) => pad + r * (w - 2 * pad), y = (p) => h - pad - p * (h - 2 * pad);
  const ns = "http://www.w3.org/2000/svg";
  const add = (tag, attrs) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    svg.appendChild(e);
    return e;
  };
  svg.replaceChildren();
  add("rect", {x: pad, y: pad, width: w - 2 * pad, height: h - 2 * pad, fill: "none", stroke: "#999"});
  if (low && high) {
    const band = recall.map((r, i) => `${x(r)},${y(high[i])}`).concat(
        recall.map((r, i) => `${x(r)},${y(low[i])}`).reverse());
    add("polygon", {points: band.join(" "), fill: "#48a4"});
  }
  add("polyline", {points: recall.map((r, i) => `${x(r)},${y(precision[i])}`).join(" "),
                   fill: "none", stroke: "#248", "stroke-width": 2});
  for (const t of [0, 0.5, 1]) {
    add("text", {x: x(t) - 6, y: h - pad + 16, "font-size": 11}).textContent = t;
    add("text", {x: 8, y: y(t) + 4, "font-size": 11}).textContent = t;
  }
  add("text", {x: w / 2 - 20, y: h - 6, "font-size": 12}).textContent = "recall";
  add("text", {x: 2, y: pad - 10, "font-size": 12}).textContent = "precision";
}

async function metrics() {
  const m = await (await fetch("/api/metrics")).json();
  const table = $("metrics-table");
  table.replaceChildren();
  const head = element("tr");
  head.append(element("th", {}, "measure"), element("th", {}, "value"), element("th", {}, "95 % interval"));
  table.appendChild(head);
  for (const key of ["P@1", "P@5", "P@10", "mAP", "random_mAP", "num_queries"]) {
    if (!(key in m)) continue;
    const row = element("tr");
    const ci = `${key}/ci95_low` in m ? `${m[key + "/ci95_low"].toFixed(3)} – ${m[key + "/ci95_high"].toFixed(3)}` : "";
    row.append(element("td", {}, key), element("td", {}, Number(m[key]).toFixed(key === "num_queries" ? 0 : 3)),
               element("td", {}, ci));
    table.appendChild(row);
  }
  if (m["pr_curve/recall"]) {
    drawCurve($("pr-curve"), m["pr_curve/recall"], m["pr_curve/precision"],
              m["pr_curve/precision/ci95_low"], m["pr_curve/precision/ci95_high"]);
  }
}

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
    for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== tab.dataset.view;
    if (tab.dataset.view === "metrics-view") metrics();
  });
}
$("file").addEventListener("change", () => query($("file").files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  query(e.dataTransfer.files[0]);
});
health();
