// The file_uploader page: a plain client of the /api endpoints, no framework, no build step.
"use strict";

const TOKEN_KEY = "file_uploader.token";
const TOKEN_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const DOWNLOAD_LINK_SECONDS = 60; // a download goes through a short-lived share link

const $ = (selector) => document.querySelector(selector);
let token = null;
let files = [];
let sort = { key: "name", ascending: true };

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
  const row = document.createElement("li");
  row.dataset.name = file.name;
  row.innerHTML = '<span class="name"></span><progress max="1" value="0"></progress><span class="detail">waiting…</span><button type="button" class="secondary cancel">Cancel</button>';
  row.querySelector(".name").textContent = file.name;
  $("#uploads").prepend(row);
  const bar = row.querySelector("progress");
  const detail = row.querySelector(".detail");
  const cancel = row.querySelector(".cancel");

  const xhr = new XMLHttpRequest();
  const started = performance.now();
  xhr.open("PUT", fileUrl(file.name));
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

async function refresh() {
  try {
    const response = await api("GET", "/api/files?details=1");
    files = await response.json();
    $("#list-error").hidden = true;
  } catch (error) {
    $("#list-error").textContent = error.message;
    $("#list-error").hidden = false;
  }
  render();
}

function render() {
  const { key, ascending } = sort;
  const sorted = [...files].sort((a, b) => {
    const order = key === "name" ? a.name.localeCompare(b.name) : key === "size" ? a.size - b.size : a.modified.localeCompare(b.modified);
    return ascending ? order : -order;
  });
  const body = $("#files tbody");
  body.replaceChildren(...sorted.map(row));
  $("#empty").hidden = files.length > 0;
  for (const button of document.querySelectorAll("button.sort")) {
    if (button.dataset.key === key) button.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    else button.removeAttribute("aria-sort");
  }
}

function row(file) {
  const tr = document.createElement("tr");
  tr.dataset.name = file.name;
  tr.dataset.size = file.size;
  tr.innerHTML = '<td class="name"></td><td class="num size"></td><td class="modified"></td><td class="actions">' +
    '<button type="button" class="secondary download">Download</button>' +
    '<button type="button" class="secondary share">Share</button>' +
    '<button type="button" class="danger delete">Delete</button></td>';
  tr.querySelector(".name").textContent = file.name;
  tr.querySelector(".size").textContent = formatSize(file.size);
  tr.querySelector(".size").title = `${file.size} bytes`;
  tr.querySelector(".modified").textContent = formatDate(file.modified);
  tr.querySelector(".download").addEventListener("click", () => download(file.name).catch(report));
  tr.querySelector(".share").addEventListener("click", () => share(file.name).catch(report));
  tr.querySelector(".delete").addEventListener("click", () => remove(file.name).catch(report));
  return tr;
}

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

$("#share-copy").addEventListener("click", () => copy($("#share-url").value));
$("#refresh").addEventListener("click", refresh);
for (const button of document.querySelectorAll("button.sort")) {
  button.addEventListener("click", () => {
    const key = button.dataset.key;
    sort = { key, ascending: sort.key === key ? !sort.ascending : key === "name" };
    render();
  });
}

const saved = localStorage.getItem(TOKEN_KEY);
if (saved) useToken(saved);
