"""Profiles our server's hot path under closed-loop ingest (py-spy, from PyPI).

    python bench/profile_server.py [--clients 100] [--seconds 8] [--out profile.txt]

Starts `server_proc.py ours N` under `py-spy record --native` pinned to core 0, floods
it from N lean clients (the same flood as bench_server.py's "max accepted") on core 1,
and prints the event-loop thread's top frames by own time and by inclusive time.
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
from bench_server import flood  # noqa: E402

import loadgen  # noqa: E402


async def flood_clients(port: int, rooms: list[str], n: int, seconds: float) -> None:
    clients = [
        await loadgen.connect_and_join("127.0.0.1", port, rooms[i % len(rooms)]) for i in range(n)
    ]
    await flood(clients, seconds)  # the same flood as bench_server.py's "max accepted"
    for c in clients:
        c.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--out", default="/tmp/bbx-profile.txt")
    args = ap.parse_args()
    os.sched_setaffinity(0, {1})
    server = subprocess.Popen(
        [
            "py-spy",
            "record",
            "--native",
            "--format",
            "raw",
            "-r",
            "500",
            "-o",
            args.out,
            "--",
            "taskset",
            "-c",
            "0",
            sys.executable,
            str(HERE / "server_proc.py"),
            "ours",
            str(args.clients),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    line = server.stdout.readline()
    while line and not line.startswith("{"):  # py-spy's own lines come first
        line = server.stdout.readline()
    first = json.loads(line)
    asyncio.run(flood_clients(first["port"], first["rooms"], args.clients, args.seconds))
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
