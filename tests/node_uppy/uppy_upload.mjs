// Uploads one file with Uppy and @uppy/aws-s3 in multipart mode, its companion-less options
// pointed at the gateway's /api/direct routes, as a browser application would wire them.
//
//   node uppy_upload.mjs <gateway> <token> <path> <name> <partSize>
//
// Prints one JSON line: {"body": ..., "parts": n} once the upload succeeded, or {"error": ...}
// (exit status 1). Node has no XMLHttpRequest, which Uppy's own uploadPartBytes uses: the
// uploadPartBytes option sends each part with fetch instead, to the URL and headers signPart gave.
import fs from "node:fs";
import Uppy from "@uppy/core";
import AwsS3 from "@uppy/aws-s3";

const [gateway, token, path, name, partSize] = process.argv.slice(2);
const auth = { "X-Auth-Token": token, "Content-Type": "application/json" };
let signed = 0;

async function call(method, route, body) {
  const response = await fetch(gateway + route, {
    method,
    headers: auth,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

const sha256 = async (blob) =>
  Buffer.from(await crypto.subtle.digest("SHA-256", await blob.arrayBuffer())).toString("base64");

const uppy = new Uppy({ autoProceed: false });
uppy.use(AwsS3, {
  shouldUseMultipart: true,
  limit: 4,
  getChunkSize: () => Number(partSize),
  async createMultipartUpload(file) {
    const created = await call("POST", "/api/direct", {
      name: file.name,
      size: file.size,
      partSize: Number(partSize),
    });
    return { uploadId: created.uploadId, key: created.key };
  },
  async signPart(file, { uploadId, partNumber, body }) {
    signed += 1;
    const answer = await call("POST", `/api/direct/${uploadId}/parts/${partNumber}`, {
      checksum: await sha256(body),
    });
    return { method: "PUT", url: answer.url, headers: answer.headers };
  },
  async listParts(file, { uploadId }) {
    return call("GET", `/api/direct/${uploadId}/parts`);
  },
  async completeMultipartUpload(file, { uploadId }) {
    const done = await call("POST", `/api/direct/${uploadId}/complete`);
    return { location: `${gateway}/api/files/${encodeURIComponent(done.name)}`, ...done };
  },
  async abortMultipartUpload(file, { uploadId }) {
    await call("DELETE", `/api/direct/${uploadId}`);
  },
  async uploadPartBytes({ signature: { url, headers, method = "PUT" }, body, onProgress, onComplete, signal }) {
    const response = await fetch(url, { method, headers, body, signal, duplex: "half" });
    if (!response.ok) {
      const error = new Error(`part PUT: ${response.status} ${await response.text()}`);
      error.source = { status: response.status };
      throw error;
    }
    const etag = response.headers.get("ETag");
    onProgress({ loaded: body.size, lengthComputable: true });
    onComplete(etag);
    return { ETag: etag };
  },
});

const data = await fs.openAsBlob(path);
uppy.addFile({ name, type: "application/octet-stream", data, source: "Local" });
const result = await uppy.upload();
if (result.failed && result.failed.length) {
  console.log(JSON.stringify({ error: String(result.failed[0].error) }));
  process.exit(1);
}
console.log(JSON.stringify({ body: result.successful[0].response.body, parts: signed }));
