"""Clock alignment under jitter, loss, asymmetry, route changes and drift, with ground
truth: ours (Python and bbx-client.js in Node) beside @ircam/sync and the naive
last-ping estimate, over the same ping/pong, in one run.

    python bench/bench_clock.py [--seconds 40] [--only 'idle;(10,5)'] [--drift-minutes 10]

Every process on the machine reads the same CLOCK_MONOTONIC, so the true offset of a
client's clock from the server's is known to well under a microsecond: the server
clock counts from `origin` (measured here), the clients stamp CLOCK_MONOTONIC µs.
Each cell runs the server (in this process, on its own thread), a jitter relay when
the cell has one (bench/jitter_relay.py) and three clients at once, each in its own
process: bench/clock_client.py (OffsetEstimator; the naive estimate comes from the
same exchanges), bench/clock_client.mjs bbx (BbxClient) and ... ircam (SyncClient,
pinging every 250 ms like ours). Errors are |estimate - truth| sampled every 50 ms
after the first `--warmup` seconds; "to 1 ms" is the time from the join until the
error is below 1 ms for good.

The drift cells replay the one-way delays recorded in the idle and (10, 5) cells for
`--drift-minutes` of simulated time with the client clock running 100 ppm fast:
ours (Python) and the naive estimate in this process, SyncClient in Node under a
virtual clock (bench/clock_replay.mjs), all on the same delays.

@ircam/sync and ws come from npm into bench/node_modules (bench-only; `npm ci` runs
here when they are missing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from jitter_relay import PROFILES  # noqa: E402

from bbx_net import OffsetEstimator, net_buffer  # noqa: E402
from bbx_net.websocket import CommandChannel, WsServer, WsServerConfig  # noqa: E402

CELLS = ["idle", "CPU-busy", *PROFILES]


class Server:
    """A WsServer on its own loop thread; `origin_us` is its clock's zero as
    CLOCK_MONOTONIC µs."""

    def __init__(self, **config: Any) -> None:
        self.producer, self.consumer = net_buffer(4096)
        self.commands = CommandChannel()
        self.server = WsServer(
            WsServerConfig(bind_addr=("127.0.0.1", 0), **config), self.producer, self.commands
        )
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        self.code = self.commands.create_room_threadsafe(timeout=10)
        readings = []
        for _ in range(101):
            a = time.monotonic_ns()
            s = self.server.clock.now_us()
            b = time.monotonic_ns()
            readings.append(((a + b) / 2e3 - s, b - a))
        self.origin_us = min(readings, key=lambda r: r[1])[0]

    @property
    def port(self) -> int:
        return self.server.port

    def stats(self) -> list[Any]:
        """client_stats(), read on the server's loop."""
        fut = asyncio.run_coroutine_threadsafe(_call(self.server.client_stats), self.loop)
        return list(fut.result(10))

    def drain(self) -> None:
        while self.consumer.try_pop() is not None:
            pass

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(20)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0.1), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _call(fn: Any) -> Any:
    return fn()


def ensure_npm() -> None:
    if not (HERE / "node_modules" / "@ircam" / "sync").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True)


def start_relay(target: int, name: str, seed: int) -> tuple[subprocess.Popen[str], int]:
    """The jitter relay in its own process (its threads never share our GIL)."""
    relay = subprocess.Popen(
        [sys.executable, str(HERE / "jitter_relay.py"), str(target), name, str(seed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert relay.stdout is not None
    return relay, int(relay.stdout.readline())


def stop_relay(relay: subprocess.Popen[str] | None) -> None:
    if relay is not None:
        assert relay.stdin is not None
        relay.stdin.close()
        try:
            relay.wait(10)
        except subprocess.TimeoutExpired:
            relay.kill()


def run_cell(name: str, seconds: float, seed: int) -> dict[str, Any]:
    server = Server()
    relay = None
    port = server.port
    if name in PROFILES:
        relay, port = start_relay(server.port, name, seed)
    url = f"ws://127.0.0.1:{port}/"
    busy = []
    if name == "CPU-busy":
        busy = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 2)
        ]
    procs = {
        "python": [sys.executable, str(HERE / "clock_client.py"), url, server.code, str(seconds)],
        "node": ["node", str(HERE / "clock_client.mjs"), "bbx", url, server.code, str(seconds)],
        "ircam": ["node", str(HERE / "clock_client.mjs"), "ircam", url, server.code, str(seconds)],
    }
    files = {k: tempfile.TemporaryFile("w+") for k in procs}  # no pipe to fill up
    running = {k: subprocess.Popen(cmd, stdout=files[k], text=True) for k, cmd in procs.items()}
    out: dict[str, Any] = {}
    views: list[list[float]] = []  # the server's own estimate of the Python phone
    try:
        deadline = time.monotonic() + seconds + 60
        next_view = time.monotonic() + 1
        while any(p.poll() is None for p in running.values()):
            server.drain()
            time.sleep(0.05)
            if time.monotonic() >= next_view:
                next_view += 0.5
                for st in server.stats():
                    if st.client_name == "clock" and st.clock_offset_us is not None:
                        views.append([time.monotonic_ns() / 1e3, st.clock_offset_us])
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: clients did not finish")
        for k, f in files.items():
            f.seek(0)
            out[k] = json.loads(f.read())
    finally:
        for p in running.values():
            p.kill()
        for f in files.values():
            f.close()
        for b in busy:
            b.kill()
        stop_relay(relay)
        server.stop()
    truth = -server.origin_us  # server minus local, for a client stamping CLOCK_MONOTONIC
    return {"out": out, "truth": truth, "views": views}


def errors(samples: list[list[Any]], col: int, truth: float, joined: float, warmup_s: float):
    errs = []
    settled = None
    for row in samples:
        value = row[col]
        if value is None:
            continue
        err = abs(value - truth)
        if err >= 1_000:
            settled = None
        elif settled is None:
            settled = row[0]
        if row[0] - joined >= warmup_s * 1e6:
            errs.append(err)
    errs.sort()
    if not errs:
        return None
    return {
        "p50": errs[len(errs) // 2],
        "p99": errs[int(len(errs) * 0.99)],
        "to_1ms_s": None if settled is None else (settled - joined) / 1e6,
    }


def summarize(cell: dict[str, Any], warmup_s: float) -> dict[str, Any]:
    out, truth = cell["out"], cell["truth"]
    py, node, ircam = out["python"], out["node"], out["ircam"]
    return {
        "ours (Python)": errors(py["samples"], 1, truth, py["joined_us"], warmup_s),
        "ours (Node, bbx-client.js)": errors(
            node["samples"], 1, truth, node["joined_us"], warmup_s
        ),
        "@ircam/sync": errors(ircam["samples"], 1, truth, ircam["joined_us"], warmup_s),
        "naive (last ping)": errors(py["samples"], 2, truth, py["joined_us"], warmup_s),
        # The server's view of the Python phone: client minus server, so -truth.
        "server's view": errors(
            [[t, -v] for t, v in cell["views"]], 1, truth, py["joined_us"], warmup_s
        ),
    }


# ---- Chromium (idle loopback only) ------------------------------------------------


def run_chromium(seconds: float) -> dict[str, Any] | None:
    """bbx-client.js in headless Chromium. The page's performance.now() is mapped to
    CLOCK_MONOTONIC by bracketing page reads between ours (the tightest of 300, before
    and after); `map_uncertainty_us` is half that bracket."""
    import shutil

    chromium = os.environ.get("BBX_CHROMIUM") or shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not chromium:
        return None
    server = Server()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium, headless=True, args=["--no-sandbox"]
            )
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.port}/")

            def mapping() -> tuple[float, float]:
                best = (0.0, float("inf"))
                for _ in range(300):
                    a = time.monotonic_ns() / 1e3
                    p = page.evaluate("performance.now()") * 1e3
                    b = time.monotonic_ns() / 1e3
                    if b - a < best[1]:
                        best = ((a + b) / 2 - p, b - a)
                return best

            before = mapping()
            page.evaluate(
                """async ([code, seconds]) => {
                  const { BbxClient } = await import("/bbx-client.js");
                  const c = new BbxClient({ url: `ws://${location.host}/`, roomCode: code });
                  await c.connect();
                  window.joined = performance.now() * 1e3;
                  window.samples = [];
                  const timer = setInterval(() => {
                    const local = performance.now() * 1e3;
                    window.samples.push([local, c.clock.offsetAt(local)]);
                  }, 50);
                  await new Promise((r) => setTimeout(r, seconds * 1e3));
                  clearInterval(timer);
                }""",
                [server.code, seconds],
            )
            samples = page.evaluate("window.samples")
            joined = page.evaluate("window.joined")
            after = mapping()
            browser.close()
    finally:
        server.stop()
    shift = (before[0] + after[0]) / 2
    return {
        "samples": [[t + shift, est - shift] for t, est in samples],
        "joined_us": joined + shift,
        "truth": -server.origin_us,
        "map_uncertainty_us": max(before[1], after[1]) / 2,
        "map_drift_us": after[0] - before[0],
    }


# ---- drift: recorded delays replayed with a 100 ppm fast client clock ---------------


def delays_of(cell: dict[str, Any]) -> list[tuple[float, float]]:
    """One-way (up, down) µs of each recorded exchange of the Python client."""
    truth = cell["truth"]
    out = []
    for t1, st, t4 in cell["out"]["python"]["exchanges"]:
        arrive = st - truth  # the server's stamp as CLOCK_MONOTONIC µs
        out.append((arrive - t1, t4 - arrive))
    return out


def replay_ours(delays: list[tuple[float, float]], minutes: float, ppm: float, seed: int):
    """Our filter and the naive estimate on a simulated client whose clock runs ppm
    fast; delays drawn from the recording in order, cycling."""
    rng = random.Random(seed)
    start = rng.randrange(len(delays))
    est = OffsetEstimator()
    k = start
    true_t = 0.0  # true time (server clock), µs
    local = lambda t: t * (1 + ppm * 1e-6) + 5_000.0  # noqa: E731 - the client's clock
    errs_ours, errs_naive = [], []
    naive = None
    next_ping = 0.0
    end = minutes * 60e6
    sample = 0.0
    while true_t < end:
        up, down = delays[k % len(delays)]
        k += 1
        t1 = local(next_ping)
        server = next_ping + up
        t4 = local(next_ping + up + down)
        est.add_sample(t1, server, server, t4)
        naive = server - (t1 + t4) / 2
        pong_t = next_ping + up + down
        next_ping = next_ping + est.ping_interval_us / (1 + ppm * 1e-6)
        while sample < next_ping:
            if sample >= pong_t and sample > 30e6:
                truth = sample - local(sample)  # server minus local
                errs_ours.append(abs(est.offset_at(local(sample)) - truth))  # type: ignore[operator]
                errs_naive.append(abs(naive - truth))
            sample += 50e3
        true_t = next_ping
    return errs_ours, errs_naive


def replay_ircam(delays: list[tuple[float, float]], minutes: float, ppm: float) -> list[float]:
    done = subprocess.run(
        ["node", str(HERE / "clock_replay.mjs"), str(minutes), str(ppm)],
        input=json.dumps(delays),
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(done.stdout)


def pct(errs: list[float]) -> tuple[float, float]:
    errs = sorted(errs)
    return errs[len(errs) // 2], errs[int(len(errs) * 0.99)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--only", default="", help="cell names separated by ';'")
    ap.add_argument("--drift-minutes", type=float, default=10.0)
    ap.add_argument("--json", type=Path, help="write the raw results here")
    args = ap.parse_args()
    ensure_npm()
    names = [n for n in CELLS if not args.only or n in args.only.split(";")]
    cells = {}
    table = {}
    for i, name in enumerate(names):
        print(f"... {name}", file=sys.stderr, flush=True)
        cells[name] = run_cell(name, args.seconds, seed=i)
        table[name] = summarize(cells[name], args.warmup)
    chromium = None
    if "idle" in names:
        print("... idle (Chromium)", file=sys.stderr, flush=True)
        chromium = run_chromium(args.seconds)
    print(f"\n|error| µs after {args.warmup:.0f} s, p50 / p99 (to 1 ms: seconds from join)\n")
    cols = [
        "ours (Python)",
        "ours (Node, bbx-client.js)",
        "@ircam/sync",
        "naive (last ping)",
        "server's view",
    ]
    print("| cell | " + " | ".join(cols) + " | ours p99 / ircam p99 |")
    print("|---|" + "---|" * (len(cols) + 1))
    for name, row in table.items():
        cells_txt = []
        for c in cols:
            r = row[c]
            if r is None:
                cells_txt.append("-")
                continue
            conv = "" if r["to_1ms_s"] is None else f" ({r['to_1ms_s']:.1f} s)"
            cells_txt.append(f"{r['p50']:.0f} / {r['p99']:.0f}{conv}")
        ratio = ""
        if row["ours (Python)"] and row["@ircam/sync"]:
            ratio = f"{row['ours (Python)']['p99'] / max(row['@ircam/sync']['p99'], 1):.2f}x"
        print(f"| {name} | " + " | ".join(cells_txt) + f" | {ratio} |")
    if chromium is not None:
        r = errors(chromium["samples"], 1, chromium["truth"], chromium["joined_us"], args.warmup)
        if r is not None:
            print(
                f"\nChromium, idle loopback (bbx-client.js; performance.now() clamped to "
                f"100 µs): {r['p50']:.0f} / {r['p99']:.0f} µs, to 1 ms in "
                f"{r['to_1ms_s'] or float('nan'):.1f} s (page clock mapped within "
                f"±{chromium['map_uncertainty_us']:.0f} µs, moved "
                f"{chromium['map_drift_us']:.0f} µs over the run)"
            )
    drift_rows = []
    for name in ("idle", "(10,5)"):
        if name not in cells:
            continue
        d = delays_of(cells[name])
        ours, naive = replay_ours(d, args.drift_minutes, 100.0, seed=1)
        ircam = replay_ircam(d, args.drift_minutes, 100.0)
        drift_rows.append((name, pct(ours), pct(ircam), pct(naive)))
    if drift_rows:
        print(
            f"\n100 ppm drift, {args.drift_minutes:.0f} min simulated on recorded delays, "
            "|error| µs after 30 s, p50 / p99\n"
        )
        print("| delays from | ours | @ircam/sync | naive | ours p99 / ircam p99 |")
        print("|---|---|---|---|---|")
        for name, o, i, n in drift_rows:
            print(
                f"| {name} | {o[0]:.0f} / {o[1]:.0f} | {i[0]:.0f} / {i[1]:.0f} | "
                f"{n[0]:.0f} / {n[1]:.0f} | {o[1] / max(i[1], 1):.2f}x |"
            )
    if args.json:
        args.json.write_text(json.dumps({"table": table, "drift": drift_rows}, indent=1))


if __name__ == "__main__":
    main()
