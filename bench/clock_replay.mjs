// @ircam/sync's SyncClient on recorded one-way delays, under a virtual clock
// (bench_clock.py's drift cells). Reads [[up µs, down µs], ...] on stdin.
//
//   node bench/clock_replay.mjs MINUTES PPM < delays.json
//
// The client's clock runs PPM fast (and 5 ms ahead); SyncClient's own timers run on
// it. Prints the |error| µs of getSyncTime every 50 ms of true time after 30 s.

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const require = createRequire(import.meta.url);
const { SyncClient } = require("@ircam/sync");
const [minutes, ppm] = process.argv.slice(2).map(Number);
const delays = JSON.parse(readFileSync(0, "utf8"));
const rate = 1 + ppm * 1e-6;
const local = (t) => t * rate + 5000; // µs

let now = 0; // true time, µs (the server clock)
let nextId = 1;
const timers = new Map(); // id -> {t, fn}
globalThis.setTimeout = (fn, ms) => {
  const id = nextId++;
  timers.set(id, { t: now + (ms * 1e3) / rate, fn });
  return id;
};
globalThis.clearTimeout = (id) => timers.delete(id);

let k = Math.floor(delays.length / 3);
let receive = null;
const sync = new SyncClient(() => local(now) / 1e6, {
  pingSeriesIterations: 10,
  pingSeriesPeriod: 0.25,
  pingSeriesDelay: { min: 0.25, max: 0.25 },
});
sync.start(
  (pingId, clientPingTime) => {
    const [up, down] = delays[k++ % delays.length];
    const server = now + up;
    const id = nextId++;
    timers.set(id, { t: now + up + down, fn: () => receive(pingId, clientPingTime, server / 1e6, server / 1e6) });
  },
  (cb) => {
    receive = cb;
  },
  () => {},
);

const errs = [];
const end = minutes * 60e6;
let sample = 0;
while (now < end) {
  let best = null;
  for (const [id, ev] of timers) if (best === null || ev.t < timers.get(best).t) best = id;
  const tNext = best === null ? end : timers.get(best).t;
  while (sample <= tNext && sample < end) {
    if (sample > 30e6) {
      const l = local(sample);
      const est = (sync.getSyncTime(l / 1e6) - l / 1e6) * 1e6;
      errs.push(Math.abs(est - (sample - l)));
    }
    sample += 50e3;
  }
  if (best === null) break;
  const ev = timers.get(best);
  timers.delete(best);
  now = ev.t;
  ev.fn();
}
process.stdout.write(JSON.stringify(errs));
