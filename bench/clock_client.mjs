// A Node phone that syncs its clock to a bbx_net server (bench_clock.py runs it).
//
//   node bench/clock_client.mjs bbx|ircam URL ROOM SECONDS
//
// bbx:   bbx-client.js's BbxClient as a page would use it (ws stands in for the
//        browser's WebSocket), its ClockFilter and ping schedule.
// ircam: @ircam/sync's SyncClient driven over the same ping/pong messages (its own
//        schedule, set to the same 250 ms between pings; pings and pongs are matched
//        by client_time).
//
// Prints one JSON object: samples = [[local µs, estimate of server minus local], ...]
// every 50 ms, local µs being CLOCK_MONOTONIC (process.hrtime, which the bench
// shares; the clients themselves run on performance.now()), and joined_us.

import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import path from "node:path";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");
const [mode, url, room, seconds] = process.argv.slice(2);
const here = path.dirname(new URL(import.meta.url).pathname);

// Node's own performance.now() drifts against CLOCK_MONOTONIC (hundreds of ppm seen
// here), so both clients get one made from process.hrtime (CLOCK_MONOTONIC), as a
// browser's is: then performance.now() µs + perfToMono is CLOCK_MONOTONIC µs exactly.
const hr0 = process.hrtime.bigint();
Object.defineProperty(performance, "now", {
  value: () => Number(process.hrtime.bigint() - hr0) / 1e6,
  configurable: true,
});
const perfToMono = Number(hr0) / 1e3;
const monoUs = () => Number(process.hrtime.bigint()) / 1e3;
const samples = [];
let joinedUs = null;

function finish() {
  process.stdout.write(JSON.stringify({ samples, joined_us: joinedUs }));
  process.exit(0);
}

function sampleEvery(estimate) {
  const timer = setInterval(() => {
    const local = performance.now() * 1e3;
    // Both as CLOCK_MONOTONIC: the estimate is server minus performance.now() µs.
    samples.push([local + perfToMono, estimate(local) - perfToMono]);
  }, 50);
  setTimeout(() => {
    clearInterval(timer);
    finish();
  }, Number(seconds) * 1e3);
}

if (mode === "bbx") {
  globalThis.WebSocket = WebSocket;
  const client = path.join(here, "..", "src", "bbx_net", "web", "bbx-client.js");
  const { BbxClient } = await import(pathToFileURL(client).href);
  const c = new BbxClient({ url, roomCode: room, clientName: "clock-bbx" });
  await c.connect();
  joinedUs = monoUs();
  sampleEvery((local) => c.clock.offsetAt(local));
} else if (mode === "ircam") {
  const { SyncClient } = require("@ircam/sync");
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  ws.send(JSON.stringify({ type: "join", room_code: room, client_name: "clock-ircam" }));
  await new Promise((resolve) => {
    const onMessage = (raw) => {
      if (JSON.parse(raw).type === "welcome") {
        ws.off("message", onMessage);
        resolve();
      }
    };
    ws.on("message", onMessage);
  });
  joinedUs = monoUs();
  const sync = new SyncClient(() => performance.now() / 1e3, {
    pingSeriesIterations: 10,
    pingSeriesPeriod: 0.25,
    pingSeriesDelay: { min: 0.25, max: 0.25 },
  });
  const ids = new Map(); // client_time -> pingId
  let receive = null;
  ws.on("message", (raw) => {
    const msg = JSON.parse(raw);
    if (msg.type !== "pong" || !receive) return;
    const id = ids.get(msg.client_time);
    if (id === undefined) return;
    ids.delete(msg.client_time);
    const server = msg.server_time / 1e6;
    receive(id, msg.client_time / 1e6, server, server);
  });
  sync.start(
    (pingId, clientPingTime) => {
      const clientTime = clientPingTime * 1e6;
      ids.set(clientTime, pingId);
      ws.send(JSON.stringify({ type: "ping", client_time: clientTime }));
    },
    (callback) => {
      receive = callback;
    },
    () => {},
  );
  sampleEvery((local) => (sync.getSyncTime(local / 1e6) - local / 1e6) * 1e6);
} else {
  console.error("mode: bbx or ircam");
  process.exit(2);
}
