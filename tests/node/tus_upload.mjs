// Uploads one file with tus-js-client (the npm package, its Node build), as an application would.
//
//   node tus_upload.mjs <endpoint> <token> <path> <name> [parallelUploads] [chunkSize]
//
// Prints one JSON line: {"url": ..., "retries": n} once the upload succeeded, or
// {"error": ...} (exit status 1). Retries after a dropped connection are tus-js-client's own.
import fs from "node:fs";
import * as tus from "tus-js-client";

const [endpoint, token, path, name, parallel = "1", chunk = ""] = process.argv.slice(2);
let retries = 0;
const upload = new tus.Upload(fs.createReadStream(path), {
  endpoint,
  headers: { "X-Auth-Token": token },
  metadata: { filename: name, filetype: "application/octet-stream" },
  parallelUploads: Number(parallel),
  ...(chunk ? { chunkSize: Number(chunk) } : {}),
  retryDelays: [0, 200, 500, 1000, 1000, 2000, 2000, 3000, 3000, 5000],
  onShouldRetry: () => {
    retries += 1;
    return true;
  },
  onError: (error) => {
    console.log(JSON.stringify({ error: String(error) }));
    process.exit(1);
  },
  onSuccess: () => console.log(JSON.stringify({ url: upload.url, retries })),
});
upload.start();
