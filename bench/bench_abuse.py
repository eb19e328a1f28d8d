"""Abuse scenarios against a server at default settings, ours beside an older release.

Each scenario starts a fresh server process (bench/abuse_server.py) and attacks it on
loopback while a healthy phone (another address) keeps pinging at 20 Hz:

  ping flood     one raw client sends ping frames as fast as it can and never reads
  slot exhaustion  1,000 sockets from one address upgrade, answer pings, never join
  room squat     100 sockets from one address fill a room, then drop (seats held)
  name flood     300,000 distinct parameter names (no parameters declared)
  guessing       1,000 source addresses (127.x.y.z) x 3 wrong room codes

For each it prints server RSS growth, the healthy phone's ping p50/p99 and the outcome.

Usage: python bench/bench_abuse.py [--before DIR] [--flood-seconds 30]
  --before DIR: an older checkout whose DIR/.venv/bin/python has its bbx_net installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
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


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process, first: dict[str, Any]) -> None:
        self.proc, self.port, self.code, self.key = proc, first["port"], first["code"], first["key"]

    async def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        result: dict[str, Any] = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 60))
        return result


@contextlib.asynccontextmanager
async def server(python: str) -> AsyncIterator[Proc]:
    proc = await asyncio.create_subprocess_exec(
        python,
        str(HERE / "abuse_server.py"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=lambda: os.sched_setaffinity(0, {0}),
    )
    assert proc.stdout is not None
    sp = Proc(proc, json.loads(await asyncio.wait_for(proc.stdout.readline(), 60)))
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


async def connect(sp: Proc, address: str = HOST) -> loadgen.Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: loadgen.Client(HOST, sp.port), HOST, sp.port, local_addr=(address, 0)
    )
    await asyncio.wait_for(client.open, 10)
    return client


class Replies:
    """Collects a client's text messages (parsed)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.event = asyncio.Event()

    def __call__(self, client: loadgen.Client, payload: bytes, now: float) -> None:
        self.items.append(orjson.loads(payload))
        self.event.set()

    async def next(self, timeout: float = 5.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while not self.items:
            self.event.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), left)
        return self.items.pop(0)


async def ask(sp: Proc, msg: dict[str, Any], address: str = HOST) -> dict[str, Any] | None:
    """One fresh connection, one message, the first reply."""
    client = await connect(sp, address)
    replies = Replies()
    client.on_text = replies
    client.write(loadgen.json_frame(**msg))
    reply = await replies.next()
    client.close()
    return reply


@contextlib.asynccontextmanager
async def healthy_phone(sp: Proc) -> AsyncIterator[list[float]]:
    """A joined phone on 127.0.0.2 pinging at 20 Hz; yields its round trips (ms)."""
    client = await connect(sp, "127.0.0.2")
    rtts: list[float] = []
    sent: dict[int, float] = {}

    def on_text(c: loadgen.Client, payload: bytes, now: float) -> None:
        msg = orjson.loads(payload)
        if msg.get("type") == "pong" and msg["client_time"] in sent:
            rtts.append(1000 * (now - sent.pop(msg["client_time"])))

    client.on_text = on_text
    client.write(loadgen.json_frame(type="join", room_code=sp.code))
    await asyncio.sleep(0.2)

    async def pinger() -> None:
        seq = 0
        while True:
            seq += 1
            sent[seq] = time.monotonic()
            client.write(loadgen.json_frame(type="ping", client_time=seq))
            await asyncio.sleep(0.05)

    task = asyncio.create_task(pinger())
    try:
        yield rtts
    finally:
        task.cancel()
        client.close()


# ---- scenarios ----------------------------------------------------------------------


async def ping_flood(sp: Proc, seconds: float) -> dict[str, Any]:
    rss0 = (await sp.stats())["rss_kib"]
    loop = asyncio.get_running_loop()

    async def flooder() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, (HOST, sp.port))
        await loop.sock_sendall(
            sock,
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        await asyncio.sleep(0.05)
        return sock

    async with healthy_phone(sp) as rtts:
        sock = await flooder()
        batch = loadgen.frame(b"p" * 125, 0x9) * 256
        start = time.monotonic()
        end = start + seconds
        peak = rss0
        cuts = 0
        next_check = start
        while time.monotonic() < end:
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, batch), 0.2)
            except TimeoutError:
                pass  # the server stopped reading us
            except OSError:
                cuts += 1  # cut off: come back at once, as a flooder would
                sock.close()
                sock = await flooder()
            if time.monotonic() >= next_check:
                peak = max(peak, (await sp.stats())["rss_kib"])
                next_check += 1.0
        sock.close()
        peak = max(peak, (await sp.stats())["rss_kib"])
        await asyncio.sleep(0.5)
    outcome = f"cut off {cuts} times in {seconds:.0f} s (reconnecting at once)"
    return {
        "RSS growth MB": (peak - rss0) / 1024,
        "phone p50 ms": pct(rtts, 0.5),
        "phone p99 ms": pct(rtts, 0.99),
        "outcome": outcome,
    }


async def slot_exhaustion(sp: Proc, n: int = 1000, wait: float = 17.0) -> dict[str, Any]:
    rss0 = (await sp.stats())["rss_kib"]
    async with healthy_phone(sp) as rtts:
        clients = []
        refused = 0
        for _ in range(n):
            try:
                clients.append(await connect(sp))
            except (OSError, ConnectionError, TimeoutError):
                refused += 1
        await asyncio.sleep(1.0)
        rss1 = (await sp.stats())["rss_kib"]
        open_at_1s = sum(not c.closed for c in clients)
        await asyncio.sleep(wait)
        open_later = sum(not c.closed for c in clients)
        other = await ask(sp, {"type": "join", "room_code": sp.code}, "127.0.0.3")
        for c in clients:
            c.close()
    return {
        "RSS growth MB": (rss1 - rss0) / 1024,
        "phone p50 ms": pct(rtts, 0.5),
        "phone p99 ms": pct(rtts, 0.99),
        "outcome": f"open: {open_at_1s} at 1 s, {open_later} at {wait + 1:.0f} s; "
        f"other address: {other and other.get('code', other.get('type'))}",
    }


async def room_squat(sp: Proc) -> dict[str, Any]:
    rss0 = (await sp.stats())["rss_kib"]
    async with healthy_phone(sp) as rtts:
        squatters = []
        for _ in range(120):
            c = await connect(sp)
            replies = Replies()
            c.on_text = replies
            c.write(loadgen.json_frame(type="join", room_code=sp.code))
            reply = await replies.next()
            squatters.append(c)
            if reply and reply.get("code") == "ROOM_FULL":
                break
        live = await ask(sp, {"type": "join", "room_code": sp.code}, "127.0.0.3")
        for c in squatters:
            c.close()
        await asyncio.sleep(0.5)
        held = await ask(sp, {"type": "join", "room_code": sp.code}, "127.0.0.4")
        rss1 = (await sp.stats())["rss_kib"]
    name = lambda r: r and r.get("code", r.get("type"))  # noqa: E731
    return {
        "RSS growth MB": (rss1 - rss0) / 1024,
        "phone p50 ms": pct(rtts, 0.5),
        "phone p99 ms": pct(rtts, 0.99),
        "outcome": f"phone while squatted: {name(live)}; after they drop: {name(held)}",
    }


async def name_flood(sp: Proc, names: int = 300_000) -> dict[str, Any]:
    rss0 = (await sp.stats())["rss_kib"]
    async with healthy_phone(sp) as rtts:
        c = await connect(sp)
        c.write(loadgen.json_frame(type="join", room_code=sp.code))
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        for start in range(0, names, 1000):
            batch = b"".join(
                loadgen.json_frame(type="param", param=f"n{i}", value=0.5)
                for i in range(start, start + 1000)
            )
            c.write(batch)
            while c.buffered() > 1 << 20:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0)
        elapsed = time.monotonic() - t0
        await asyncio.sleep(1.0)
        st = await sp.stats()
        c.close()
    return {
        "RSS growth MB": (st["rss_kib"] - rss0) / 1024,
        "phone p50 ms": pct(rtts, 0.5),
        "phone p99 ms": pct(rtts, 0.99),
        "outcome": f"{st['params']} names kept ({names} sent in {elapsed:.1f} s)",
    }


async def guessing(sp: Proc, addresses: int = 1000) -> dict[str, Any]:
    rss0 = (await sp.stats())["rss_kib"]
    wrong = f"{(int(sp.code) + 1) % 10000:04d}"
    counts: dict[str, int] = {}
    async with healthy_phone(sp) as rtts:
        t0 = time.monotonic()
        for i in range(addresses):
            address = f"127.{10 + i // 250}.{i % 250}.1"
            c = await connect(sp, address)
            replies = Replies()
            c.on_text = replies
            for _ in range(3):
                c.write(loadgen.json_frame(type="join", room_code=wrong))
                reply = await replies.next()
                code = "none" if reply is None else str(reply.get("code"))
                counts[code] = counts.get(code, 0) + 1
            c.close()
        elapsed = time.monotonic() - t0
        typed = await ask(sp, {"type": "join", "room_code": sp.code}, "127.10.0.1")
        keyed = None
        if sp.key:
            msg = {"type": "join", "room_code": sp.code, "key": sp.key}
            keyed = await ask(sp, msg, "127.10.0.1")
        rss1 = (await sp.stats())["rss_kib"]
    share = counts.get("INVALID_ROOM", 0) / (elapsed / 86400) / 10_000
    name = lambda r: r and r.get("code", r.get("type"))  # noqa: E731
    return {
        "RSS growth MB": (rss1 - rss0) / 1024,
        "phone p50 ms": pct(rtts, 0.5),
        "phone p99 ms": pct(rtts, 0.99),
        "outcome": f"{counts.get('INVALID_ROOM', 0)} guesses answered in {elapsed:.0f} s "
        f"(at this pace {share:.0f}x the code space a day); right code typed: "
        f"{name(typed)}, with the key: {name(keyed) if sp.key else 'no keys'}",
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, help="older checkout with .venv/bin/python")
    parser.add_argument("--flood-seconds", type=float, default=30.0)
    parser.add_argument("--only", help="run one scenario (its title, e.g. 'ping flood')")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    impls = {"ours": sys.executable}
    if args.before is not None:
        impls["before"] = str(args.before.resolve() / ".venv/bin/python")
    scenarios = {
        "ping flood": lambda sp: ping_flood(sp, args.flood_seconds),
        "slot exhaustion": slot_exhaustion,
        "room squat": room_squat,
        "name flood": name_flood,
        "guessing": guessing,
    }
    rows = []
    for title, job in scenarios.items():
        if args.only and args.only != title:
            continue
        for impl, python in impls.items():
            print(f"{title}: {impl}...", file=sys.stderr)
            try:
                async with server(python) as sp:
                    r = await job(sp)
            except Exception as exc:
                r = {"outcome": f"failed: {exc!r}"}
            rows.append((title, impl, r))
    print("| scenario | server | RSS growth MB | phone ping p50 / p99 ms | outcome |")
    print("|---|---|---:|---:|---|")
    nan = float("nan")
    for title, impl, r in rows:
        print(
            f"| {title} | {impl} | {r.get('RSS growth MB', nan):.1f} | "
            f"{r.get('phone p50 ms', nan):.2f} / {r.get('phone p99 ms', nan):.2f} | "
            f"{r['outcome']} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
