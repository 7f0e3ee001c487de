// Near-duplicates view of the search page: GET /v1/duplicates, one row per group, best copy first.
// Loaded after app.js and uses its helpers ($, api, showError); touches nothing else of the page.
"use strict";

const DUP_PAGE = 20;
const dupState = { offset: 0, threshold: 0.95, total: 0 };

function dupCopy(copy, isBest) {
  const el = document.createElement("figure");
  el.className = "dup-copy" + (isBest ? " best" : "");
  el.dataset.id = copy.id;
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = copy.path || `item ${copy.id}`;
  img.src = `/v1/items/${copy.id}/thumbnail`;
  const caption = document.createElement("figcaption");
  const name = document.createElement("div");
  name.className = "dup-name";
  name.textContent = (copy.path || "").split("/").pop() || `item ${copy.id}`;
  name.title = copy.path || "";
  const facts = document.createElement("div");
  facts.className = "dup-facts";
  const size = copy.width && copy.height ? `${copy.width}×${copy.height}` : "size unknown";
  const when = copy.taken ? copy.taken.slice(0, 10) : "";
  facts.textContent = [isBest ? "best copy" : `similarity ${copy.similarity.toFixed(3)}`, size, when].filter(Boolean).join(" · ");
  caption.append(name, facts);
  el.append(img, caption);
  return el;
}

function dupGroup(group) {
  const row = document.createElement("section");
  row.className = "dup-group";
  row.dataset.best = group.best;
  row.append(...group.copies.map((copy, i) => dupCopy(copy, i === 0)));
  return row;
}

async function loadDuplicates(offset) {
  const list = $("dup-groups");
  const status = $("dup-status");
  status.textContent = "Looking for near-duplicates…";
  showError("");
  try {
    const params = new URLSearchParams({ threshold: dupState.threshold, limit: DUP_PAGE, offset });
    const body = await api(`/v1/duplicates?${params}`);
    if (offset === 0) list.replaceChildren();
    list.append(...body.groups.map(dupGroup));
    dupState.offset = offset + body.groups.length;
    dupState.total = body.total_groups;
    status.textContent = body.total_groups
      ? `${body.total_groups} group${body.total_groups === 1 ? "" : "s"} of near-identical images among ${body.images} (best copy first)`
      : `No near-duplicates among ${body.images} images.`;
    $("dup-more").hidden = dupState.offset >= dupState.total;
  } catch (err) {
    status.textContent = "";
    showError(`Cannot list duplicates: ${err.message}`);
  }
}

function showDuplicates(on) {
  $("duplicates").hidden = !on;
  $("results").hidden = on;
  $("status").hidden = on;
  document.querySelector(".pager").hidden = on;
  if (on) loadDuplicates(0);
}

function wireDuplicates() {
  $("dup-open").addEventListener("click", () => showDuplicates(true));
  $("dup-close").addEventListener("click", () => showDuplicates(false));
  $("dup-more").addEventListener("click", () => loadDuplicates(dupState.offset));
  $("dup-threshold").addEventListener("change", (e) => {
    const value = Number(e.target.value);
    if (value > 0 && value <= 1) { dupState.threshold = value; loadDuplicates(0); }
  });
}

wireDuplicates();
