// mmsearch search page: plain JS, no build step. Talks to POST /v1/query and GET /v1/fields.
"use strict";

const PAGE_SIZE = 12;
const HIDDEN_FIELDS = new Set(["product", "sku", "title", "description", "manifest", "role", "name", "id",
  "video", "timestamp", "document", "page", "pages", "unit", "ocr"]);
const MAX_UPLOAD_SIDE = 640; // photos are scaled down in the browser before upload

const state = { text: "", image: null, imageName: "", like: null, likeTitle: "", offset: 0, fields: [] };
const $ = (id) => document.getElementById(id);

function safeId(name) { return name.replace(/[^\w-]/g, "_"); }

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error("Cannot reach the search server. Is `mmsearch serve` running?");
  }
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    throw new Error((body && body.error) || `The server answered ${response.status}.`);
  }
  return body;
}

// ---- filters ----
function isDateLike(value) { return typeof value === "string" && /^\d{4}-\d{2}-\d{2}/.test(value); }

function buildFilters(fields, products) {
  const form = $("filters");
  form.replaceChildren();
  const sort = $("sort");
  for (const field of fields) {
    if (HIDDEN_FIELDS.has(field.name) || field.distinct <= 1) continue;
    const box = document.createElement("fieldset");
    box.dataset.field = field.name;
    const legend = document.createElement("legend");
    legend.textContent = field.name.replace(/_/g, " ");
    box.append(legend);
    if (field.type === "text" && field.values && field.distinct < Math.max(products, 2)) {
      box.dataset.kind = "in";
      for (const v of field.values) {
        const label = document.createElement("label");
        const input = document.createElement("input");
        input.type = "checkbox";
        input.name = "f-" + safeId(field.name);
        input.value = v.value;
        label.append(input, ` ${v.value} (${v.count})`);
        box.append(label);
      }
    } else if (field.type === "number" || (field.type === "text" && isDateLike(field.min) && isDateLike(field.max))) {
      box.dataset.kind = field.type === "number" ? "number" : "date";
      const range = document.createElement("div");
      range.className = "range";
      for (const [end, op] of [["min", "gte"], ["max", "lte"]]) {
        const input = document.createElement("input");
        input.type = field.type === "number" ? "number" : "date";
        input.step = "any";
        input.id = `f-${safeId(field.name)}-${end}`;
        input.dataset.op = op;
        input.placeholder = `${end} ${field[end]}`;
        input.setAttribute("aria-label", `${field.name} ${end}`);
        range.append(input);
      }
      box.append(range);
      if (field.type === "number") {
        for (const [label, value] of [[`${field.name} ↑`, field.name], [`${field.name} ↓`, "-" + field.name]]) {
          sort.append(new Option(label, value));
        }
      }
    } else {
      continue;
    }
    form.append(box);
  }
  if (!form.children.length) $("filters-box").hidden = true;
}

function currentFilter() {
  const filter = {};
  for (const box of $("filters").querySelectorAll("fieldset")) {
    const name = box.dataset.field;
    if (box.dataset.kind === "in") {
      const picked = [...box.querySelectorAll("input:checked")].map((i) => i.value);
      if (picked.length) filter[name] = { in: picked };
    } else {
      const cond = {};
      for (const input of box.querySelectorAll("input")) {
        if (input.value === "") continue;
        cond[input.dataset.op] = box.dataset.kind === "number" ? Number(input.value) : input.value;
      }
      if (Object.keys(cond).length) filter[name] = cond;
    }
  }
  return filter;
}

// ---- query image ----
function loadImageFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    showError(`${file.name} is not an image.`);
    return;
  }
  const reader = new FileReader();
  reader.onerror = () => showError(`Cannot read ${file.name}.`);
  reader.onload = () => {
    const img = new Image();
    img.onerror = () => showError(`${file.name} is not a readable image.`);
    img.onload = () => {
      const scale = Math.min(1, MAX_UPLOAD_SIDE / Math.max(img.width, img.height));
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(img.width * scale));
      canvas.height = Math.max(1, Math.round(img.height * scale));
      canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
      setImage(canvas.toDataURL("image/png"), file.name);
      search(0);
    };
    img.src = reader.result;
  };
  reader.readAsDataURL(file);
}

function setImage(dataUrl, name) {
  state.image = dataUrl;
  state.imageName = name;
  $("query-thumb").src = dataUrl || "";
  $("query-image-name").textContent = name || "";
  $("query-image").hidden = !dataUrl;
  $("drop-hint").hidden = !!dataUrl;
}

// ---- search ----
function mode() { return document.querySelector("input[name=mode]:checked").value; }

function requestBody(offset) {
  const terms = [];
  if (state.like !== null) {
    terms.push({ item_id: state.like, weight: 1 });
  } else {
    if (state.text) terms.push({ text: state.text, weight: 1 });
    if (state.image) terms.push({ image_b64: state.image, weight: 1 });
  }
  const body = { terms, filter: currentFilter(), mode: state.like !== null ? "vector" : mode(), target: "all", group: true, offset, limit: PAGE_SIZE };
  const sort = $("sort").value;
  if (sort) body.sort = sort;
  return body;
}

async function search(offset) {
  showError("");
  state.text = $("q").value.trim();
  if (state.like === null && !state.text && !state.image) {
    $("status").textContent = "Type a description or drop a photo to search.";
    return;
  }
  const body = requestBody(offset);
  $("status").textContent = "Searching…";
  try {
    const result = await api("/v1/query", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    state.offset = result.offset;
    render(result);
  } catch (err) {
    $("status").textContent = "";
    $("results").replaceChildren(); // no stale results under an error
    $("prev").disabled = $("next").disabled = true;
    $("page").textContent = "";
    showError(err.message);
  }
}

function titleOf(hit) {
  const m = hit.metadata || {};
  if (m.title) return String(m.title);
  if (m.video || m.document) return String(m.video || m.document).split("/").pop();
  if (hit.text) return hit.text.length > 80 ? hit.text.slice(0, 77) + "…" : hit.text;
  return hit.path ? hit.path.split("/").pop() : `item ${hit.id}`;
}

function priceOf(hit) {
  const m = hit.metadata || {};
  if (m.price === undefined || m.price === null) return "";
  const amount = typeof m.price === "number" ? m.price.toFixed(2) : String(m.price);
  return m.currency ? `${amount} ${m.currency}` : amount;
}

// ---- videos and PDFs: a hit stands for the file, its moments are the best frames or pages ----
function clock(seconds) {
  const total = Math.floor(seconds);
  const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
}

function momentLinks(hit) {
  const m = hit.metadata || {};
  if (!hit.moments || !hit.moments.length || !(m.video || m.document)) return null;
  const box = document.createElement("div");
  box.className = "moments";
  const seen = new Set();
  for (const moment of hit.moments) {
    const where = m.video ? moment.timestamp : moment.page;
    if (where === undefined || where === null || seen.has(where)) continue;
    seen.add(where);
    const link = document.createElement("a");
    // served by item id (with Range support): the browser starts playback at #t= and opens a PDF at #page=
    link.href = `/v1/items/${moment.id}/file#` + (m.video ? `t=${where}` : `page=${where}`);
    link.textContent = m.video ? clock(where) : `p. ${where}`;
    link.title = `score ${moment.score.toFixed(3)}`;
    link.target = "_blank";
    link.rel = "noopener";
    if (m.video) link.addEventListener("click", (e) => { e.preventDefault(); playAt(box, link.href); });
    box.append(link);
  }
  return box;
}

function playAt(box, href) {
  let player = box.parentElement.querySelector("video");
  if (!player) {
    player = document.createElement("video");
    player.controls = true;
    player.preload = "metadata";
    box.after(player);
  }
  player.src = href; // the #t= fragment makes the browser seek there (a Range request)
  player.play().catch(() => {}); // autoplay may be refused; the controls stay usable
}

function card(hit) {
  const el = document.createElement("article");
  el.className = "card";
  el.dataset.id = hit.id;
  if (hit.product) el.dataset.product = hit.product;
  const thumb = document.createElement("div");
  thumb.className = "thumb";
  if (hit.image_id !== null && hit.image_id !== undefined) {
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = titleOf(hit);
    img.src = `/v1/items/${hit.image_id}/thumbnail`;
    thumb.append(img);
  } else {
    thumb.textContent = "no image";
  }
  const body = document.createElement("div");
  body.className = "body";
  const title = document.createElement("div");
  title.className = "title";
  title.textContent = titleOf(hit);
  const price = document.createElement("div");
  price.className = "price";
  price.textContent = priceOf(hit);
  const meta = document.createElement("div");
  meta.className = "meta";
  const m = hit.metadata;
  const where = m.video && typeof m.timestamp === "number" ? `video, best at ${clock(m.timestamp)}`
    : m.document && m.page ? `PDF, page ${m.page}${m.pages ? " of " + m.pages : ""}` : null;
  meta.textContent = [m.brand, hit.product, where].filter(Boolean).join(" · ");
  const score = document.createElement("div");
  score.className = "score";
  const parts = [`score ${hit.score.toFixed(4)}`];
  if (hit.vector_score !== null && hit.keyword_score !== null) parts.push(`(vector ${hit.vector_score.toFixed(3)}, keyword ${hit.keyword_score.toFixed(2)})`);
  score.textContent = parts.join(" ");
  const like = document.createElement("button");
  like.type = "button";
  like.className = "like small";
  like.textContent = "More like this";
  like.addEventListener("click", () => moreLike(hit.image_id ?? hit.id, titleOf(hit)));
  body.append(title, price, meta, score);
  const moments = momentLinks(hit);
  if (moments) body.append(moments);
  body.append(like);
  el.append(thumb, body);
  if (window.mmsearchOcr) window.mmsearchOcr.decorate(el, hit, state.text); // text found in the image (ocr.js)
  return el;
}

function render(result) {
  const grid = $("results");
  window.mmsearchStrips.render(grid, result.hits, card); // pictures and texts in separate strips (strips.js)
  const first = result.offset + 1;
  const last = result.offset + result.hits.length;
  $("status").textContent = result.hits.length
    ? `Results ${first}–${last} of ${result.total} (${result.mode})`
    : "No products match. Try other words or fewer filters.";
  $("prev").disabled = result.offset === 0;
  $("next").disabled = !result.has_more;
  $("page").textContent = result.hits.length ? `Page ${Math.floor(result.offset / PAGE_SIZE) + 1}` : "";
}

function moreLike(itemId, title) {
  state.like = itemId;
  state.likeTitle = title;
  $("like-title").textContent = title;
  $("like-banner").hidden = false;
  search(0);
}

function clearLike() {
  state.like = null;
  $("like-banner").hidden = true;
  search(0);
}

// ---- wiring ----
function wire() {
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); state.like = null; $("like-banner").hidden = true; search(0); });
  $("file").addEventListener("change", (e) => loadImageFile(e.target.files[0]));
  $("clear-image").addEventListener("click", () => { setImage(null, ""); $("file").value = ""; search(0); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    loadImageFile(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
  $("filters").addEventListener("change", () => search(0));
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); search(0); });
  $("clear-filters").addEventListener("click", () => { $("filters").reset(); search(0); });
  for (const radio of document.querySelectorAll("input[name=mode]")) radio.addEventListener("change", () => search(0));
  $("sort").addEventListener("change", () => search(0));
  $("prev").addEventListener("click", () => search(Math.max(0, state.offset - PAGE_SIZE)));
  $("next").addEventListener("click", () => search(state.offset + PAGE_SIZE));
  $("clear-like").addEventListener("click", clearLike);
}

async function init() {
  wire();
  if (window.matchMedia("(max-width: 700px)").matches) $("filters-box").open = false; // results first on a phone
  try {
    const info = await api("/v1/fields");
    state.fields = info.fields;
    buildFilters(info.fields, info.products);
  } catch (err) {
    showError(`Cannot load the catalogue's fields: ${err.message}`);
  }
}

init();
