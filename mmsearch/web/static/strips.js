// mmsearch search page: results in two strips, pictures and texts, instead of one grid where a text
// without a picture shows an empty "no image" box. The page searches everything (target "all"); the
// server ranks pictures and texts on one calibrated scale (docs/search.md, "Scores"), so each strip keeps
// the merged order. Loaded before app.js, which calls mmsearchStrips.render(container, hits, card).
"use strict";

window.mmsearchStrips = (() => {
  const EXCERPT_CHARS = 280;

  function hasPicture(hit) { return hit.image_id !== null && hit.image_id !== undefined; }

  // A text hit: app.js's card (title, score, "More like this") without the picture box, with the text itself.
  function textCard(hit, card) {
    const el = card(hit);
    el.classList.add("text-card");
    const thumb = el.querySelector(".thumb");
    if (thumb) thumb.remove();
    const excerpt = document.createElement("p");
    excerpt.className = "excerpt";
    const text = hit.text || "";
    excerpt.textContent = text.length > EXCERPT_CHARS ? text.slice(0, EXCERPT_CHARS - 1) + "…" : text;
    const title = el.querySelector(".title");
    if (title && title.textContent === text) title.textContent = hit.path ? hit.path.split("/").pop() : "Text";
    el.querySelector(".body").insertBefore(excerpt, el.querySelector(".price"));
    return el;
  }

  function strip(name, label, cards) {
    const section = document.createElement("section");
    section.className = `strip strip-${name}`;
    section.setAttribute("aria-label", label);
    const heading = document.createElement("h2");
    heading.textContent = `${label} (${cards.length})`;
    const grid = document.createElement("div");
    grid.className = "grid";
    grid.append(...cards);
    section.append(heading, grid);
    return section;
  }

  function render(container, hits, card) {
    const pictures = hits.filter(hasPicture);
    const texts = hits.filter((h) => !hasPicture(h));
    container.classList.remove("grid");
    const parts = [];
    if (pictures.length) parts.push(strip("pictures", "Pictures", pictures.map(card)));
    if (texts.length) parts.push(strip("texts", "Texts", texts.map((h) => textCard(h, card))));
    container.replaceChildren(...parts);
  }

  return { render };
})();
