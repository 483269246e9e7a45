// The search page: asks /api/search (text) or /api/search/upload (an image, with or without text) and
// lists the results, with each result's text highlighted by what its words added to the score when
// "explain" is on. The search's settings (not its image) are kept in the page's address, so it can be
// linked to or bookmarked: /?query=...&k=5&filter=...&hybrid_weight=0.3&instruction=...
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
const instructionInput = document.getElementById("instruction");
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
    if (!kInput.value) kInput.value = limits.default_k;
    // The checkpoint's name only: a full path tells a reader nothing and overflows narrow screens.
    const model = info.checkpoint_name ? ` · model ${info.checkpoint_name}` : "";
    infoLine.textContent = `${info.index} · ${info.num_documents} documents${model}`;
    infoLine.title = info.checkpoint ?? "";
    instructionInput.closest("label").hidden = Object.keys(info.default_instructions ?? {}).length === 0;
  } catch (error) {
    infoLine.textContent = `index information unavailable (${error.message})`;
  }
}

async function fetchJson(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(`${response.status}: ${errorText(body.detail ?? body)}`);
  }
  return body;
}

// A service error's detail: its text, or for a refused field "field: what is wrong" per problem.
function errorText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((problem) => `${(problem.loc ?? []).slice(1).join(".") || "request"}: ${problem.msg}`).join("; ");
  }
  return JSON.stringify(detail);
}

// The metadata filter (JSON text, checked by the service), the BM25 share and the instruction, when given.
function searchOptions() {
  const options = {};
  if (filterInput.value.trim()) options.filter = filterInput.value.trim();
  if (hybridInput.value !== "") options.hybrid_weight = hybridInput.value;
  if (instructionInput.value.trim()) options.instruction = instructionInput.value.trim();
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
  const params = new URLSearchParams({ query, k: String(k), explain: String(explain), ...options });
  return fetchJson(`/api/search?${params}`);
}

// The page's address holds the search (question, k and options) so it can be shared; not the image.
function rememberSearch(query, k, options) {
  const params = new URLSearchParams({ ...(query ? { query } : {}), k: String(k), ...options });
  history.replaceState(null, "", `${window.location.pathname}?${params}`);
}

function restoreSearch(params) {
  queryInput.value = params.get("query") ?? params.get("q") ?? "";
  if (params.get("k")) kInput.value = params.get("k");
  filterInput.value = params.get("filter") ?? "";
  hybridInput.value = params.get("hybrid_weight") ?? "";
  instructionInput.value = params.get("instruction") ?? "";
  return queryInput.value.trim() !== "";
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

// What the score owes to what the highlighted words cannot show: each image, and the document as a
// whole (the markers the model adds around its text: [CLS], [D], [SEP]).
function contributionSummary(explanation) {
  const parts = new Map();
  for (const token of explanation.document_tokens) {
    if (token.contribution <= 0 || token.start !== null) continue;
    const name =
      token.kind === "image" ? `image ${token.image ?? 1}` : token.kind === "text" ? "whole document" : "other parts";
    parts.set(name, (parts.get(name) ?? 0) + token.contribution);
  }
  return [...parts].map(([name, value]) => `${name} ${value.toFixed(2)}`).join(" · ");
}

function showMetadata(list, metadata) {
  const entries = Object.entries(metadata ?? {});
  list.replaceChildren(
    ...entries.flatMap(([name, value]) => {
      const term = document.createElement("dt");
      term.textContent = name;
      const description = document.createElement("dd");
      description.textContent = typeof value === "string" ? value : JSON.stringify(value);
      return [term, description];
    }),
  );
  list.hidden = entries.length === 0;
}

function showImages(container, hit) {
  const urls = hit.image_urls?.length ? hit.image_urls : hit.image_url ? [hit.image_url] : [];
  container.replaceChildren(
    ...urls.map((url, i) => {
      const thumbnail = document.createElement("img");
      thumbnail.className = "thumbnail";
      thumbnail.src = url;
      thumbnail.alt = `image ${i + 1} of ${hit.id ?? hit.pid}`;
      thumbnail.title = `image ${i + 1}`;
      thumbnail.addEventListener("error", () => (thumbnail.hidden = true)); // missing on the server
      return thumbnail;
    }),
  );
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
      showMetadata(item.querySelector(".metadata"), hit.metadata);
      showImages(item.querySelector(".thumbnails"), hit);
      return item;
    }),
  );
  const withImage = response.with_image ? (response.query ? " (text + image)" : " (image only)") : "";
  statusLine.textContent = `${response.results.length} results in ${Math.round(response.took_ms)} ms${withImage}`;
}

function showError(message) {
  resultList.replaceChildren();
  statusLine.textContent = "";
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function clearError() {
  errorBox.hidden = true;
  errorBox.textContent = "";
}

async function search(event) {
  event?.preventDefault();
  clearError();
  const query = queryInput.value.trim();
  const image = imageInput.files[0] ?? null;
  if (!query && !image) {
    showError("Type a question or attach an image.");
    return;
  }
  searchButton.disabled = true;
  statusLine.textContent = "searching…";
  try {
    checkImage(image);
    const k = Number(kInput.value) || 10;
    const options = searchOptions();
    rememberSearch(query, k, options);
    showResults(await searchRequest(query, k, image, explainInput.checked, options));
  } catch (error) {
    showError(error.message);
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
form.addEventListener("input", clearError); // an error is about what was sent, not what is being typed
imageInput.addEventListener("change", previewImage);
clearImageButton.addEventListener("click", () => {
  imageInput.value = "";
  previewImage();
  clearError();
});

// A link like /?query=question&k=5 (or the older ?q=) runs that search on load.
const linked = restoreSearch(new URLSearchParams(window.location.search));
loadInfo().then(() => {
  if (linked) search();
});
