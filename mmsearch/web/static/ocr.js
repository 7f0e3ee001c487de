// Text inside images on the search page: for a hit whose image has text read by OCR (`mmsearch index --ocr`),
// outline on its thumbnail the words of the query found there, and show the matching line (the hit's snippet).
// Word boxes come with the hit (metadata.ocr_words: [[word, x0, y0, x1, y1], ...] in the pixels of an image of
// metadata.ocr_size); an SVG laid over the thumbnail with the same crop as the picture's "object-fit: cover"
// puts them in place whatever the thumbnail's size.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";

  // Words as the keyword index splits them: letters, digits and underscores, case aside.
  function wordsOf(text) {
    return (String(text || "").toLowerCase().match(/[\p{L}\p{N}_]+/gu) || []);
  }

  function matchedBoxes(meta, query) {
    const wanted = new Set(wordsOf(query));
    if (!wanted.size || !Array.isArray(meta.ocr_words)) return [];
    return meta.ocr_words.filter((w) => Array.isArray(w) && w.length === 5 && wordsOf(w[0]).some((part) => wanted.has(part)));
  }

  function overlay(size, boxes) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${size[0]} ${size[1]}`);
    svg.setAttribute("preserveAspectRatio", "xMidYMid slice"); // the crop of object-fit: cover
    svg.setAttribute("class", "ocr-boxes");
    svg.setAttribute("aria-hidden", "true");
    Object.assign(svg.style, { position: "absolute", inset: "0", width: "100%", height: "100%", pointerEvents: "none" });
    const pad = Math.max(2, Math.round(Math.max(size[0], size[1]) / 200));
    for (const [word, x0, y0, x1, y1] of boxes) {
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", x0 - pad);
      rect.setAttribute("y", y0 - pad);
      rect.setAttribute("width", x1 - x0 + 2 * pad);
      rect.setAttribute("height", y1 - y0 + 2 * pad);
      rect.setAttribute("rx", pad);
      rect.setAttribute("fill", "rgba(255, 214, 0, 0.35)");
      rect.setAttribute("stroke", "#e0a800");
      rect.setAttribute("stroke-width", pad);
      rect.setAttribute("data-word", word);
      svg.append(rect);
    }
    return svg;
  }

  // Called by app.js for each result card: `card` is the <article>, `hit` the API hit, `query` the typed text.
  function decorate(card, hit, query) {
    const meta = (hit && hit.metadata) || {};
    if (hit.image_id !== hit.id || !meta.has_text) return; // the thumbnail is another item's picture, or has no text
    const thumb = card.querySelector(".thumb");
    const boxes = matchedBoxes(meta, query);
    if (thumb && boxes.length && Array.isArray(meta.ocr_size)) {
      thumb.style.position = "relative";
      thumb.append(overlay(meta.ocr_size, boxes));
    }
    if (hit.snippet) {
      const line = document.createElement("div");
      line.className = "ocr-snippet";
      line.title = "text in the image";
      Object.assign(line.style, { fontSize: ".8rem", color: "#555", fontStyle: "italic" });
      line.textContent = `“${hit.snippet}”`;
      const body = card.querySelector(".body");
      const score = body && body.querySelector(".score");
      if (score) body.insertBefore(line, score);
    }
  }

  window.mmsearchOcr = { decorate, matchedBoxes, wordsOf };
})();
