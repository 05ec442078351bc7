// The floor: the leanest WebSocket relay, for benchmarks/relay.py to compare
// voxrelay's cost against. Each client connection gets one upstream
// connection, and every frame is forwarded verbatim both ways (text stays
// text, binary stays binary). Nothing is parsed, resampled, authenticated or
// stored: whatever voxrelay costs above this is what it does besides relaying.
//
//   node relay.mjs --upstream ws://127.0.0.1:PORT/v1/realtime [--port 0] [--host 127.0.0.1]
//
// The upstream is sent `Authorization: Bearer $OPENAI_API_KEY`; the client's
// query string (`?model=...`) is passed on. Once listening it prints one line,
// `listening PORT native-masking=yes|no`, on stdout.

import { createRequire } from "node:module";
import { parseArgs } from "node:util";
import { WebSocket, WebSocketServer } from "ws";

const { values: options } = parseArgs({
  options: {
    upstream: { type: "string" },
    port: { type: "string", default: "0" },
    host: { type: "string", default: "127.0.0.1" },
  },
});
if (!options.upstream) {
  console.error("relay.mjs: --upstream ws://host:port/path is required");
  process.exit(2);
}
const upstreamUrl = new URL(options.upstream);
const headers = { Authorization: `Bearer ${process.env.OPENAI_API_KEY ?? ""}` };

// ws masks and unmasks in JS unless the optional native bufferutil loads; the
// startup line says which, since it changes the floor's cost per frame.
let nativeMasking = "no";
try {
  createRequire(import.meta.url)("bufferutil");
  nativeMasking = "yes";
} catch {
  // ws falls back to its JS masking
}

// The same wire for both legs: no compression (the benchmark's clients offer
// none), no UTF-8 check of text frames (they are passed on, not read).
const wire = { perMessageDeflate: false, skipUTF8Validation: true, maxPayload: 64 << 20 };

// 1005 (none given) and 1006 (dropped) may not be sent in a close frame.
const sendable = (code) => (code >= 1000 && code <= 4999 && code !== 1005 && code !== 1006 ? code : 1000);

function relay(client, request) {
  const target = new URL(upstreamUrl);
  target.search = new URL(request.url ?? "/", "http://relay").search;
  const upstream = new WebSocket(target, { ...wire, headers });
  // What the client sends before the upstream is open waits here, in order.
  let pending = [];

  client.on("message", (data, isBinary) => {
    if (pending === null) {
      upstream.send(data, { binary: isBinary });
    } else {
      pending.push([data, isBinary]);
    }
  });
  upstream.on("open", () => {
    for (const [data, isBinary] of pending) upstream.send(data, { binary: isBinary });
    pending = null;
  });
  upstream.on("message", (data, isBinary) => {
    if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
  });

  const closeOther = (other) => (code, reason) => {
    if (other.readyState === WebSocket.OPEN) other.close(sendable(code), reason);
    else if (other.readyState === WebSocket.CONNECTING) other.terminate();
  };
  client.on("close", closeOther(upstream));
  upstream.on("close", closeOther(client));
  client.on("error", () => upstream.terminate());
  upstream.on("error", (error) => {
    if (client.readyState === WebSocket.OPEN) client.close(1011, String(error.message).slice(0, 100));
  });
}

const server = new WebSocketServer({ ...wire, host: options.host, port: Number(options.port) });
server.on("connection", relay);
server.on("listening", () => {
  process.stdout.write(`listening ${server.address().port} native-masking=${nativeMasking}\n`);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => process.exit(0));
}
