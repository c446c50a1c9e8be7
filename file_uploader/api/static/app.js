// The file_uploader page: a plain client of the /api endpoints, no framework, no build step.
"use strict";

const TOKEN_KEY = "file_uploader.token";
const TOKEN_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const DOWNLOAD_LINK_SECONDS = 60; // a download goes through a short-lived share link

const $ = (selector) => document.querySelector(selector);
let token = null;
let files = [];
let folders = [];
let folder = ""; // the folder shown: "" for the top, else "photos/2024/"
let sort = { key: "name", ascending: true };
const IMAGE_RE = /\.(png|jpe?g|webp|gif)$/i;
const THUMBNAIL_SIZE = 64;
const thumbnails = new Map(); // name + modified -> blob: URL of its thumbnail

// ---- formatting -------------------------------------------------------------

function formatSize(bytes) {
  if (bytes < 1000) return `${bytes} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = -1;
  do {
    value /= 1000;
    unit += 1;
  } while (value >= 1000 && unit < units.length - 1);
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function formatDate(iso) {
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function fileUrl(name, suffix = "") {
  return "/api/files/" + name.split("/").map(encodeURIComponent).join("/") + suffix;
}

function baseName(name) {
  return name.replace(/\/$/, "").split("/").pop();
}

// An API failure, in words a person understands.
function explain(status, body) {
  const code = body && body.error ? body.error.code : "";
  const message = body && body.error ? body.error.message : "";
  if (status === 0) return "The connection to the server was lost. Check your network and try again.";
  if (status === 401) return "The server did not accept your token. Check it above.";
  if (status === 404) return "That file no longer exists.";
  if (status === 413) return `This file is too big for this server (${message}).`;
  if (code === "invalid_name") return `This file name cannot be used: ${message}.`;
  if (status === 408) return "The upload stalled for too long and was stopped. Try again.";
  if (status === 503) return "The storage is busy or unreachable right now. Try again in a moment.";
  if (status >= 500) return "The server could not store or read the file. Try again later.";
  return message || `The server answered ${status}.`;
}

async function api(method, url, options = {}) {
  let response;
  try {
    response = await fetch(url, { method, ...options, headers: { "X-Auth-Token": token, ...(options.headers || {}) } });
  } catch {
    throw new Error(explain(0));
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new Error(explain(response.status, body));
  }
  return response;
}

// ---- token ------------------------------------------------------------------

function useToken(value) {
  value = value.trim();
  if (!TOKEN_RE.test(value)) {
    $("#token-status").textContent = "A token looks like 18ce71ad-1391-46c7-91de-56948fda0d8a. Paste yours or generate one.";
    $("#token-status").className = "status error";
    return;
  }
  token = value.toLowerCase();
  localStorage.setItem(TOKEN_KEY, token);
  $("#token").value = token;
  $("#token-status").textContent = "Token saved in this browser.";
  $("#token-status").className = "status";
  $("#upload-section").hidden = false;
  $("#files-section").hidden = false;
  for (const url of thumbnails.values()) URL.revokeObjectURL(url);
  thumbnails.clear();
  refresh();
}

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  useToken($("#token").value);
});

$("#token-new").addEventListener("click", () => {
  if (token && !confirm("A new token is a new, empty space. Your current files stay under the old token: make sure you have kept it. Continue?")) return;
  useToken(crypto.randomUUID());
});

// ---- uploads ----------------------------------------------------------------

function upload(file) {
  const name = folder + file.name;
  const row = document.createElement("li");
  row.dataset.name = name;
  row.innerHTML = '<span class="name"></span><progress max="1" value="0"></progress><span class="detail">waiting…</span><button type="button" class="secondary cancel">Cancel</button>';
  row.querySelector(".name").textContent = name;
  $("#uploads").prepend(row);
  const bar = row.querySelector("progress");
  const detail = row.querySelector(".detail");
  const cancel = row.querySelector(".cancel");

  const xhr = new XMLHttpRequest();
  const started = performance.now();
  xhr.open("PUT", fileUrl(name));
  xhr.setRequestHeader("X-Auth-Token", token);
  xhr.upload.addEventListener("progress", (event) => {
    const total = event.lengthComputable ? event.total : file.size;
    const seconds = (performance.now() - started) / 1000;
    bar.value = total ? event.loaded / total : 1;
    const speed = seconds > 0 ? ` · ${formatSize(event.loaded / seconds)}/s` : "";
    detail.textContent = `${formatSize(event.loaded)} of ${formatSize(total)}${speed}`;
  });
  const finish = (state, text) => {
    row.classList.add(state);
    detail.textContent = text;
    cancel.remove();
  };
  xhr.addEventListener("load", () => {
    if (xhr.status >= 200 && xhr.status < 300) {
      const seconds = (performance.now() - started) / 1000;
      bar.value = 1;
      finish("done", `${formatSize(file.size)} uploaded in ${seconds.toFixed(1)} s`);
      refresh();
    } else {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      finish("failed", explain(xhr.status, body));
    }
  });
  xhr.addEventListener("error", () => finish("failed", explain(0)));
  xhr.addEventListener("abort", () => finish("failed", "Cancelled. Nothing was stored (an older file of the same name is untouched)."));
  cancel.addEventListener("click", () => xhr.abort());
  xhr.send(file);
}

function uploadAll(fileList) {
  for (const file of fileList) upload(file);
}

const drop = $("#drop");
$("#picker").addEventListener("change", (event) => {
  uploadAll(event.target.files);
  event.target.value = "";
});
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  uploadAll(event.dataTransfer.files);
});

// ---- the list ---------------------------------------------------------------

// One folder at a time: its sub-folders and files, every page of the listing.
async function refresh() {
  try {
    const found = { folders: [], files: [] };
    let after = null;
    do {
      const query = new URLSearchParams({ prefix: folder, delimiter: "/" });
      if (after) query.set("after", after);
      const page = await (await api("GET", `/api/files?${query}`)).json();
      found.folders.push(...page.folders);
      found.files.push(...page.files);
      after = page.next;
    } while (after);
    folders = found.folders;
    files = found.files;
    $("#list-error").hidden = true;
  } catch (error) {
    $("#list-error").textContent = error.message;
    $("#list-error").hidden = false;
  }
  render();
}

function openFolder(target) {
  folder = target;
  refresh();
}

function renderCrumbs() {
  const crumbs = $("#crumbs");
  const parts = folder ? folder.slice(0, -1).split("/") : [];
  const top = document.createElement("button");
  top.type = "button";
  top.className = "link crumb";
  top.dataset.folder = "";
  top.textContent = "All files";
  top.addEventListener("click", () => openFolder(""));
  const items = [top];
  parts.forEach((part, index) => {
    const separator = document.createElement("span");
    separator.className = "sep";
    separator.textContent = "/";
    const target = parts.slice(0, index + 1).join("/") + "/";
    const crumb = document.createElement("button");
    crumb.type = "button";
    crumb.className = "link crumb";
    crumb.dataset.folder = target;
    crumb.textContent = part;
    crumb.addEventListener("click", () => openFolder(target));
    items.push(separator, crumb);
  });
  crumbs.replaceChildren(...items);
}

function render() {
  const { key, ascending } = sort;
  const sorted = [...files].sort((a, b) => {
    const order = key === "name" ? a.name.localeCompare(b.name) : key === "size" ? a.size - b.size : a.modified.localeCompare(b.modified);
    return ascending ? order : -order;
  });
  const body = $("#files tbody");
  body.replaceChildren(...folders.map(folderRow), ...sorted.map(row));
  $("#empty").hidden = files.length + folders.length > 0;
  renderCrumbs();
  for (const button of document.querySelectorAll("button.sort")) {
    if (button.dataset.key === key) button.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    else button.removeAttribute("aria-sort");
  }
}

function folderRow(name) {
  const tr = document.createElement("tr");
  tr.className = "folder";
  tr.dataset.folder = name;
  tr.innerHTML = '<td class="thumb"></td><td class="name"><button type="button" class="link open"></button></td>' +
    '<td class="num size"></td><td class="modified"></td><td class="public"></td><td class="actions">' +
    '<button type="button" class="danger delete-folder">Delete folder</button></td>';
  tr.querySelector(".open").textContent = baseName(name) + "/";
  tr.querySelector(".open").addEventListener("click", () => openFolder(name));
  tr.querySelector(".delete-folder").addEventListener("click", () => removeFolder(name).catch(report));
  return tr;
}

function row(file) {
  const tr = document.createElement("tr");
  tr.dataset.name = file.name;
  tr.dataset.size = file.size;
  tr.innerHTML = '<td class="thumb"></td><td class="name"></td><td class="num size"></td><td class="modified"></td>' +
    '<td class="public"><input type="checkbox" class="public-toggle"></td><td class="actions">' +
    '<button type="button" class="secondary download">Download</button>' +
    '<button type="button" class="secondary share">Share</button>' +
    '<button type="button" class="danger delete">Delete</button></td>';
  tr.querySelector(".name").textContent = baseName(file.name);
  tr.querySelector(".name").title = file.name;
  tr.querySelector(".size").textContent = formatSize(file.size);
  tr.querySelector(".size").title = `${file.size} bytes`;
  tr.querySelector(".modified").textContent = formatDate(file.modified);
  const toggle = tr.querySelector(".public-toggle");
  toggle.checked = file.public;
  toggle.setAttribute("aria-label", `${file.name} is public`);
  toggle.addEventListener("change", () => setPublic(file, toggle).catch(report));
  tr.querySelector(".download").addEventListener("click", () => download(file.name).catch(report));
  tr.querySelector(".share").addEventListener("click", () => share(file.name).catch(report));
  tr.querySelector(".delete").addEventListener("click", () => remove(file.name).catch(report));
  if (IMAGE_RE.test(file.name)) showThumbnail(file, tr.querySelector(".thumb"));
  return tr;
}

// ---- thumbnails and the viewer ------------------------------------------------

// The API needs the token header, which an <img src> cannot send: thumbnails are
// fetched and shown as blob: URLs, a few at a time.
let thumbnailsRunning = 0;
const thumbnailQueue = [];

function showThumbnail(file, cell) {
  const id = `${file.name}\n${file.modified}`;
  const place = (url) => {
    const img = document.createElement("img");
    img.src = url;
    img.alt = `preview of ${baseName(file.name)}`;
    img.addEventListener("click", () => view(file.name).catch(report));
    cell.replaceChildren(img);
  };
  if (thumbnails.has(id)) return place(thumbnails.get(id));
  thumbnailQueue.push({ file, id, place });
  pumpThumbnails();
}

async function pumpThumbnails() {
  while (thumbnailsRunning < 4 && thumbnailQueue.length) {
    const { file, id, place } = thumbnailQueue.shift();
    thumbnailsRunning += 1;
    api("GET", fileUrl(file.name, `?thumbnail=${THUMBNAIL_SIZE}`), { headers: { Accept: "image/webp,image/jpeg" } })
      .then((response) => response.blob())
      .then((blob) => {
        const url = URL.createObjectURL(blob);
        thumbnails.set(id, url);
        place(url);
      })
      .catch(() => { /* not an image after all: the row stays without a preview */ })
      .finally(() => {
        thumbnailsRunning -= 1;
        pumpThumbnails();
      });
  }
}

async function view(name) {
  const response = await api("GET", fileUrl(name, "?inline=1"));
  const image = $("#viewer-image");
  if (image.src.startsWith("blob:")) URL.revokeObjectURL(image.src);
  image.src = URL.createObjectURL(await response.blob());
  image.alt = name;
  $("#viewer-title").textContent = name;
  $("#viewer").showModal();
}

$("#viewer").addEventListener("close", () => {
  const image = $("#viewer-image");
  if (image.src.startsWith("blob:")) URL.revokeObjectURL(image.src);
  image.removeAttribute("src");
});

function report(error) {
  $("#list-error").textContent = error.message;
  $("#list-error").hidden = false;
}

async function shareLink(name, seconds) {
  const response = await api("POST", fileUrl(name, "/share"), {
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(seconds ? { expires_in: seconds } : {}),
  });
  return response.json();
}

// The API needs a header a plain link cannot send, so a download follows a
// short-lived share link: the browser streams it to disk, whatever its size.
async function download(name) {
  const link = await shareLink(name, DOWNLOAD_LINK_SECONDS);
  const a = document.createElement("a");
  a.href = link.url;
  a.download = name.split("/").pop();
  document.body.append(a);
  a.click();
  a.remove();
}

async function share(name) {
  const link = await shareLink(name);
  $("#share-url").value = link.url;
  $("#share-expiry").textContent = formatDate(link.expires_at);
  $("#share-box").hidden = false;
  await copy(link.url);
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    $("#share-copied").textContent = " (copied)";
  } catch {
    // No clipboard outside a secure context: leave the link selected instead.
    $("#share-copied").textContent = " (select and copy it)";
    $("#share-url").select();
  }
}

async function remove(name) {
  if (!confirm(`Delete "${name}"? This cannot be undone.`)) return;
  await api("DELETE", fileUrl(name));
  await refresh();
}

async function removeFolder(name) {
  if (!confirm(`Delete the folder "${name}" and everything in it? This cannot be undone.`)) return;
  await api("DELETE", fileUrl(name.slice(0, -1)) + "/?recursive=1");
  await refresh();
}

async function setPublic(file, toggle) {
  try {
    await api("PATCH", fileUrl(file.name), {
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ public: toggle.checked }),
    });
    file.public = toggle.checked;
  } catch (error) {
    toggle.checked = file.public;
    throw error;
  }
  loadLibrary();
}

// ---- the public library -------------------------------------------------------

let libraryNext = null;

async function loadLibrary(more = false) {
  const query = new URLSearchParams({ limit: "24" });
  if (more && libraryNext) query.set("after", libraryNext);
  let page;
  try {
    const response = await fetch(`/api/public?${query}`);
    if (!response.ok) return;
    page = await response.json();
  } catch {
    return;
  }
  libraryNext = page.next;
  const items = page.files.map(libraryItem);
  if (more) $("#library").append(...items);
  else $("#library").replaceChildren(...items);
  $("#library-empty").hidden = $("#library").children.length > 0;
  $("#library-more").hidden = !libraryNext;
}

function libraryItem(file) {
  const li = document.createElement("li");
  li.dataset.id = file.id;
  li.dataset.name = file.name;
  li.innerHTML = '<a class="open" target="_blank" rel="noopener"></a><div class="meta"></div>' +
    '<a class="download secondary">Download</a>';
  const open = li.querySelector(".open");
  const inline = /^(image|audio|video)\//.test(file.type) || file.type === "application/pdf" || file.type === "text/plain";
  open.href = inline ? `${file.url}?inline=1` : file.url;
  if (IMAGE_RE.test(file.name)) {
    const img = document.createElement("img");
    img.src = `${file.url}?thumbnail=256`; // public: no token, so a plain same-origin URL
    img.alt = file.name;
    img.loading = "lazy";
    open.append(img);
  }
  open.append(file.name);
  li.querySelector(".meta").textContent = `${formatSize(file.size)} · ${formatDate(file.published)}`;
  li.querySelector(".download").href = file.url;
  return li;
}

$("#library-refresh").addEventListener("click", () => loadLibrary());
$("#library-more").addEventListener("click", () => loadLibrary(true));

$("#share-copy").addEventListener("click", () => copy($("#share-url").value));
$("#refresh").addEventListener("click", refresh);
for (const button of document.querySelectorAll("button.sort")) {
  button.addEventListener("click", () => {
    const key = button.dataset.key;
    sort = { key, ascending: sort.key === key ? !sort.ascending : key === "name" };
    render();
  });
}

// With JavaScript, the plain form gives way to the full page.
$("#plain-section").hidden = true;
$("#token-section").hidden = false;
$("#library-section").hidden = false;
loadLibrary();

const saved = localStorage.getItem(TOKEN_KEY);
if (saved) useToken(saved);
