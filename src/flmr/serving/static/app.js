// The search page: asks /api/search (text) or /api/search/upload (text + image) and lists the results.
"use strict";

const form = document.getElementById("search-form");
const queryInput = document.getElementById("query");
const imageInput = document.getElementById("image");
const imagePreview = document.getElementById("image-preview");
const clearImageButton = document.getElementById("clear-image");
const kInput = document.getElementById("k");
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

function searchRequest(query, k, image) {
  if (image) {
    const data = new FormData();
    data.append("query", query);
    data.append("k", String(k));
    data.append("image", image);
    return fetchJson("/api/search/upload", { method: "POST", body: data });
  }
  const params = new URLSearchParams({ q: query, k: String(k) });
  return fetchJson(`/api/search?${params}`);
}

function checkImage(image) {
  if (image && limits && image.size > limits.max_image_bytes) {
    throw new Error(`the image has ${image.size} bytes; at most ${limits.max_image_bytes} are accepted`);
  }
}

function showResults(response) {
  resultList.replaceChildren(
    ...response.results.map((hit) => {
      const item = resultTemplate.content.firstElementChild.cloneNode(true);
      item.dataset.pid = hit.pid;
      item.querySelector(".rank").textContent = hit.rank;
      item.querySelector(".doc-id").textContent = hit.id ?? `pid ${hit.pid}`;
      item.querySelector(".score").textContent = `score ${hit.score.toFixed(3)}`;
      item.querySelector(".text").textContent = hit.text ?? "";
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
    showResults(await searchRequest(query, Number(kInput.value) || 10, image));
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
