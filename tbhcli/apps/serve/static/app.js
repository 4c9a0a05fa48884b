// The tbh search page: browse the collection, query by an uploaded image, a stored image or a text,
// open any picture full size. The URL holds what is shown (back button, shareable links).
// Plain DOM, no framework, no CDN. Everything from the server is shown with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE = 60; // pictures per browsing page
let bits = 32;
let blobUrls = [];
let uploaded = null; // the last uploaded File: only this tab holds it (a URL cannot)

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
    let message = `the server answered ${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error || message;
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

async function pictureInto(img, path) {
  try {
    const blob = await (await api(path)).blob();
    const url = URL.createObjectURL(blob);
    blobUrls.push(url);
    img.classList.toggle("pixels", blob.type === "image/png");
    img.src = url;
  } catch (_) {
    img.alt = "not readable";
    img.classList.add("unreadable");
  }
}

function forgetPictures() {
  blobUrls.forEach((url) => URL.revokeObjectURL(url));
  blobUrls = [];
}

function fileSize(n) {
  if (n < 1024) return `${n} bytes`;
  return n < 1 << 20 ? `${(n / 1024).toFixed(0)} kB` : `${(n / (1 << 20)).toFixed(1)} MB`;
}

// ---- the URL is the state ---------------------------------------------------------------------

function readState() {
  const p = new URLSearchParams(location.search);
  const number = (key, fallback) => (p.has(key) && p.get(key) !== "" ? Number(p.get(key)) : fallback);
  return {
    row: number("row", null),
    text: p.get("text"),
    upload: p.get("upload"),
    top: number("top", 24),
    radius: number("radius", null),
    order: p.get("order") || "newest",
    page: Math.max(1, number("page", 1)),
  };
}

function go(params) {
  const url = `?${new URLSearchParams(params)}`;
  if (url !== location.search) history.pushState(null, "", url);
  show();
}

function searchSettings() {
  const settings = { top: $("top").value || "24" };
  const radius = Number($("radius").value);
  if (radius < bits) settings.radius = String(radius);
  return settings;
}

function showSettings(state) {
  $("top").value = String(state.top);
  const radius = state.radius === null ? bits : Math.min(state.radius, bits);
  $("radius").value = String(radius);
  $("radius-value").textContent = radius < bits ? String(radius) : "any";
  $("order").value = state.order;
}

// #results' data-shows names the URL state once its answer is on the page (tests wait for it).
async function show() {
  delete $("results").dataset.shows;
  await showState();
  $("results").dataset.shows = location.search;
}

async function showState() {
  const state = readState();
  showSettings(state);
  $("hint").hidden = true;
  if (state.row !== null) return searchRow(state);
  if (state.text) return searchText(state);
  if (state.upload) {
    if (uploaded && uploaded.name === state.upload) return searchUpload(state);
    $("query").hidden = true;
    setStatus(`drop ${state.upload} again to repeat that search: uploads are not kept.`);
    return;
  }
  return browse(state);
}

// ---- browsing ---------------------------------------------------------------------------------

async function browse(state) {
  $("query").hidden = true;
  setStatus("loading…");
  try {
    const offset = (state.page - 1) * PAGE;
    const params = new URLSearchParams({ offset, limit: PAGE, order: state.order });
    const page = await (await api(`/items?${params}`)).json();
    const pages = Math.max(1, Math.ceil(page.total / PAGE));
    render(page.items, state.order === "folder");
    $("pager").hidden = pages < 2;
    $("page-info").textContent = `page ${state.page} of ${pages}`;
    $("prev").disabled = state.page <= 1;
    $("next").disabled = state.page >= pages;
    if (!page.items.length) {
      setStatus(page.total ? `there is no page ${state.page}: the collection has ${pages}.`
        : "the store is empty: add images with tbh index.", Boolean(page.total));
      return;
    }
    const last = offset + page.items.length;
    setStatus(`${page.total.toLocaleString()} images · showing ${offset + 1}–${last} · ` +
      "click a picture to see it full size");
  } catch (error) {
    setStatus(error.message, true);
  }
}

// ---- queries ----------------------------------------------------------------------------------

async function search(state, options) {
  const params = new URLSearchParams({ top: state.top });
  if (state.radius !== null) params.set("radius", state.radius);
  $("pager").hidden = true;
  setStatus("searching…");
  try {
    const started = performance.now();
    const [result] = await (await api(`/query?${params}`, options)).json();
    const ms = Math.round(performance.now() - started);
    render(result.neighbours);
    setStatus(`${result.neighbours.length} results for ${result.query} in ${ms} ms`);
    if (!result.neighbours.length && state.radius !== null) await explainRadius(state, options);
  } catch (error) {
    render([]);
    setStatus(error.message, true);
  }
}

// No result within the radius: say so, how far the nearest one is, and offer to widen it.
async function explainRadius(state, options) {
  const [nearest] = await (await api("/query?top=1", options)).json();
  const d = nearest.neighbours.length ? nearest.neighbours[0].distance : null;
  $("hint-text").textContent = d === null
    ? "The store is empty."
    : `No image lies within distance ${state.radius} of this query (radius ≤ ${state.radius} ` +
      `of ${bits} bits): the nearest is at distance ${d}.`;
  $("widen").hidden = d === null;
  $("widen").onclick = () => go({ ...currentQuery(), ...searchSettings(), radius: String(d) });
  $("hint").hidden = false;
}

function currentQuery() {
  const { row, text, upload } = readState();
  if (row !== null) return { row };
  if (text) return { text };
  return upload ? { upload } : {};
}

function jsonBody(body) {
  return { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } };
}

function searchRow(state) {
  showQuery("", `query: item ${state.row}`);
  pictureInto($("query-image"), `/items/${state.row}/thumbnail`);
  api(`/items/${state.row}`).then((r) => r.json())
    .then((item) => { $("query-caption").textContent = `query: item ${item.row} · ${item.path}`; })
    .catch(() => {});
  return search(state, jsonBody({ row: state.row }));
}

function searchText(state) {
  $("query").hidden = false;
  $("query-image").hidden = true;
  $("query-caption").textContent = `query: “${state.text}”`;
  $("text").value = state.text;
  return search(state, jsonBody({ text: state.text }));
}

function searchUpload(state) {
  showQuery(URL.createObjectURL(uploaded), `query: ${uploaded.name}`);
  const form = new FormData();
  form.append("image", uploaded, uploaded.name);
  return search(state, { method: "POST", body: form });
}

function showQuery(src, caption) {
  $("query").hidden = false;
  $("query-image").hidden = false;
  $("query-image").src = src;
  $("query-caption").textContent = caption;
}

// ---- the grid and the full-size view ----------------------------------------------------------

function folderOf(path) {
  const cut = path.lastIndexOf("/");
  return cut < 0 ? "(top folder)" : path.slice(0, cut);
}

// `items` are neighbours ({rank, distance, row, path, label}) or browsed items ({row, path, label}).
function render(items, withFolders = false) {
  forgetPictures();
  const grid = $("results");
  grid.replaceChildren();
  let folder = null;
  for (const n of items) {
    if (withFolders && folderOf(n.path) !== folder) {
      folder = folderOf(n.path);
      const heading = document.createElement("h2");
      heading.className = "folder";
      heading.textContent = folder;
      grid.append(heading);
    }
    const figure = document.createElement("figure");
    figure.className = "result";
    figure.dataset.row = n.row;
    figure.tabIndex = 0;
    figure.title = `${n.path} (item ${n.row}): click to see it full size`;
    const img = document.createElement("img");
    img.alt = n.path;
    const caption = document.createElement("figcaption");
    const facts = [];
    if (n.rank !== undefined) facts.push(`#${n.rank}`, `d=${n.distance}`);
    if (n.label !== null) facts.push(`label ${n.label}`);
    caption.textContent = facts.join(" · ");
    const path = document.createElement("div");
    path.className = "path";
    path.textContent = n.path;
    caption.append(path);
    figure.append(img, caption);
    const open = () => openView(n.row, n.distance);
    figure.addEventListener("click", open);
    figure.addEventListener("keydown", (e) => e.key === "Enter" && open());
    grid.append(figure);
    pictureInto(img, `/items/${n.row}/thumbnail`);
  }
}

async function openView(row, distance) {
  const view = $("view");
  $("view-image").removeAttribute("src");
  $("view-facts").replaceChildren();
  view.dataset.row = row;
  if (!view.open) view.showModal();
  pictureInto($("view-image"), `/items/${row}/image`);
  try {
    const item = await (await api(`/items/${row}`)).json();
    $("view-image").alt = item.path;
    const facts = [["path", item.path], ["item", String(item.row)]];
    if (item.label !== null) facts.push(["label", item.label]);
    if (item.width !== null) facts.push(["size", `${item.width} × ${item.height} px`]);
    if (item.file_bytes !== null) facts.push(["file", fileSize(item.file_bytes)]);
    if (distance !== undefined) facts.push(["distance", `${distance} of ${bits} bits`]);
    for (const [term, value] of facts) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      $("view-facts").append(dt, dd);
    }
  } catch (error) {
    const dd = document.createElement("dd");
    dd.className = "error";
    dd.textContent = error.message;
    $("view-facts").append(dd);
  }
}

// ---- set-up -----------------------------------------------------------------------------------

async function loadStats() {
  try {
    const stats = await (await api("/stats")).json();
    bits = stats.bits;
    $("radius").max = String(bits);
    $("text-form").hidden = !stats.text_queries;
    $("stats").textContent =
      `${stats.rows.toLocaleString()} images · ${stats.bits} bits · ${stats.model} on ${stats.provider}`;
    return true;
  } catch (error) {
    $("stats").textContent = error.message;
    return false;
  }
}

function querySettingsChanged() {
  const query = currentQuery();
  if (Object.keys(query).length) go({ ...query, ...searchSettings() });
}

function queryFile(file) {
  uploaded = file;
  go({ upload: file.name, ...searchSettings() });
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
  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (text) go({ text, ...searchSettings() });
  });
  $("radius").addEventListener("input", () => {
    const r = Number($("radius").value);
    $("radius-value").textContent = r < bits ? String(r) : "any";
  });
  $("radius").addEventListener("change", querySettingsChanged);
  $("top").addEventListener("change", querySettingsChanged);
  $("order").addEventListener("change", () => go({ order: $("order").value, page: "1" }));
  $("prev").addEventListener("click", () => go({ ...pageOf(-1) }));
  $("next").addEventListener("click", () => go({ ...pageOf(1) }));
  $("similar").addEventListener("click", () => {
    $("view").close();
    go({ row: $("view").dataset.row, ...searchSettings() });
    window.scrollTo({ top: 0 });
  });
  $("view").addEventListener("click", (e) => e.target === $("view") && $("view").close());
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("tbh-token", $("token").value.trim());
    $("token-form").hidden = true;
    loadStats().then(show);
  });
  window.addEventListener("popstate", show);
  loadStats().then((ok) => ok && show());
}

function pageOf(step) {
  const { order, page } = readState();
  return { order, page: String(page + step) };
}

setup();
