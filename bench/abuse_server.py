"""One server at default settings (params=[]: any name), for bench_abuse.py.

Usage: python bench/abuse_server.py   (run with the Python whose bbx_net is measured)
Prints {"port", "code", "key"} once listening, then answers stdin lines:
  stats  -> {"rss_kib", "connections", "clients", "params", "internal_errors"}
  quit
Only API that every release has is used, so an older checkout's Python can run it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main() -> None:
    from bbx_net import MESSAGE_DTYPE, net_buffer
    from bbx_net.websocket import CommandChannel, WsServer, WsServerConfig

    producer, consumer = net_buffer(65536)
    commands = CommandChannel()
    server = WsServer(WsServerConfig(bind_addr=("127.0.0.1", 0)), producer, commands)
    code = await commands.create_room()
    await server.start()
    room_key = getattr(server, "room_key", None)
    stop = threading.Event()

    def audio() -> None:
        out = np.zeros(4096, MESSAGE_DTYPE)
        while not stop.is_set():
            time.sleep(0.002)
            while consumer.drain_into(out) == len(out):
                pass

    threading.Thread(target=audio, daemon=True).start()
    loop = asyncio.get_running_loop()
    say({"port": server.port, "code": code, "key": room_key(code) if room_key else None})

    def stats() -> dict[str, Any]:
        st = server.stats()
        return {
            "rss_kib": rss_kib(),
            "connections": getattr(st, "connections", -1),
            "clients": st.clients,
            "params": len(server.param_values()),
            "internal_errors": getattr(st, "internal_errors", -1),
        }

    done = asyncio.Event()

    def reader() -> None:
        for line in sys.stdin:
            if line.strip() == "quit":
                break
            if line.strip() == "stats":
                fut = asyncio.run_coroutine_threadsafe(_call(stats), loop)
                say(fut.result(30))
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=reader, daemon=True).start()
    await done.wait()
    stop.set()
    await server.stop()


async def _call(fn: Any) -> Any:
    return fn()


if __name__ == "__main__":
    asyncio.run(main())
