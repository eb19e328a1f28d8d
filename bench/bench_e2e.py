"""End to end: a phone schedules events 100 ms ahead at known true times; at which
sample does the audio side play them? Over loopback and through (10, 5) ms jitter.

    python bench/bench_e2e.py [--seconds 60] [--events-after 30]

The server runs here with a simulated audio device: a thread that wakes for each
256-frame block at 48 kHz (sleeping, so with real wake-up lateness), takes the block
start from BlockClock and drains the ring with drain_block. Each event's frame is
turned into true time from the device's own schedule (CLOCK_MONOTONIC, shared with the
phones), and compared with the time the phone meant (its CLOCK_MONOTONIC stamp plus
100 ms). `--tick` takes block starts from the clock read at each wake-up instead, as
the README's loop did before BlockClock. Two phones run at once in each cell: one
schedules by our estimate, one by the naive last-ping estimate
(bench/clock_client.py), through the same relay.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_clock import Server, start_relay, stop_relay  # noqa: E402

from bbx_net import EVENT_DTYPE, BlockClock, hash_param_name  # noqa: E402
from bbx_net.websocket import ParamSpec  # noqa: E402

RATE, BLOCK = 48_000, 256
CELLS = ["loopback", "(10,5)"]


class Device(threading.Thread):
    """The audio callback: rendered[value] = true CLOCK_MONOTONIC µs of the event's frame."""

    def __init__(self, server: Server, tick: bool = False) -> None:
        super().__init__(daemon=True)
        self.tick = tick  # block start = the clock read at each wake-up (the old way)
        self.server = server
        self.stop = threading.Event()
        self.rendered: dict[int, float] = {}
        self.late_us: list[float] = []

    def run(self) -> None:
        clock = self.server.server.clock
        blocks = BlockClock(RATE, BLOCK)
        out = np.zeros(256, EVENT_DTYPE)
        wanted = hash_param_name("e2e")
        t0 = time.monotonic_ns() / 1e3 + 10_000
        k = 0
        while not self.stop.is_set():
            due = t0 + k * BLOCK * 1e6 / RATE  # the device's frame clock
            left = due - time.monotonic_ns() / 1e3
            if left > 0:
                time.sleep(left / 1e6)
            now = clock.now_us()
            self.late_us.append(now + self.server.origin_us - due)
            start = now if self.tick else blocks.next_block(now)
            n = self.server.consumer.drain_block(out, start, RATE, BLOCK)
            for e in out[:n]:
                if e["param_hash"] == wanted:
                    self.rendered[int(e["payload"][0])] = due + e["sample_offset"] * 1e6 / RATE
            k += 1


def run_cell(name: str, seconds: float, after: float, tick: bool) -> dict[str, list[float]]:
    server = Server(params=[ParamSpec("e2e", 0.0, 0.0, 1e6)])
    device = Device(server, tick)
    device.start()
    relay = None
    port = server.port
    if name != "loopback":
        relay, port = start_relay(server.port, name, seed=5)
    url = f"ws://127.0.0.1:{port}/"
    client = [sys.executable, str(HERE / "clock_client.py"), url, server.code, str(seconds)]
    files = {k: tempfile.TemporaryFile("w+") for k in ("ours", "naive")}  # no pipe to fill
    procs = {
        "ours": subprocess.Popen([*client, str(after), "0", "ours"], stdout=files["ours"]),
        "naive": subprocess.Popen([*client, str(after), "100000", "naive"], stdout=files["naive"]),
    }
    result = {}
    try:
        for name, p in procs.items():
            p.wait(timeout=seconds + 60)
            files[name].seek(0)
            events = json.loads(files[name].read())["events"]
            time.sleep(0.3)  # the last events are due 100 ms after they were sent
            errs = []
            for value, meant in events:
                played = device.rendered.get(int(value))
                if played is not None:
                    errs.append(abs(played - meant) * RATE / 1e6)
            result[name] = errs
            result[name + " lost"] = [len(events) - len(errs)]
    finally:
        for p in procs.values():
            p.kill()
        for f in files.values():
            f.close()
        device.stop.set()
        device.join(5)
        stop_relay(relay)
        server.stop()
    late = sorted(device.late_us)
    result["wake-up lateness p99 µs"] = [late[int(len(late) * 0.99)]]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--events-after", type=float, default=30.0)
    ap.add_argument(
        "--tick", action="store_true", help="block starts from clock.tick() (no BlockClock)"
    )
    args = ap.parse_args()
    print("| path | estimate | events | lost | |error| samples p50 | p99 | max |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in CELLS:
        print(f"... {name}", file=sys.stderr, flush=True)
        r = run_cell(name, args.seconds, args.events_after, args.tick)
        for est in ("ours", "naive"):
            errs = sorted(r[est])
            if not errs:
                print(f"| {name} | {est} | 0 | {r[est + ' lost'][0]} | - | - | - |")
                continue
            p50, p99 = errs[len(errs) // 2], errs[int(len(errs) * 0.99)]
            print(
                f"| {name} | {est} | {len(errs)} | {r[est + ' lost'][0]} | {p50:.1f} | "
                f"{p99:.1f} | {errs[-1]:.1f} |"
            )
        print(
            f"(device wake-up lateness p99 {r['wake-up lateness p99 µs'][0]:.0f} µs)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
