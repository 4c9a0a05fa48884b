// The tbh search page: upload an image (or click a result) -> POST /query -> a grid of neighbours.
// Plain DOM, no framework, no CDN. Everything from the server is shown with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
let bits = 32;
let lastQuery = null; // {file} or {row, path}
let blobUrls = [];

function headers(extra = {}) {
  const token = sessionStorage.getItem("tbh-token");
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (response.status === 401) $("token-form").hidden = false;
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error || message;
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

async function thumbnailInto(img, row) {
  try {
    const blob = await (await api(`/items/${row}/thumbnail`)).blob();
    const url = URL.createObjectURL(blob);
    blobUrls.push(url);
    img.src = url;
  } catch (_) {
    img.alt = "not readable";
  }
}

function searchParams() {
  const params = new URLSearchParams({ top: $("top").value || "10" });
  const radius = Number($("radius").value);
  if (radius < bits) params.set("radius", String(radius));
  return params;
}

async function runQuery() {
  if (!lastQuery) return;
  let options;
  if (lastQuery.file) {
    const form = new FormData();
    form.append("image", lastQuery.file, lastQuery.file.name);
    options = { method: "POST", body: form };
  } else {
    options = {
      method: "POST",
      body: JSON.stringify({ row: lastQuery.row }),
      headers: { "Content-Type": "application/json" },
    };
  }
  setStatus("searching…");
  try {
    const started = performance.now();
    const [result] = await (await api(`/query?${searchParams()}`, options)).json();
    const ms = Math.round(performance.now() - started);
    render(result.neighbours);
    setStatus(`${result.neighbours.length} results for ${result.query} in ${ms} ms`);
  } catch (error) {
    setStatus(error.message, true);
  }
}

function render(neighbours) {
  blobUrls.forEach((url) => URL.revokeObjectURL(url));
  blobUrls = [];
  const grid = $("results");
  grid.replaceChildren();
  for (const n of neighbours) {
    const figure = document.createElement("figure");
    figure.className = "result";
    figure.dataset.row = n.row;
    figure.title = `${n.path} (item ${n.row}): click to search from it`;
    const img = document.createElement("img");
    img.alt = n.path;
    const caption = document.createElement("figcaption");
    const label = n.label === null ? "" : ` · ${n.label}`;
    caption.textContent = `#${n.rank} · d=${n.distance}${label}`;
    const path = document.createElement("div");
    path.textContent = n.path;
    caption.append(path);
    figure.append(img, caption);
    figure.addEventListener("click", () => queryItem(n.row, n.path));
    grid.append(figure);
    thumbnailInto(img, n.row);
  }
}

function showQuery(src, caption) {
  $("query").hidden = false;
  $("query-image").src = src;
  $("query-caption").textContent = caption;
}

function queryFile(file) {
  lastQuery = { file };
  showQuery(URL.createObjectURL(file), `query: ${file.name}`);
  runQuery();
}

function queryItem(row, path) {
  lastQuery = { row, path };
  showQuery("", `query: item ${row} · ${path}`);
  thumbnailInto($("query-image"), row);
  runQuery();
  window.scrollTo({ top: 0, behavior: "smooth" });
}

async function loadStats() {
  try {
    const stats = await (await api("/stats")).json();
    bits = stats.bits;
    $("radius").max = String(bits);
    $("radius").value = String(bits);
    $("radius-value").textContent = "any";
    $("stats").textContent =
      `${stats.rows.toLocaleString()} images · ${stats.bits} bits · ${stats.model} on ${stats.provider}`;
  } catch (error) {
    $("stats").textContent = error.message;
  }
}

function setup() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => e.target.files[0] && queryFile(e.target.files[0]));
  drop.addEventListener("keydown", (e) => (e.key === "Enter" || e.key === " ") && $("file").click());
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) queryFile(e.dataTransfer.files[0]);
  });
  $("radius").addEventListener("input", () => {
    const r = Number($("radius").value);
    $("radius-value").textContent = r < bits ? String(r) : "any";
  });
  $("radius").addEventListener("change", runQuery);
  $("top").addEventListener("change", runQuery);
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("tbh-token", $("token").value.trim());
    $("token-form").hidden = true;
    loadStats().then(runQuery);
  });
  loadStats();
}

setup();
