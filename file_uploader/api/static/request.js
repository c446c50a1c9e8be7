"use strict";
// The page of an upload request (/r/<id>): sends each chosen file with PUT /r/<id>/<name>,
// one at a time, showing its progress and the server's answer. It can only add files.

const $ = (selector) => document.querySelector(selector);
const base = window.location.pathname.replace(/\/+$/, "");

function credentials() {
  const password = $("#request-password").value;
  if (!password) return {};
  // HTTP Basic: any user name, the request's password (UTF-8, as the server reads it).
  const bytes = new TextEncoder().encode(":" + password);
  return { Authorization: "Basic " + btoa(String.fromCharCode(...bytes)) };
}

function explain(status, body) {
  const message = body && body.error ? body.error.message : "";
  if (status === 0) return "The connection was lost. Try again.";
  if (status === 401) return "This link needs its password: type it above and send again.";
  if (status === 404) return "This upload request no longer exists.";
  if (status === 410) return "This upload request has expired.";
  return message || `The server answered ${status}.`;
}

function send(file, row) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", `${base}/${encodeURIComponent(file.name)}`);
    for (const [name, value] of Object.entries(credentials())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) row.dataset.progress = String(Math.round((100 * event.loaded) / event.total));
      row.textContent = `${file.name}: ${row.dataset.progress || 0}%`;
    };
    xhr.onloadend = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      const ok = xhr.status === 204;
      row.className = ok ? "sent" : "error";
      row.dataset.status = String(xhr.status);
      row.textContent = ok ? `${file.name}: sent` : `${file.name}: ${explain(xhr.status, body)}`;
      resolve(ok);
    };
    xhr.send(file);
  });
}

$("#request-send").addEventListener("click", async () => {
  const files = Array.from($("#request-files").files);
  $("#request-send").disabled = true;
  for (const file of files) {
    const row = document.createElement("li");
    row.dataset.name = file.name;
    row.textContent = `${file.name}: waiting`;
    $("#request-results").append(row);
    await send(file, row);
  }
  $("#request-send").disabled = false;
});
