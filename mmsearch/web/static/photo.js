// Photo libraries on the search page (issue 14): loaded after app.js, whose filter builder and result
// cards it extends when the index holds photos (a `taken` field): facets for the date (range plus a
// month histogram), the place and the camera come first, the technical fields stay out of the way,
// "Taken" sorting both ways, each card shows when and where its photo was taken, and a phone's HEIC
// photo can be dropped as a query (browsers other than Safari cannot draw it, so it goes up as is and
// the server decodes it).
"use strict";

const PHOTO_FACETS = ["taken", "country", "city", "camera", "album", "lens"]; // shown first, in this order
const PHOTO_TECHNICAL = new Set([
  "taken_source", "gps_lat", "gps_lon", "gps_alt", "width", "height", "camera_make", "camera_model",
  "exposure", "aperture", "focal_length", "iso", "region", "description",
]);
const HEIF_FILE = /\.(heic|heif|hif)$/i;

function isPhotoLibrary(fields) { return fields.some((f) => f.name === "taken"); }

function photoFacets(fields) {
  const rank = (f) => { const i = PHOTO_FACETS.indexOf(f.name); return i < 0 ? PHOTO_FACETS.length : i; };
  return fields
    .filter((f) => !PHOTO_TECHNICAL.has(f.name))
    .map((f) => (f.histogram ? { ...f, values: null } : f)) // a date field is a range, never a list of timestamps
    .sort((a, b) => rank(a) - rank(b));
}

function monthEnd(bucket) {
  // "2023-06" -> "2023-06-30"; "2023" -> "2023-12-31" (a bare day is inclusive on the server)
  if (bucket.length === 4) return `${bucket}-12-31`;
  const [y, m] = bucket.split("-").map(Number);
  return `${bucket}-${String(new Date(Date.UTC(y, m, 0)).getUTCDate()).padStart(2, "0")}`;
}

function histogram(field) {
  const box = document.querySelector(`#filters fieldset[data-field="${field.name}"]`);
  if (!box || !field.histogram || field.histogram.length < 2) return;
  const most = Math.max(...field.histogram.map((b) => b.count));
  const bars = document.createElement("div");
  bars.className = "histogram";
  bars.setAttribute("role", "group");
  bars.setAttribute("aria-label", `${field.name} per period`);
  for (const b of field.histogram) {
    const bar = document.createElement("button");
    bar.type = "button";
    bar.className = "bar";
    bar.style.height = `${Math.max(8, Math.round((100 * b.count) / most))}%`;
    bar.title = `${b.bucket}: ${b.count} photo${b.count === 1 ? "" : "s"}`;
    bar.setAttribute("aria-label", bar.title);
    bar.addEventListener("click", () => {
      const from = b.bucket.length === 4 ? `${b.bucket}-01-01` : `${b.bucket}-01`;
      $(`f-${safeId(field.name)}-min`).value = from;
      $(`f-${safeId(field.name)}-max`).value = monthEnd(b.bucket);
      search(0);
    });
    bars.append(bar);
  }
  box.insertBefore(bars, box.querySelector(".range"));
}

function photoLine(metadata) {
  const m = metadata || {};
  const when = typeof m.taken === "string" ? m.taken.slice(0, 10) : "";
  const where = [m.city, m.country].filter((v) => typeof v === "string").join(", ");
  const camera = typeof m.camera === "string" ? m.camera : "";
  return [when, where, camera].filter(Boolean).join(" · ");
}

const baseBuildFilters = buildFilters;
buildFilters = function (fields, products) { // eslint-disable-line no-global-assign
  if (!isPhotoLibrary(fields)) return baseBuildFilters(fields, products);
  baseBuildFilters(photoFacets(fields), products);
  const sort = $("sort");
  sort.append(new Option("Taken, newest first", "-taken"), new Option("Taken, oldest first", "taken"));
  const taken = fields.find((f) => f.name === "taken");
  if (taken) histogram(taken);
};

const baseCard = card;
card = function (hit) { // eslint-disable-line no-global-assign
  const el = baseCard(hit);
  const line = photoLine(hit.metadata);
  if (line) {
    const info = document.createElement("div");
    info.className = "taken";
    info.textContent = line;
    el.querySelector(".title").after(info);
  }
  return el;
};

const baseLoadImageFile = loadImageFile;
loadImageFile = function (file) { // eslint-disable-line no-global-assign
  if (!file || !HEIF_FILE.test(file.name)) return baseLoadImageFile(file);
  const reader = new FileReader();
  reader.onerror = () => showError(`Cannot read ${file.name}.`);
  reader.onload = () => { setImage(reader.result, file.name); search(0); };
  reader.readAsDataURL(file);
};
