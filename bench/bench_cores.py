"""Past one core: one server process against a pool of two (bbx_net.serve_pool).

The same load generator and loads as bench_server.py (each phone in its own room, so
no echo), against `serve_pool` with 1 and with 2 server processes on one port
(SO_REUSEPORT). Each pool's rings are drained together by an audio-like thread
(`pool.bind_block`) in the process that started it.

This machine has 2 cores, and the load generator needs one of them too, so the two
setups are:
  1 process:   the server on core 0, the load generator on core 1 (as bench_server);
  2 processes: the servers and the load generator share cores 0 and 1.
A host with more cores than server processes does better than the second row.

Measured per setup:
  (a) max ingest, closed loop: msg/s accepted, server CPU % (all processes; 100 = one
      core), load generator CPU %;
  (b) paced 60 Hz per phone, for N phones beyond what one process keeps up with:
      accepted msg/s against offered, server CPU % in all and of the busiest process,
      and the round trip p99 of a probe phone pinging every 20 ms meanwhile;
  and how the kernel spread the phones over the processes.

Each setup runs --repeat times (alternating with the other); the table gives medians.

Run: python bench/bench_cores.py [--quick]   (Linux)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_server import (  # noqa: E402
    TICKS,
    Window,
    flood,
    join_all,
    paced,
    pct,
    probing,
    server,
    settle,
)

CORES = {0: {0}, 1: {1}, "all": {0, 1}}


async def measure(processes: int, n: int, seconds: float, flood_n: int) -> dict[str, Any]:
    """One setup under load: `flood_n` phones flooding, `n` phones at 60 Hz."""
    spread = processes > 1
    server_cores = CORES["all"] if spread else CORES[0]
    os.sched_setaffinity(0, CORES["all"] if spread else CORES[1])
    out: dict[str, Any] = {}
    async with server("pool", n, (str(processes),), server_cores) as sp:
        clients, waits = await join_all(sp, n, sp.rooms)
        out["join p99 ms"] = pct(waits, 0.99) * 1000
        stats = await sp.ask("stats")
        out["phones per process"] = stats["per_process_clients"]
        # (b) paced, with a probe
        a0 = stats["accepted"]
        ticks0 = sp.cpu_of()
        async with probing(sp) as rtts:
            with Window(sp) as w:
                sent = await paced(clients, 60, seconds)
                a1 = (await sp.ask("stats"))["accepted"]
        ticks1 = sp.cpu_of()
        total = await settle(sp)
        out["60 Hz offered msg/s"] = sent / w.elapsed
        out["60 Hz accepted msg/s"] = (a1 - a0) / w.elapsed
        out["60 Hz accepted / sent (after settling)"] = (total - a0) / sent
        out["60 Hz server CPU %"] = w.server_cpu
        busiest = max(b - a for a, b in zip(ticks0[1:], ticks1[1:], strict=True))
        out["60 Hz busiest process CPU %"] = 100 * busiest / TICKS / w.elapsed
        out["60 Hz loadgen CPU %"] = w.loadgen_cpu
        out["probe p50 ms"] = pct(rtts, 0.5)
        out["probe p99 ms"] = pct(rtts, 0.99)
        # (a) closed loop, on the first flood_n phones
        with Window(sp) as w:
            await flood(clients[:flood_n], seconds)
            a2 = (await sp.ask("stats"))["accepted"]
        out["max accepted msg/s"] = (a2 - total) / w.elapsed
        out["max server CPU %"] = w.server_cpu
        out["max loadgen CPU %"] = w.loadgen_cpu
        for c in clients:
            c.close()
    return out


def median_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each measure's median over the runs (lists: the last run's)."""
    out: dict[str, Any] = {}
    for key in results[0]:
        values = [r[key] for r in results if key in r]
        out[key] = values[-1] if isinstance(values[0], list) else statistics.median(values)
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    setups = list(results)
    keys: list[str] = []
    for r in results.values():
        keys += [k for k in r if k not in keys]
    lines = [
        "| measure | " + " | ".join(setups) + " | 2 / 1 |",
        "|---|" + "---:|" * (len(setups) + 1),
    ]
    for k in keys:
        vals = [results[s].get(k) for s in setups]
        cells = [
            str(v) if isinstance(v, list) else ("" if v is None else f"{v:,.2f}") for v in vals
        ]
        ratio = ""
        if len(vals) == 2 and all(isinstance(v, float | int) and v for v in vals):
            ratio = f"{vals[1] / vals[0]:.2f}x"  # type: ignore[operator]
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer phones, 2 s windows")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--phones", type=int, nargs="+", help="N for the 60 Hz load")
    parser.add_argument("--seconds", type=float, help="length of each load window")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per setup, alternating; medians reported"
    )
    args = parser.parse_args()
    if os.cpu_count() is None or len(os.sched_getaffinity(0)) < 2:
        sys.exit("bench_cores needs 2 cores")
    sizes = args.phones or ([500] if args.quick else [1000, 1400])
    seconds = args.seconds or (2.0 if args.quick else 4.0)
    by_size: dict[int, dict[str, dict[str, Any]]] = {}
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for n in sizes:
        runs[n] = {}
        for attempt in range(args.repeat):
            for processes in (1, 2):
                name = f"{processes} process" + ("es" if processes > 1 else "")
                print(f"{name}, {n} phones at 60 Hz, run {attempt + 1}...", file=sys.stderr)
                start = time.monotonic()
                try:
                    result = await measure(processes, n, seconds, flood_n=100)
                except Exception as exc:
                    print(f"{name}: failed ({exc!r})", file=sys.stderr)
                    continue
                runs[n].setdefault(name, []).append(result)
                print(f"  {time.monotonic() - start:.0f} s", file=sys.stderr)
                if args.json:
                    args.json.write_text(json.dumps(runs, indent=1))
        by_size[n] = {name: median_of(results) for name, results in runs[n].items()}
    for n, results in by_size.items():
        print(
            f"\n### {n} phones at 60 Hz; max ingest with 100 of them (medians of {args.repeat})\n"
        )
        print(table(results))


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
