// The Node peer for bench_server.py: the same room protocol on Node's `ws` (npm, in
// bench/node_modules; `npm ci` in bench/). Written the way a competent Node user would:
// JSON.parse per message, one ws.send per room member for echoes, ws's own framing.
//
// Usage: node bench/node_server.mjs ROOMS
// Prints {"port", "rooms"} once listening, then answers stdin lines like server_proc.py:
//   stats -> {"accepted", "rss_kib", "clients"}; viz HZ SECONDS; param HZ SECONDS; quit
// Send times are CLOCK_MONOTONIC seconds (process.hrtime), as Python's time.monotonic().

import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { createInterface } from "node:readline";
import { WebSocketServer } from "ws";

const nRooms = Number(process.argv[2] || "1");
const rooms = new Map(); // code -> Set of sockets
const start = process.hrtime.bigint();
let accepted = 0;
let clients = 0;
const values = new Map();
const audioQueue = []; // what the audio side would drain

const monotonic = () => Number(process.hrtime.bigint()) / 1e9;
const nowUs = () => Number((process.hrtime.bigint() - start) / 1000n);

while (rooms.size < nRooms) {
  const code = String(Math.floor(Math.random() * 10000)).padStart(4, "0");
  if (!rooms.has(code)) rooms.set(code, new Set());
}

const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, backlog: 2048 });

wss.on("connection", (ws) => {
  clients += 1;
  let room = null;
  const node = randomUUID();
  ws.on("message", (data, isBinary) => {
    let msg;
    try {
      msg = JSON.parse(isBinary ? data : data.toString());
    } catch {
      ws.send(JSON.stringify({ type: "error", code: "INVALID_MESSAGE", message: "bad json" }));
      return;
    }
    const kind = msg.type;
    if (kind === "join") {
      const members = rooms.get(msg.room_code);
      if (!members) {
        ws.send(JSON.stringify({ type: "error", code: "INVALID_ROOM", message: "Invalid room code" }));
        return;
      }
      room = members;
      members.add(ws);
      ws.send(JSON.stringify({ type: "welcome", node_id: node, server_time: nowUs() }));
      ws.send(JSON.stringify({ type: "state", params: [] }));
    } else if (room === null) {
      ws.send(JSON.stringify({ type: "error", code: "NOT_JOINED", message: "join first" }));
    } else if (kind === "param") {
      const value = Number(msg.value);
      values.set(msg.param, value);
      audioQueue.push([msg.param, value, node, monotonic()]);
      accepted += 1;
      const update = JSON.stringify({ type: "update", param: msg.param, value });
      for (const other of room) {
        if (other !== ws && other.readyState === 1) other.send(update);
      }
    } else if (kind === "trigger") {
      audioQueue.push([msg.name, 0, node, monotonic()]);
      accepted += 1;
    } else if (kind === "ping") {
      ws.send(JSON.stringify({ type: "pong", client_time: msg.client_time, server_time: nowUs() }));
    } else if (kind === "sync") {
      ws.send(JSON.stringify({ type: "state", params: [] }));
    } else if (kind === "leave") {
      ws.close();
    }
  });
  ws.on("close", () => {
    clients -= 1;
    if (room !== null) room.delete(ws);
  });
  ws.on("error", () => {});
});

// The audio side: drains the queue every 2 ms, as server_proc.py's audio thread does.
setInterval(() => {
  audioQueue.length = 0;
}, 2);

function rssKib() {
  const line = readFileSync("/proc/self/status", "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmRSS:"));
  return line ? Number(line.split(/\s+/)[1]) : 0;
}

function broadcast(kind, hz, seconds, done) {
  const end = monotonic() + seconds;
  let next = monotonic();
  const tick = () => {
    const now = monotonic();
    if (now >= end) {
      done();
      return;
    }
    const text =
      kind === "viz"
        ? JSON.stringify({ type: "visualization", data: [now, ...new Array(63).fill(0.5)] })
        : JSON.stringify({ type: "update", param: "probe", value: now });
    for (const members of rooms.values()) {
      for (const ws of members) if (ws.readyState === 1) ws.send(text);
    }
    next += 1 / hz;
    setTimeout(tick, Math.max(0, (next - monotonic()) * 1000));
  };
  tick();
}

wss.on("listening", () => {
  const { port } = wss.address();
  process.stdout.write(JSON.stringify({ port, rooms: [...rooms.keys()] }) + "\n");
  const rl = createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    const parts = line.trim().split(/\s+/);
    if (parts[0] === "stats") {
      process.stdout.write(JSON.stringify({ accepted, rss_kib: rssKib(), clients }) + "\n");
    } else if (parts[0] === "viz" || parts[0] === "param") {
      broadcast(parts[0], Number(parts[1]), Number(parts[2]), () =>
        process.stdout.write(JSON.stringify({ done: parts[0] }) + "\n"),
      );
    } else if (parts[0] === "quit") {
      for (const ws of wss.clients) ws.terminate();
      wss.close(() => process.exit(0));
    }
  });
  rl.on("close", () => process.exit(0));
});
