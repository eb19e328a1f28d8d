// Replays recorded exchanges through bbx-client.js's ClockFilter and prints, after
// each, what tests/test_clock_filter.py also asks the Python twin.
// Usage: node clock_filter_replay.mjs BBX_CLIENT_JS < exchanges.json > answers.json
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const { ClockFilter } = await import(pathToFileURL(process.argv[2]).href);
const cases = JSON.parse(readFileSync(0, "utf8"));
const out = cases.map(({ exchanges, slew }) => {
  const f = new ClockFilter({ slew });
  return exchanges.map(([t1, t2, t3, t4]) => {
    f.addSample(t1, t2, t3, t4);
    return [f.offsetUs, f.offsetAt(t4 + 100e3), f.driftPpm, f.errorUs, f.routeChanges,
      f.bursting, f.samples, f.pingIntervalUs];
  });
});
process.stdout.write(JSON.stringify(out));
