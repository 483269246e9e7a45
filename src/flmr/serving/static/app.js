// The search page: asks /api/search (text) or /api/search/upload (text + image) and lists the results,
// with each result's text highlighted by what its tokens added to the score when "explain" is on.
"use strict";

const form = document.getElementById("search-form");
const queryInput = document.getElementById("query");
const imageInput = document.getElementById("image");
const imagePreview = document.getElementById("image-preview");
const clearImageButton = document.getElementById("clear-image");
const kInput = document.getElementById("k");
const explainInput = document.getElementById("explain");
const filterInput = document.getElementById("filter");
const hybridInput = document.getElementById("hybrid-weight");
const searchButton = document.getElementById("search-button");
const statusLine = document.getElementById("status");
const errorBox = document.getElementById("error");
const resultList = document.getElementById("results");
const resultTemplate = document.getElementById("result-template");

let limits = null;

async function loadInfo() {
  const infoLine = document.getElementById("index-info");
  try {
    const info = await fetchJson("/api/info");
    limits = info.limits;
    kInput.max = limits.max_k;
    kInput.value = limits.default_k;
    const checkpoint = info.checkpoint ? ` · checkpoint ${info.checkpoint}` : "";
    infoLine.textContent = `${info.index} · ${info.num_documents} documents · ${info.search} search${checkpoint}`;
  } catch (error) {
    infoLine.textContent = `index information unavailable (${error.message})`;
  }
}

async function fetchJson(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

// The metadata filter (JSON text, checked by the service) and the BM25 share, when given.
function searchOptions() {
  const options = {};
  if (filterInput.value.trim()) options.filter = filterInput.value.trim();
  if (hybridInput.value !== "") options.hybrid_weight = hybridInput.value;
  return options;
}

function searchRequest(query, k, image, explain, options = {}) {
  if (image) {
    const data = new FormData();
    data.append("query", query);
    data.append("k", String(k));
    data.append("image", image);
    data.append("explain", String(explain));
    for (const [name, value] of Object.entries(options)) data.append(name, value);
    return fetchJson("/api/search/upload", { method: "POST", body: data });
  }
  const params = new URLSearchParams({ q: query, k: String(k), explain: String(explain), ...options });
  return fetchJson(`/api/search?${params}`);
}

// The text with one <mark> per matched token; its background alpha is the token's contribution
// relative to the largest of the page, and its tooltip names the query token that matched it best.
function highlightedText(text, explanation, largest) {
  const nodes = [];
  let cursor = 0;
  const tokens = explanation.document_tokens
    .filter((token) => token.start !== null && token.contribution > 0)
    .sort((a, b) => a.start - b.start);
  for (const token of tokens) {
    if (token.start < cursor) continue;
    nodes.push(document.createTextNode(text.slice(cursor, token.start)));
    const mark = document.createElement("mark");
    mark.className = "match";
    mark.textContent = text.slice(token.start, token.end);
    mark.style.setProperty("--alpha", (0.1 + 0.8 * token.contribution / largest).toFixed(3));
    mark.title = `matched by ${token.best_query} · adds ${token.contribution.toFixed(3)}`;
    mark.dataset.contribution = token.contribution;
    mark.dataset.query = token.best_query;
    nodes.push(mark);
    cursor = token.end;
  }
  nodes.push(document.createTextNode(text.slice(cursor)));
  return nodes;
}

// What the images and the special tokens ([CLS], [D], [SEP]) add, which the text cannot show.
function contributionSummary(explanation) {
  const parts = new Map();
  for (const token of explanation.document_tokens) {
    if (token.contribution <= 0 || token.start !== null) continue;
    const name = token.kind === "image" ? token.label : token.kind === "text" ? "special tokens" : "other vectors";
    parts.set(name, (parts.get(name) ?? 0) + token.contribution);
  }
  return [...parts].map(([name, value]) => `${name} ${value.toFixed(2)}`).join(" · ");
}

function checkImage(image) {
  if (image && limits && image.size > limits.max_image_bytes) {
    throw new Error(`the image has ${image.size} bytes; at most ${limits.max_image_bytes} are accepted`);
  }
}

function showResults(response) {
  const largest = Math.max(
    1e-6,
    ...response.results.flatMap((hit) => hit.explanation?.document_tokens.map((t) => t.contribution) ?? []),
  );
  resultList.replaceChildren(
    ...response.results.map((hit) => {
      const item = resultTemplate.content.firstElementChild.cloneNode(true);
      item.dataset.pid = hit.pid;
      item.querySelector(".rank").textContent = hit.rank;
      item.querySelector(".doc-id").textContent = hit.id ?? `pid ${hit.pid}`;
      item.querySelector(".score").textContent = `score ${hit.score.toFixed(3)}`;
      const text = item.querySelector(".text");
      if (hit.explanation) {
        text.replaceChildren(...highlightedText(hit.text ?? "", hit.explanation, largest));
        const summary = item.querySelector(".explanation-summary");
        summary.textContent = contributionSummary(hit.explanation);
        summary.hidden = !summary.textContent;
      } else {
        text.textContent = hit.text ?? "";
      }
      if (hit.image_url) {
        const thumbnail = item.querySelector(".thumbnail");
        thumbnail.src = hit.image_url;
        thumbnail.alt = `image of ${hit.id ?? hit.pid}`;
        thumbnail.hidden = false;
        thumbnail.addEventListener("error", () => (thumbnail.hidden = true)); // missing on the server
      }
      return item;
    }),
  );
  const withImage = response.with_image ? " (text + image)" : "";
  statusLine.textContent = `${response.results.length} results in ${Math.round(response.took_ms)} ms${withImage}`;
}

async function search(event) {
  event?.preventDefault();
  const query = queryInput.value.trim();
  if (!query) return;
  const image = imageInput.files[0] ?? null;
  errorBox.hidden = true;
  searchButton.disabled = true;
  statusLine.textContent = "searching…";
  try {
    checkImage(image);
    const k = Number(kInput.value) || 10;
    showResults(await searchRequest(query, k, image, explainInput.checked, searchOptions()));
  } catch (error) {
    resultList.replaceChildren();
    statusLine.textContent = "";
    errorBox.textContent = error.message;
    errorBox.hidden = false;
  } finally {
    searchButton.disabled = false;
  }
}

function previewImage() {
  const image = imageInput.files[0];
  if (imagePreview.src) URL.revokeObjectURL(imagePreview.src);
  imagePreview.hidden = clearImageButton.hidden = !image;
  if (image) imagePreview.src = URL.createObjectURL(image);
  else imagePreview.removeAttribute("src");
}

form.addEventListener("submit", search);
imageInput.addEventListener("change", previewImage);
clearImageButton.addEventListener("click", () => {
  imageInput.value = "";
  previewImage();
});

// A link like /?q=question runs that search on load.
const linkedQuery = new URLSearchParams(window.location.search).get("q");
loadInfo().then(() => {
  if (linkedQuery) {
    queryInput.value = linkedQuery;
    search();
  }
});
