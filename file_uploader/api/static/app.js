// The file_uploader page: a plain client of the /api endpoints, no framework, no build step.
"use strict";

const TOKEN_KEY = "file_uploader.token";
const TOKEN_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const DOWNLOAD_LINK_SECONDS = 60; // a download goes through a short-lived download link

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
  if (status === 401) {
    return SignIn.current() ? "Your sign-in was not accepted or has expired. Sign in again." : "The server did not accept your token. Check it above.";
  }
  if (code === "auth_unavailable") return "The server could not check who you are right now. Try again in a moment.";
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
    response = await fetch(url, { method, ...options, headers: { ...credentials(), ...(options.headers || {}) } });
  } catch {
    throw new Error(explain(0));
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new Error(explain(response.status, body));
  }
  return response;
}

// ---- token, or sign-in ------------------------------------------------------

// What proves who the page's user is: the signed-in user's bearer token, else the UUID token.
function credentials() {
  const signedIn = SignIn.headers();
  return signedIn.Authorization ? signedIn : { "X-Auth-Token": token };
}

function showFiles() {
  $("#upload-section").hidden = false;
  $("#files-section").hidden = false;
  for (const url of thumbnails.values()) URL.revokeObjectURL(url);
  thumbnails.clear();
  refresh();
  showUnfinished();
  loadLinks().catch(report);
}

// Signed in: the token form gives way to who is signed in. `token` is then only the tag that
// keeps this user's unfinished uploads apart from another's (the issuer and subject).
function useSession(session) {
  token = `${session.claims.iss} ${session.claims.sub}`;
  $("#token-title").textContent = "Signed in";
  $("#token-form").hidden = true;
  $("#token-warning").hidden = true;
  $("#token-status").hidden = true;
  $("#sign-in").hidden = true;
  $("#signed-in-as").textContent = `Signed in as ${SignIn.who(session)}`;
  $("#signed-in-as").hidden = false;
  $("#sign-out").hidden = false;
  showFiles();
}

$("#sign-in").addEventListener("click", () => SignIn.start());
$("#sign-out").addEventListener("click", () => SignIn.signOut());

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
  showFiles();
}

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  useToken($("#token").value);
});

$("#token-new").addEventListener("click", () => {
  if (token && !confirm("A new token is a new, empty space. Your current files stay under the old token: make sure you have kept it. Continue?")) return;
  useToken(crypto.randomUUID());
});

// ---- uploads: tus, resumable ----------------------------------------------------

// Every upload goes through tus (tus-js-client, vendored in /static/vendor/): a
// dropped connection is retried from the offset the server has, and an upload
// cut short by a reload or a crash stays in localStorage (tus-js-client's URL
// storage) and is offered again, to resume once the same file is chosen.
const TUS_ENDPOINT = new URL("/api/uploads/", location.href).href;
const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 20000]; // ms; then the upload waits for the user
// A file this large goes over PARALLEL connections at once (tus concatenation: one partial upload
// each, joined by the gateway inside S3): one connection rarely fills a long, fast link. Smaller
// files go in one, since each partial upload costs requests of its own.
const PARALLEL_FROM = 64 * 1024 * 1024;
const PARALLEL = 4;
const SPEED_WINDOW = 5000; // ms of progress the speed is measured over

// tus-js-client finds an upload again by its fingerprint. Ours names the user (a
// short hash of the token: another token's uploads are not offered), the target
// name, and the file by its size, type and date: a different file cannot resume one.
function userTag() {
  let hash = 0x811c9dc5; // FNV-1a, 32 bits: a tag, not a secret (the token is in localStorage anyway)
  for (const char of token) hash = Math.imul(hash ^ char.charCodeAt(0), 0x01000193) >>> 0;
  return hash.toString(16);
}

function fingerprint(file, name) {
  return ["file_uploader", userTag(), encodeURIComponent(name), file.size, file.type, file.lastModified].join("/");
}

// Bytes a second over the last few seconds, and the seconds left at that pace.
function speedometer() {
  const samples = [];
  return (sent, total) => {
    const now = performance.now();
    samples.push([now, sent]);
    while (samples.length > 2 && now - samples[1][0] > SPEED_WINDOW) samples.shift();
    const [then, before] = samples[0];
    const speed = now > then ? ((sent - before) * 1000) / (now - then) : 0;
    return { speed, left: speed > 0 ? (total - sent) / speed : Infinity };
  };
}

function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.ceil(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.ceil((seconds % 3600) / 60)} min`;
}

function tusError(error) {
  return explain(...tusFailure(error));
}

function uploadRow(name) {
  const row = progressRow(name, '<button type="button" class="secondary cancel">Cancel</button>');
  $("#uploads").prepend(row);
  return row;
}

// The upload's tus metadata: its name and type, and its expiry when one is chosen.
function uploadMetadata(name, file) {
  const metadata = { filename: name, filetype: file.type || "application/octet-stream" };
  if ($("#upload-expires").value) metadata.expires_in = $("#upload-expires").value;
  return metadata;
}

// Upload `file` as `name`; `previous`: the stored upload to resume (else any one found by fingerprint).
function upload(file, name = folder + file.name, previous = null) {
  const row = uploadRow(name);
  const bar = row.querySelector("progress");
  const detail = row.querySelector(".detail");
  const cancel = row.querySelector(".cancel");
  const measure = speedometer();
  const started = performance.now();
  let resumedAt = 0;
  const offsets = new Map(); // each (partial) upload's offset as HEAD said it, when resuming
  let finished = false;
  const finish = (state, text) => {
    finished = true;
    row.classList.remove("retrying");
    row.classList.add(state);
    detail.textContent = text;
    cancel.remove();
    showUnfinished();
  };

  const transfer = new tus.Upload(file, {
    endpoint: TUS_ENDPOINT,
    headers: credentials(),
    metadata: uploadMetadata(name, file),
    fingerprint: () => Promise.resolve(fingerprint(file, name)),
    parallelUploads: file.size >= PARALLEL_FROM ? PARALLEL : 1,
    retryDelays: RETRY_DELAYS,
    removeFingerprintOnSuccess: true,
    onAfterResponse: (request, response) => {
      if (request.getMethod() === "HEAD" && response.getStatus() === 200) {
        offsets.set(request.getURL(), Number(response.getHeader("Upload-Offset")) || 0);
        resumedAt = [...offsets.values()].reduce((sum, offset) => sum + offset, 0);
      }
    },
    onShouldRetry: (error, attempt, options) => {
      const retry = tus.defaultOptions.onShouldRetry(error, attempt, options);
      if (retry) {
        row.classList.add("retrying");
        detail.textContent = `Connection lost; trying again in ${formatDuration(options.retryDelays[attempt] / 1000) || "a moment"}…`;
      }
      return retry;
    },
    onProgress: (sent, total) => {
      row.classList.remove("retrying");
      const { speed, left } = measure(sent, total);
      bar.value = total ? sent / total : 1;
      const parts = [`${formatSize(sent)} of ${formatSize(total)}`];
      if (speed > 0) parts.push(`${formatSize(speed)}/s`, `${formatDuration(left)} left`);
      if (resumedAt > 0) parts.push(`resumed at ${formatSize(resumedAt)}`);
      detail.textContent = parts.join(" · ");
    },
    onSuccess: () => {
      const seconds = (performance.now() - started) / 1000;
      bar.value = 1;
      const resumed = resumedAt > 0 ? ` (resumed at ${formatSize(resumedAt)})` : "";
      finish("done", `${formatSize(file.size)} uploaded in ${seconds.toFixed(1)} s${resumed}`);
      refresh();
    },
    onError: (error) => {
      // Retries used up (or a refusal): an upload the server holds can still be resumed later.
      const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
      const resumable = transfer.url && (status === 0 || status >= 500 || status === 423);
      finish("failed", resumable ? `${tusError(error)} Choose the file again to resume.` : tusError(error));
    },
  });

  cancel.addEventListener("click", () => {
    cancel.disabled = true;
    detail.textContent = "Cancelling…";
    // abort(true) stops the transfer and terminates the upload on the server (DELETE), which
    // aborts its S3 multipart upload, and forgets it in this browser.
    transfer.abort(true)
      .then(() => finish("failed", "Cancelled. Nothing was stored (an older file of the same name is untouched)."))
      .catch(() => finish("failed", "Cancelled; the server could not be told. The unfinished upload expires by itself."));
  });

  const resume = previous ? Promise.resolve([previous]) : transfer.findPreviousUploads();
  resume.then((found) => {
    if (finished) return;
    if (found.length) transfer.resumeFromPreviousUpload(found[0]);
    transfer.start();
    showUnfinished();
  });
}

// ---- unfinished uploads, after a reload ------------------------------------------------

const running = () => new Set([...document.querySelectorAll("#uploads li:not(.done):not(.failed)")].map((li) => li.dataset.name));

async function storedUploads() {
  if (!window.tus || !token) return [];
  const prefix = `tus::file_uploader/${userTag()}/`;
  const all = await tus.defaultOptions.urlStorage.findAllUploads();
  return all.filter((entry) => entry.urlStorageKey.startsWith(prefix) && entry.metadata && entry.metadata.filename);
}

async function showUnfinished() {
  const busy = running();
  const entries = (await storedUploads()).filter((entry) => !busy.has(entry.metadata.filename));
  $("#unfinished").replaceChildren(...entries.map(unfinishedRow));
  $("#unfinished-box").hidden = entries.length === 0;
}

function unfinishedRow(entry) {
  const name = entry.metadata.filename;
  const li = document.createElement("li");
  li.dataset.name = name;
  li.innerHTML = '<span class="name"></span><progress max="1" value="0"></progress><span class="detail"></span>' +
    '<span class="actions"><label class="button secondary">Resume…<input type="file" class="resume-file" hidden></label>' +
    '<button type="button" class="danger discard">Discard</button></span>';
  li.querySelector(".name").textContent = name;
  const detail = li.querySelector(".detail");
  detail.textContent = `${formatSize(entry.size)}, started ${formatDate(entry.creationTime)}`;
  // How far the server got (and whether it still has it: expired or finished, it is forgotten).
  // A large file went as parallel partial uploads: their offsets add up.
  const urls = entry.uploadUrl ? [entry.uploadUrl] : entry.parallelUploadUrls || [];
  const head = (url) => fetch(url, { method: "HEAD", headers: { ...credentials(), "Tus-Resumable": "1.0.0" } });
  Promise.all(urls.map(head))
    .then((responses) => {
      if (responses.some((response) => response.status === 404 || response.status === 410)) {
        tus.defaultOptions.urlStorage.removeUpload(entry.urlStorageKey).then(showUnfinished);
        return;
      }
      const offset = responses.reduce((sum, response) => sum + Number(response.headers.get("Upload-Offset")), 0);
      if (!responses.every((response) => response.ok) || Number.isNaN(offset)) return;
      li.querySelector("progress").value = entry.size ? offset / entry.size : 0;
      detail.textContent = `${formatSize(offset)} of ${formatSize(entry.size)} stored, started ${formatDate(entry.creationTime)}`;
    })
    .catch(() => { /* offline: the row stays as it is */ });
  li.querySelector(".resume-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (!file) return;
    if (!entry.urlStorageKey.startsWith(`tus::${fingerprint(file, name)}::`)) {
      detail.textContent = `That is not the file this upload started with: choose ${baseName(name)} of ${formatSize(entry.size)}, unchanged.`;
      li.classList.add("failed");
      return;
    }
    li.remove();
    upload(file, name, entry);
  });
  li.querySelector(".discard").addEventListener("click", () => {
    Promise.all(urls.map((url) => tus.Upload.terminate(url, { headers: credentials() })))
      .catch(() => { /* already gone, or offline: it expires on the server by itself */ })
      .finally(() => tus.defaultOptions.urlStorage.removeUpload(entry.urlStorageKey).then(showUnfinished));
  });
  return li;
}

function uploadAll(fileList) {
  if (!window.tus) {
    report(new Error("The upload script did not load (/static/vendor/tus.min.js). Reload the page."));
    return;
  }
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
  loadUsage();
}

// ---- usage ------------------------------------------------------------------

// GET /api/usage: {"used": bytes, "quota": bytes or null, "files": count}; with a quota the
// bar is a meter. Any refusal hides it.
async function loadUsage() {
  let usage;
  try {
    const response = await fetch("/api/usage", { headers: credentials() });
    if (!response.ok) {
      $("#usage").hidden = true;
      return;
    }
    usage = await response.json();
  } catch {
    return; // offline: keep what is shown
  }
  const count = `${usage.files} file${usage.files === 1 ? "" : "s"}`;
  const meter = $("#usage-meter");
  if (usage.quota) {
    meter.value = Math.min(usage.used / usage.quota, 1);
    meter.hidden = false;
    $("#usage-text").textContent = `${formatSize(usage.used)} of ${formatSize(usage.quota)} used (${count})`;
  } else {
    meter.hidden = true;
    $("#usage-text").textContent = `${formatSize(usage.used)} in ${count}`;
  }
  $("#usage").hidden = false;
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
    '<button type="button" class="secondary zip">Download zip</button>' +
    '<button type="button" class="danger delete-folder">Delete folder</button></td>';
  tr.querySelector(".open").textContent = baseName(name) + "/";
  tr.querySelector(".open").addEventListener("click", () => openFolder(name));
  tr.querySelector(".zip").addEventListener("click", () => download(name).catch(report));
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

async function shareLink(name, options) {
  const response = await api("POST", fileUrl(name, "/share"), {
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(options || {}),
  });
  return response.json();
}

// The API needs a header a plain link cannot send, so a download follows a
// short-lived download link (stateless: never listed among the user's links):
// the browser streams it to disk, whatever its size.
async function download(name) {
  // A folder (its name ends in /) downloads as one zip, through the same kind of link.
  const response = await api("POST", fileUrl(name, "/download-link"), {
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ expires_in: DOWNLOAD_LINK_SECONDS }),
  });
  const link = await response.json();
  const a = document.createElement("a");
  a.href = link.url;
  a.download = name.endsWith("/") ? `${baseName(name.slice(0, -1))}.zip` : name.split("/").pop();
  document.body.append(a);
  a.click();
  a.remove();
}

async function share(name) {
  const options = { expires_in: Number($("#share-expires").value) };
  if ($("#share-password").value) options.password = $("#share-password").value;
  if ($("#share-max").value) options.max_downloads = Number($("#share-max").value);
  const link = await shareLink(name, options);
  $("#share-url").value = link.url;
  $("#share-expiry").textContent = formatDate(link.expires_at);
  $("#share-box").hidden = false;
  loadLinks().catch(report);
  await copy(link.url);
}

// ---- share links: listed with their use counts, revoked one by one ----------------

async function loadLinks() {
  const links = await (await api("GET", "/api/links")).json();
  const list = $("#links");
  list.replaceChildren(...links.map(linkItem));
  $("#links-empty").hidden = links.length > 0;
  $("#links-section").hidden = false;
}

function linkItem(link) {
  const li = document.createElement("li");
  li.dataset.id = link.id;
  const used = link.max_downloads ? `${link.downloads} of ${link.max_downloads}` : `${link.downloads}`;
  const state = link.expired ? "expired" : link.used_up ? "used up" : `until ${formatDate(link.expires_at)}`;
  const text = document.createElement("span");
  text.className = "link-text";
  text.textContent = `${link.name}: ${used} downloads, ${state}${link.password ? ", password" : ""} `;
  const url = document.createElement("input");
  url.readOnly = true;
  url.value = link.url;
  const revoke = document.createElement("button");
  revoke.type = "button";
  revoke.className = "danger revoke";
  revoke.textContent = "Revoke";
  revoke.addEventListener("click", async () => {
    await api("DELETE", `/api/links/${encodeURIComponent(link.id)}`).catch(report);
    loadLinks().catch(report);
  });
  li.append(text, url, revoke);
  return li;
}

$("#links-refresh").addEventListener("click", () => loadLinks().catch(report));

// ---- upload requests: a link that lets others send files into the open folder ------

$("#request-new").addEventListener("click", async () => {
  try {
    const response = await api("POST", "/api/requests", {
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ folder: folder || "inbox/" }),
    });
    const made = await response.json();
    $("#request-url").value = made.url;
    $("#request-box").hidden = false;
  } catch (error) {
    report(error);
  }
});

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

// With an issuer (AUTH_ISSUER) the page offers sign-in, and finishes one on the way back from the
// provider; without one it stays as it is. A UUID token saved in this browser is used otherwise.
(async () => {
  if (await SignIn.load()) {
    $("#sign-in-box").hidden = false;
    $("#token-title").textContent = SignIn.uuidTokens() ? "Sign in, or use a token" : "Sign in";
    if (!SignIn.uuidTokens()) {
      $("#token-form").hidden = true;
      $("#token-warning").hidden = true;
    }
    try {
      await SignIn.finish();
    } catch (error) {
      $("#sign-in-status").textContent = error.message;
      $("#sign-in-status").hidden = false;
    }
    const session = SignIn.current();
    if (session) return useSession(session);
    if (!SignIn.uuidTokens()) return;
  }
  const saved = localStorage.getItem(TOKEN_KEY);
  if (saved) useToken(saved);
})();
