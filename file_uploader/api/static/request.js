"use strict";
// The page of an upload request (/r/<id>): sends each chosen file as a tus upload under the
// request (POST /r/<id>/uploads, then PATCH), one at a time, with tus-js-client as the main page
// does. A dropped connection is retried from the offset the server has; an upload cut short by a
// reload or a crash stays in localStorage (tus-js-client's URL storage), is listed, and resumes
// once the same file is chosen again. The page can only add files.

const $ = (selector) => document.querySelector(selector);
const base = window.location.pathname.replace(/\/+$/, "");
const requestId = base.split("/").pop();
const ENDPOINT = new URL(`${base}/uploads`, location.href).href;
const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 20000]; // ms; then the upload waits for the user
// tus-js-client finds an upload again by its fingerprint: this request, the file's name, and the
// file by its size, type and date (a different file cannot resume one).
const FINGERPRINT_PREFIX = `file_uploader-request/${requestId}/`;

function fingerprint(file) {
  return FINGERPRINT_PREFIX + [encodeURIComponent(file.name), file.size, file.type, file.lastModified].join("/");
}

function credentials() {
  // X-Requested-With: this page asks for the password in its own field, so the gateway leaves
  // out the Basic challenge that would make the browser open its own prompt over the page.
  const headers = { "X-Requested-With": "XMLHttpRequest" };
  const password = $("#request-password").value;
  if (!password) return headers;
  // HTTP Basic: any user name, the request's password (UTF-8, as the server reads it).
  const bytes = new TextEncoder().encode(":" + password);
  return { ...headers, Authorization: "Basic " + btoa(String.fromCharCode(...bytes)) };
}

function explain(status, body) {
  const message = body && body.error ? body.error.message : "";
  if (status === 0) return "The connection was lost. Send the file again to go on where it stopped.";
  if (status === 401) return "This link needs its password: type it above and send again.";
  if (status === 404) return "This upload request no longer exists.";
  if (status === 410) return message || "This upload request has expired.";
  return message || `The server answered ${status}.`;
}

// A refusal that trying again cannot change: the request took its files, or the name is taken.
function final(error) {
  const [status, body] = tusFailure(error);
  return status === 409 && Boolean(body && body.error) && ["request_full", "file_exists"].includes(body.error.code);
}

function resultRow(name) {
  const row = progressRow(name);
  $("#request-results").append(row);
  return row;
}

// Send `file`; resolves once it is stored or has failed (the row says which).
function send(file, row) {
  const bar = row.querySelector("progress");
  const detail = row.querySelector(".detail");
  let resumedAt = 0;
  return new Promise((resolve) => {
    const finish = (state, status, text) => {
      row.classList.remove("retrying");
      row.classList.add(state);
      row.dataset.status = status;
      detail.textContent = text;
      showUnfinished();
      resolve(state === "done");
    };
    const transfer = new tus.Upload(file, {
      endpoint: ENDPOINT,
      headers: credentials(),
      metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
      fingerprint: () => Promise.resolve(fingerprint(file)),
      retryDelays: RETRY_DELAYS,
      removeFingerprintOnSuccess: true,
      onAfterResponse: (request, response) => {
        if (request.getMethod() === "HEAD" && response.getStatus() === 200) {
          resumedAt = Number(response.getHeader("Upload-Offset")) || 0;
        }
      },
      onShouldRetry: (error, attempt, options) => {
        // tus-js-client retries a 409 (an offset another request moved on); a full request or a
        // name taken is a 409 too, and final.
        const retry = !final(error) && tus.defaultOptions.onShouldRetry(error, attempt, options);
        if (retry) {
          row.classList.add("retrying");
          detail.textContent = "Connection lost; trying again…";
        }
        return retry;
      },
      onProgress: (sent, total) => {
        row.classList.remove("retrying");
        bar.value = total ? sent / total : 1;
        const parts = [`${formatSize(sent)} of ${formatSize(total)}`];
        if (resumedAt > 0) parts.push(`resumed at ${formatSize(resumedAt)}`);
        detail.textContent = parts.join(" · ");
      },
      onSuccess: () => {
        bar.value = 1;
        const resumed = resumedAt > 0 ? ` (resumed at ${formatSize(resumedAt)})` : "";
        finish("done", "sent", `sent${resumed}`);
      },
      onError: (error) => {
        const [status, body] = tusFailure(error);
        finish("failed", String(status), explain(status, body));
      },
    });
    transfer.findPreviousUploads().then((found) => {
      if (found.length) transfer.resumeFromPreviousUpload(found[0]);
      transfer.start();
    });
  });
}

// Uploads of this request that this browser did not finish (after a reload, a crash).
async function showUnfinished() {
  if (!window.tus) return;
  const busy = new Set([...document.querySelectorAll("#request-results li:not(.done):not(.failed)")].map((li) => li.dataset.name));
  const all = await tus.defaultOptions.urlStorage.findAllUploads();
  const entries = all.filter((entry) => entry.urlStorageKey.startsWith(`tus::${FINGERPRINT_PREFIX}`)
    && entry.metadata && entry.metadata.filename && !busy.has(entry.metadata.filename));
  $("#request-unfinished").replaceChildren(...entries.map(unfinishedRow));
  $("#request-unfinished-box").hidden = entries.length === 0;
}

function unfinishedRow(entry) {
  const li = document.createElement("li");
  li.dataset.name = entry.metadata.filename;
  li.innerHTML = '<span class="name"></span><progress max="1" value="0"></progress><span class="detail"></span>';
  li.querySelector(".name").textContent = entry.metadata.filename;
  const detail = li.querySelector(".detail");
  detail.textContent = `${formatSize(entry.size)}: choose it again to go on`;
  // How far the server got (and whether it still has it: expired or ended, it is forgotten).
  fetch(entry.uploadUrl, { method: "HEAD", headers: { ...credentials(), "Tus-Resumable": "1.0.0" } })
    .then((response) => {
      if (response.status === 404 || response.status === 410) {
        tus.defaultOptions.urlStorage.removeUpload(entry.urlStorageKey).then(showUnfinished);
        return;
      }
      const offset = Number(response.headers.get("Upload-Offset"));
      if (!response.ok || Number.isNaN(offset)) return;
      li.querySelector("progress").value = entry.size ? offset / entry.size : 0;
      detail.textContent = `${formatSize(offset)} of ${formatSize(entry.size)} sent: choose it again to go on`;
    })
    .catch(() => { /* offline: the row stays as it is */ });
  return li;
}

$("#request-send").addEventListener("click", async () => {
  const files = Array.from($("#request-files").files);
  if (!window.tus) {
    resultRow("").querySelector(".detail").textContent = "The upload script did not load. Reload the page.";
    return;
  }
  $("#request-send").disabled = true;
  const rows = files.map((file) => resultRow(file.name));
  showUnfinished();
  for (const [index, file] of files.entries()) await send(file, rows[index]);
  $("#request-files").value = "";
  $("#request-send").disabled = false;
});

showUnfinished();
