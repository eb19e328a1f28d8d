"""Profiles our server's hot path under closed-loop ingest (py-spy, from PyPI).

    python bench/profile_server.py [--clients 100] [--seconds 8] [--paced HZ] [--out F]

Starts `server_proc.py ours N` pinned to core 0, joins N lean clients from core 1, then
records the server with `py-spy record --native --pid` while the clients flood it (the
same flood as bench_server.py's "max accepted"),
and prints the event-loop thread's top frames by own time and by inclusive time.
With --paced HZ each client sends HZ params a second instead (bench_server.py's
"60 Hz" load), for the CPU cost of a steady load rather than of a flood.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from bench_server import flood, paced  # noqa: E402

import loadgen  # noqa: E402


async def load_clients(
    port: int, rooms: list[str], n: int, seconds: float, hz: float | None, pid: int, out: str
) -> None:
    """Joins n clients, then profiles the server (py-spy attached to `pid`) only while
    they load it: start-up and the joins stay out of the profile."""
    clients = [
        await loadgen.connect_and_join("127.0.0.1", port, rooms[i % len(rooms)]) for i in range(n)
    ]
    spy = await asyncio.create_subprocess_exec(
        *("py-spy", "record", "--native", "--format", "raw", "-r", "500", "-o", out),
        *("--pid", str(pid), "--duration", str(int(seconds) + 2)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)  # py-spy attaches
    if hz is None:
        await flood(clients, seconds)  # the same flood as bench_server.py's "max accepted"
    else:
        await paced(clients, hz, seconds)
    await asyncio.wait_for(spy.wait(), 60)
    for c in clients:
        c.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--paced", type=float, help="params per second per client (no flood)")
    ap.add_argument("--out", default="/tmp/bbx-profile.txt")
    args = ap.parse_args()
    os.sched_setaffinity(0, {1})
    server = subprocess.Popen(
        [sys.executable, str(HERE / "server_proc.py"), "ours", str(args.clients)],
        preexec_fn=lambda: os.sched_setaffinity(0, {0}),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    first = json.loads(server.stdout.readline())
    asyncio.run(
        load_clients(
            first["port"],
            first["rooms"],
            args.clients,
            args.seconds,
            args.paced,
            server.pid,
            args.out,
        )
    )
    server.stdin.write("quit\n")
    server.stdin.flush()
    server.wait(60)
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in Path(args.out).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not any("Runner.run" in f for f in frames):
            continue  # the stdin reader and the audio-like drain thread, mostly asleep
        n = int(count)
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    print(f"{total} samples\n\nown time:")
    for f, n in own.most_common(25):
        print(f"  {100 * n / total:5.1f}%  {f}")
    print("\ninclusive:")
    for f, n in incl.most_common(30):
        print(f"  {100 * n / total:5.1f}%  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
