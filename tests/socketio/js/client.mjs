// A voxrelay Socket.IO client on the npm socket.io-client, for the tests.
//
//   node client.mjs URL TOKEN SESSION_ID [v4|v3] [TRANSPORTS] [PCM_FILE]
//
// TRANSPORTS: "websocket", "polling", or "" for the client's default (polling,
// then the upgrade to websocket). PCM_FILE: raw PCM16 mono at the session's
// input rate; without it only the text turn is done.
//
// Connects to the /realtime namespace, joins the session, does a text turn,
// then (with PCM_FILE) a spoken turn whose 20 ms chunks alternate binary and
// base64, all sent at once (a burst: over long-polling they travel batched),
// then ends the session. Prints one JSON line per received event
// ({"event", "data"}; ai-audio carries "audioBytes" instead of the base64) and
// per ack ({"ack", "data"}); the last line is {"done": true}. Exits 0 when
// every step was answered, else 1 (2 when the connection was refused).

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const [url, token, sessionId, version = "v4", transports = "", pcmFile = ""] =
  process.argv.slice(2);
if (!url || !token || !sessionId) {
  console.error("usage: node client.mjs URL TOKEN SESSION_ID [v4|v3] [TRANSPORTS] [PCM_FILE]");
  process.exit(64);
}
const module_ = require(version === "v3" ? "socket.io-client-v3" : "socket.io-client");
const io = module_.io || module_.default || module_;
const STEP_MS = 15000;

function print(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

const options = { auth: { token }, reconnection: false, forceNew: true };
if (transports) options.transports = transports.split(",");
const socket = io(`${url}/realtime`, options);
const received = [];
const waiters = [];

socket.onAny((event, data) => {
  let shown = data;
  if (event === "ai-audio" && data && typeof data.audio === "string") {
    const { audio, ...rest } = data;
    shown = { ...rest, audioBytes: Buffer.from(audio, "base64").length };
  }
  print({ event, data: shown });
  received.push({ event, data });
  for (const waiter of [...waiters]) waiter();
});

function waitFor(event, predicate = () => true, from = 0) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`no ${event} within ${STEP_MS} ms`));
    }, STEP_MS);
    const check = () => {
      const found = received.slice(from).find((e) => e.event === event && predicate(e.data));
      if (found) {
        clearTimeout(timer);
        waiters.splice(waiters.indexOf(check), 1);
        resolve(found.data);
      }
    };
    waiters.push(check);
    check();
  });
}

// Acks through a callback (emitWithAck is v4.6+ only).
function call(event, ...args) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ack for ${event}`)), STEP_MS);
    socket.emit(event, ...args, (answer) => {
      clearTimeout(timer);
      print({ ack: event, data: answer });
      if (answer && answer.ok) resolve(answer);
      else reject(new Error(`${event} refused: ${JSON.stringify(answer)}`));
    });
  });
}

async function main() {
  await new Promise((resolve, reject) => {
    socket.on("connect", resolve);
    socket.on("connect_error", (error) => {
      print({ event: "connect_error", data: { message: error.message, data: error.data } });
      reject(Object.assign(error, { refused: true }));
    });
  });
  await waitFor("connected");
  await call("join-session", { sessionId });
  print({ transport: socket.io.engine.transport.name });

  let mark = received.length;
  await call("text-message", { text: "hello from node" });
  await waitFor("response-done", () => true, mark);

  if (pcmFile) {
    const speech = readFileSync(pcmFile);
    const rate = 16000;
    const step = (rate / 50) * 2; // 20 ms
    const audio = Buffer.concat([speech, Buffer.alloc(rate * 2)]); // + 1 s of silence
    mark = received.length;
    let index = 0;
    for (let start = 0; start < audio.length; start += step, index += 1) {
      const chunk = audio.subarray(start, start + step);
      if (index % 2 === 0) socket.emit("audio-chunk", chunk);
      else socket.emit("audio-chunk", { audio: chunk.toString("base64") });
    }
    await waitFor("response-done", () => true, mark);
  }

  await call("end-session");
  await waitFor("session-ended", () => true, 0);
  socket.disconnect();
  print({ done: true });
}

main().then(
  () => process.exit(0),
  (error) => {
    print({ failed: String(error && error.message ? error.message : error) });
    socket.disconnect();
    process.exit(error && error.refused ? 2 : 1);
  },
);
