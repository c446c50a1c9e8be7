"use strict";
// What the main page (app.js) and an upload request's page (request.js) both use: sizes in
// words, and what a tus-js-client error says. Loaded before either (a plain script: no modules).

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

// A tus-js-client error as [status, JSON body]: status 0 when no answer came, body null when
// the answer was not the gateway's JSON error.
function tusFailure(error) {
  const response = error.originalResponse;
  if (!response) return [0, null];
  let body = null;
  try { body = JSON.parse(response.getBody()); } catch { /* not JSON */ }
  return [response.getStatus(), body];
}

// A row for a file being sent: its name (as text, never markup), a progress bar and a detail
// line, then `extra` (markup of the page's own, such as a Cancel button).
function progressRow(name, extra = "") {
  const row = document.createElement("li");
  row.dataset.name = name;
  row.innerHTML = `<span class="name"></span><progress max="1" value="0"></progress><span class="detail">waiting…</span>${extra}`;
  row.querySelector(".name").textContent = name;
  return row;
}
