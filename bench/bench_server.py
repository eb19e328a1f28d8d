"""Our server beside a plain websockets + json baseline, under the same load.

Each server runs in its own process pinned to core 0; this script is the load
generator, pinned to core 1 (a lean raw-socket client, see loadgen.py), and reports
its own CPU too. For N = 10, 100, 500 clients (each in its own room, so no echo):
  (a) ingest: params at 60 Hz per client, then unthrottled: messages/s accepted into
      the ring (baseline: a SimpleQueue) and server CPU %;
  (b) ping round trip p50/p99 of a probe client during the 60 Hz load;
  (c) fan-out at 60 Hz of BroadcastParam and of a 64-float visualization:
      deliveries/s and delivery latency p50/p99;
  (d) join storm: all N connect and join at once, p99 time to welcome;
  (e) server memory per joined idle client;
(f) one room of 100 phones all at 60 Hz with echo on, and (g) echo latency: one phone
at 60/s in a room of 100, its change timed to each of the 99 others.

Run: python bench/bench_server.py [--quick]   (Linux: reads /proc for CPU and memory)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import resource
import shutil
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).parent))
import loadgen  # noqa: E402

HERE = Path(__file__).parent
HOST = "127.0.0.1"
TICKS = os.sysconf("SC_CLK_TCK")
NAN = float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class ServerProcess:
    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        port: int,
        rooms: list[str],
        pids: list[int] | None = None,
    ) -> None:
        self.proc, self.port, self.rooms = proc, port, rooms
        self.pids = [proc.pid] + (pids or [])  # whose CPU counts (a pool's servers too)

    async def ask(self, line: str, timeout: float = 120) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((line + "\n").encode())
        await self.proc.stdin.drain()
        reply = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        result: dict[str, Any] = json.loads(reply)
        return result

    def cpu_seconds(self) -> float:
        return sum(self.cpu_of()) / TICKS

    def cpu_of(self) -> list[int]:
        """CPU ticks so far of each process in `pids`."""
        ticks = []
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks.append(int(fields[11]) + int(fields[12]))
        return ticks


#: --before: an older checkout (its bench/ and a Python with its package installed),
#: measured as "before" beside "ours" and the baseline in the same run.
BEFORE: dict[str, Path] = {}


@contextlib.asynccontextmanager
async def server(
    impl: str, rooms: int, args: tuple[str, ...] = (), cores: set[int] | None = None
) -> AsyncIterator[ServerProcess]:
    """The server under test in its own process, on `cores` (default: core 0)."""
    cores = {0} if cores is None else cores
    cmd = [sys.executable, str(HERE / "server_proc.py"), impl, str(rooms), *args]
    if impl == "before":
        cmd = [
            str(BEFORE["python"]),
            str(BEFORE["dir"] / "bench/server_proc.py"),
            "ours",
            str(rooms),
        ]
    elif impl == "node":  # Node 20 + ws from bench/node_modules (`npm ci` in bench/)
        cmd = ["node", str(HERE / "node_server.mjs"), str(rooms)]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
        limit=2**24,
    )
    assert proc.stdout is not None
    first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
    sp = ServerProcess(proc, first["port"], first["rooms"], first.get("pids"))
    try:
        yield sp
    finally:
        with contextlib.suppress(Exception):
            assert proc.stdin is not None
            proc.stdin.write(b"quit\n")
            await proc.stdin.drain()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Window:
    """Measures wall time, server CPU and our own CPU over a stretch of load."""

    def __init__(self, sp: ServerProcess) -> None:
        self.sp = sp

    def __enter__(self) -> Window:
        self.t0, self.c0, self.l0 = time.monotonic(), self.sp.cpu_seconds(), self_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self.t0
        self.server_cpu = 100 * (self.sp.cpu_seconds() - self.c0) / self.elapsed
        self.loadgen_cpu = 100 * (self_cpu() - self.l0) / self.elapsed


async def settle(sp: ServerProcess, timeout: float = 30.0) -> int:
    """Waits until the server stops accepting (its backlog is drained)."""
    last = -1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = (await sp.ask("stats"))["accepted"]
        if now == last:
            return now
        last = now
        await asyncio.sleep(0.3)
    return last


async def join_all(
    sp: ServerProcess, n: int, rooms: list[str], on_text: Any = None
) -> tuple[list[loadgen.Client], list[float]]:
    async def one(i: int) -> loadgen.Client:
        return await loadgen.connect_and_join(HOST, sp.port, rooms[i % len(rooms)], on_text)

    clients = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 120)
    waits = [c.welcome.result() - c.t_connect for c in clients]
    return clients, waits


async def paced(clients: list[loadgen.Client], hz: float, seconds: float) -> int:
    frames = [loadgen.json_frame(type="param", param="gain", value=i / 100) for i in range(100)]
    sent = 0
    start = time.monotonic()
    ticks = int(hz * seconds)
    for tick in range(ticks):
        f = frames[tick % 100]
        for c in clients:
            c.write(f)
        sent += len(clients)
        delay = start + (tick + 1) / hz - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    return sent


async def flood(clients: list[loadgen.Client], seconds: float) -> None:
    batch = b"".join(
        loadgen.json_frame(type="param", param="gain", value=i / 100) for i in range(100)
    )
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for c in clients:
            if c.buffered() < 16384:
                c.write(batch)
        await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def probing(sp: ServerProcess) -> AsyncIterator[list[float]]:
    """A probe phone pinging every 20 ms meanwhile; yields its round trips (ms)."""
    probe = await loadgen.connect_and_join(HOST, sp.port, sp.rooms[0])
    rtts: list[float] = []
    stop = asyncio.Event()
    pinger = asyncio.create_task(probe_pings(probe, rtts, stop))
    try:
        yield rtts
    finally:
        stop.set()
        await pinger
        probe.close()


async def probe_pings(probe: loadgen.Client, rtts: list[float], stop: asyncio.Event) -> None:
    pending: dict[int, float] = {}

    def on_text(_: loadgen.Client, payload: bytes, now: float) -> None:
        if b'"pong"' in payload[:20]:
            msg = orjson.loads(payload)
            t = pending.pop(msg["client_time"], None)
            if t is not None:
                rtts.append((now - t) * 1000)

    probe.on_text = on_text
    seq = 0
    while not stop.is_set():
        seq += 1
        pending[seq] = time.monotonic()
        probe.write(loadgen.json_frame(type="ping", client_time=seq))
        await asyncio.sleep(0.02)


async def measure(impl: str, n: int, seconds: float) -> dict[str, float]:
    out: dict[str, float] = {}
    async with server(impl, n) as sp:
        base_rss = (await sp.ask("stats"))["rss_kib"]
        latencies: dict[str, list[float]] = {"viz": [], "probe": []}
        counts = {"viz": 0, "probe": 0}

        def on_text(_: loadgen.Client, payload: bytes, now: float) -> None:
            if b'"visualization"' in payload[:30]:
                counts["viz"] += 1
                latencies["viz"].append((now - orjson.loads(payload)["data"][0]) * 1000)
            elif b'"probe"' in payload:
                counts["probe"] += 1
                latencies["probe"].append((now - orjson.loads(payload)["value"]) * 1000)

        # (d) join storm
        clients, waits = await join_all(sp, n, sp.rooms, on_text)
        out["join p99 ms"] = pct(waits, 0.99) * 1000
        # (e) memory per idle client
        await asyncio.sleep(1.0)
        out["KiB/idle client"] = ((await sp.ask("stats"))["rss_kib"] - base_rss) / n
        # (c) fan-out
        for kind, name in (("param", "probe"), ("viz", "viz")):
            with Window(sp) as w:
                await sp.ask(f"{kind} 60 {seconds}")
                await asyncio.sleep(0.3)
            out[f"{kind} fan-out deliveries/s"] = counts[name] / w.elapsed
            out[f"{kind} fan-out p50 ms"] = pct(latencies[name], 0.5)
            out[f"{kind} fan-out p99 ms"] = pct(latencies[name], 0.99)
        # (a) + (b) paced ingest with a probe
        a0 = (await sp.ask("stats"))["accepted"]
        async with probing(sp) as rtts:
            with Window(sp) as w:
                await paced(clients, 60, seconds)
        a1 = await settle(sp)
        out["60 Hz accepted msg/s"] = (a1 - a0) / w.elapsed
        out["60 Hz server CPU %"] = w.server_cpu
        out["60 Hz loadgen CPU %"] = w.loadgen_cpu
        out["probe p50 ms"] = pct(rtts, 0.5)
        out["probe p99 ms"] = pct(rtts, 0.99)
        # (a) unthrottled
        with Window(sp) as w:
            await flood(clients, seconds)
            a2 = (await sp.ask("stats"))["accepted"]
        out["max accepted msg/s"] = (a2 - a1) / w.elapsed
        out["max server CPU %"] = w.server_cpu
        out["max loadgen CPU %"] = w.loadgen_cpu
        for c in clients:
            c.close()
    return out


async def one_room(impl: str, seconds: float) -> dict[str, float]:
    async with server(impl, 1) as sp:
        clients, _ = await join_all(sp, 100, sp.rooms)
        a0 = (await sp.ask("stats"))["accepted"]
        async with probing(sp) as rtts:
            with Window(sp) as w:
                sent = await paced(clients, 60, seconds)
                a1 = (await sp.ask("stats"))["accepted"]
        total = await settle(sp)
        for c in clients:
            c.close()
        return {
            "(f) accepted msg/s during load": (a1 - a0) / w.elapsed,
            "(f) accepted / sent": (total - a0) / sent,
            "(f) server CPU %": w.server_cpu,
            "(f) probe p99 ms": pct(rtts, 0.99),
        }


async def echo_latency(impl: str, seconds: float) -> dict[str, float]:
    """(g) one phone moving a slider at 60/s in a room of 100: how long its change
    takes to reach each of the 99 others (the value carries the send time)."""
    async with server(impl, 1) as sp:
        delays: list[float] = []

        def on_text(_: loadgen.Client, payload: bytes, now: float) -> None:
            if b'"echo"' in payload:
                delays.append((now - orjson.loads(payload)["value"]) * 1000)

        clients, _ = await join_all(sp, 100, sp.rooms, on_text)
        sender = clients[0]
        sender.on_text = None
        sent = 0
        with Window(sp) as w:
            start = time.monotonic()
            for tick in range(int(60 * seconds)):
                sender.write(loadgen.json_frame(type="param", param="echo", value=time.monotonic()))
                sent += 1
                delay = start + (tick + 1) / 60 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await asyncio.sleep(0.3)
        for c in clients:
            c.close()
        return {
            "(g) echo deliveries / expected": len(delays) / (sent * 99),
            "(g) echo p50 ms": pct(delays, 0.5),
            "(g) echo p99 ms": pct(delays, 0.99),
            "(g) server CPU %": w.server_cpu,
        }


async def cpu_and_ingest(impl: str, n: int, seconds: float) -> tuple[float, float]:
    """(server CPU % while n phones, each in its own room, send 60 params a second;
    msg/s accepted while they flood), measured alone: after the joins and a second of
    quiet, with nothing else running."""
    async with server(impl, n) as sp:
        clients, _ = await join_all(sp, n, sp.rooms)
        await asyncio.sleep(1.0)
        with Window(sp) as w:
            await paced(clients, 60, seconds)
        cpu = w.server_cpu
        a0 = await settle(sp)
        with Window(sp) as w:
            await flood(clients, seconds)
            a1 = (await sp.ask("stats"))["accepted"]
        for c in clients:
            c.close()
        return cpu, (a1 - a0) / w.elapsed


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else NAN


def table(results: dict[str, dict[str, float]]) -> str:
    """One table per load: every implementation measured, then ours / each peer."""
    keys: list[str] = []
    for r in results.values():
        keys += [k for k in r if k not in keys]
    groups = sorted({g.split(":")[1] for g in results})
    impls = [
        i
        for i in ("ours", "before", "node", "picows", "baseline")
        if any(g.startswith(f"{i}:") for g in results)
    ]
    peers = [i for i in impls if i != "ours"]
    lines = []
    for g in groups:
        lines.append(f"\n### {g}\n")
        lines.append(
            "| measure | "
            + " | ".join(impls)
            + " | "
            + " | ".join(f"ours/{p}" for p in peers)
            + " |"
        )
        lines.append("|---|" + "---:|" * (len(impls) + len(peers)))
        nan = float("nan")
        row = {i: results.get(f"{i}:{g}", {}) for i in impls}
        for k in keys:
            if not any(k in r for r in row.values()):
                continue
            vals = [row[i].get(k, nan) for i in impls]
            o = row.get("ours", {}).get(k, nan)
            ratios = [o / row[p][k] if row[p].get(k) else nan for p in peers]
            lines.append(
                f"| {k} | "
                + " | ".join(f"{v:.2f}" for v in vals)
                + " | "
                + " | ".join(f"{r:.2f}x" for r in ratios)
                + " |"
            )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 10, 100 only, 2 s windows")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--before",
        type=Path,
        help="an older checkout whose .venv/bin/python has its bbx_net installed: "
        "measured as 'before' in the same run",
    )
    parser.add_argument(
        "--only",
        choices=["clients", "one-room", "echo", "medians"],
        help="measure one part: the N-client table, the one-room-with-echo case, "
        "echo latency (one phone at 60/s to 99 others), or server CPU at 60 Hz and max "
        "ingest alone (medians of --repeat alternating runs)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per implementation for --only medians"
    )
    parser.add_argument("--seconds", type=float, help="length of each load window")
    args = parser.parse_args()
    impls = ["ours", "baseline"]
    if shutil.which("node") and (HERE / "node_modules" / "ws").is_dir():
        impls.insert(1, "node")
    else:
        print("no Node ws peer: run `npm ci` in bench/ (and install Node)", file=sys.stderr)
    if importlib.util.find_spec("picows") is not None:
        impls.insert(1, "picows")
    else:
        print("no picows peer: pip install '.[bench]'", file=sys.stderr)
    if args.before is not None:
        BEFORE["dir"] = args.before.resolve()
        BEFORE["python"] = BEFORE["dir"] / ".venv/bin/python"
        impls.insert(1, "before")
    os.sched_setaffinity(0, {1})
    sizes = [10, 100] if args.quick else [10, 100, 500]
    seconds = args.seconds or (2.0 if args.quick else 3.0)
    results: dict[str, dict[str, float]] = {}

    async def record(key: str, job: Any) -> None:
        # One failed measurement (a saturated baseline timing out) costs only its row.
        try:
            results[key] = await job
        except Exception as exc:
            print(f"{key}: failed ({exc!r})", file=sys.stderr)
            results[key] = {}
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))

    for n in sizes if args.only in (None, "clients") else []:
        for impl in impls:
            print(f"measuring {impl} with {n} clients...", file=sys.stderr)
            await record(f"{impl}:N={n:>3}", measure(impl, n, seconds))
    for impl in impls if args.only in (None, "one-room") else []:
        print(f"measuring {impl}, one room of 100 at 60 Hz...", file=sys.stderr)
        await record(f"{impl}:one room x100", one_room(impl, seconds))
    for impl in impls if args.only in (None, "echo") else []:
        print(f"measuring {impl}, one phone at 60/s echoed to 99...", file=sys.stderr)
        await record(f"{impl}:echo 1 -> 99", echo_latency(impl, seconds))
    if args.only == "medians":
        for n in (100, 500):
            runs: dict[str, list[tuple[float, float]]] = {impl: [] for impl in impls}
            for attempt in range(args.repeat):
                for impl in impls:
                    print(f"medians: {impl}, N={n}, run {attempt + 1}...", file=sys.stderr)
                    try:
                        runs[impl].append(await cpu_and_ingest(impl, n, args.seconds or 5.0))
                    except Exception as exc:
                        print(f"  failed ({exc!r})", file=sys.stderr)
            for impl, values in runs.items():
                results[f"{impl}:medians, N={n:>3}"] = {
                    "60 Hz server CPU % (median)": _median([v[0] for v in values]),
                    "max accepted msg/s (median)": _median([v[1] for v in values]),
                    "runs": len(values),
                }
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
