// The peer in `make bench`: tus-node-server (@tus/server + @tus/s3-store) on the same S3.
//
// bench.py installs the two packages from npm into a scratch directory, copies this file
// there and runs `node server.mjs PORT S3_URL BUCKET ACCESS_KEY SECRET_KEY`. Settings as the
// gateway's: 8 MiB parts, 4 in flight. The AWS SDK's own checksums are asked for only where
// S3 requires them (its default would send aws-chunked bodies with a trailing CRC32, which
// Ceph RGW 16 refuses), so the peer sends no checksum.
import http from 'node:http';
import { Server } from '@tus/server';
import { S3Store } from '@tus/s3-store';

const [port, endpoint, bucket, accessKeyId, secretAccessKey] = process.argv.slice(2);
const datastore = new S3Store({
  partSize: 8 * 1024 * 1024,
  maxConcurrentPartUploads: 4,
  s3ClientConfig: {
    bucket,
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId, secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  },
});
const tus = new Server({ path: '/files', datastore });
http.createServer((req, res) => tus.handle(req, res)).listen(Number(port), '127.0.0.1');
