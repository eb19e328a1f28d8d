"""Phones for the audio-host test and bench: N lean clients moving `x` at R Hz.

`python bench/host_load.py HOST PORT CODE KEY N RATE SECONDS` (own process, so the
load's CPU is not the host's); prints `sent N` at the end. CODE `@rooms.json` (with
KEY `-`) spreads the phones over the rooms listed there, one room per phone when there
are enough (no echo); one code puts them all in one room (every update echoes).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import loadgen  # noqa: E402


async def phones(
    host: str, port: int, code: str, key: str, n: int, rate: float, seconds: float
) -> int:
    if code.startswith("@"):
        with open(code[1:]) as f:
            rooms = [tuple(r) for r in json.load(f)["rooms"]]
    else:
        rooms = [(code, key)]

    async def join(i: int) -> loadgen.Client:
        client = await loadgen.connect(host, port)
        room, room_key = rooms[i % len(rooms)]
        client.write(loadgen.json_frame(type="join", room_code=room, key=room_key))
        await asyncio.wait_for(client.welcome, 20)
        return client

    clients: list[loadgen.Client] = []
    for start in range(0, n, 25):  # in small waves: a join storm is another bench
        clients += await asyncio.gather(*(join(i) for i in range(start, min(n, start + 25))))
    frames = [loadgen.json_frame(type="param", param="x", value=i / 100) for i in range(100)]
    sent = 0
    period = 1.0 / rate
    deadline = time.monotonic() + seconds
    tick = time.monotonic()
    while n and time.monotonic() < deadline:
        for i, client in enumerate(clients):
            client.write(frames[(sent + i) % 100])
        sent += len(clients)
        tick += period
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
    for client in clients:
        client.close()
    return sent


if __name__ == "__main__":
    host, port, code, key, n, rate, seconds = sys.argv[1:8]
    total = asyncio.run(phones(host, int(port), code, key, int(n), float(rate), float(seconds)))
    print(f"sent {total}", flush=True)
