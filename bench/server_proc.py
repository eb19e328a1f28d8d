"""One server under test, in its own process, steered through stdin (bench_server.py).

Usage: python bench/server_proc.py ours|baseline|picows ROOMS
       python bench/server_proc.py pool ROOMS PROCESSES   (bbx_net.serve_pool)
Prints one JSON line {"port", "rooms", "pids"} once listening (pids: the server
processes whose CPU counts, when they are not this one), then answers stdin lines:
  stats                     -> {"accepted", "rss_kib", "clients"}
  viz HZ SECONDS            -> 64-float visualization broadcasts; data[0] = send time
  param HZ SECONDS          -> BroadcastParam("probe", send time)
  quit
Send times are time.monotonic() (system-wide on Linux), so the load generator can
compute delivery latency. An audio-like thread drains the ring / queue every 2 ms.

Experiment knobs (ours only): BBX_FPT=N sets the frames handled per connection per
loop turn; BBX_LOOP=asyncio runs on the default loop instead of uvloop.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def paced(hz: float, seconds: float, send: Any) -> None:
    """Calls send(time.monotonic()) `hz` times a second for `seconds` (host thread)."""
    end = time.monotonic() + seconds
    next_t = time.monotonic()
    while time.monotonic() < end:
        send(time.monotonic())
        next_t += 1 / hz
        time.sleep(max(0.0, next_t - time.monotonic()))


def say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def run_ours(n_rooms: int) -> None:
    from bbx_net import MESSAGE_DTYPE, net_buffer
    from bbx_net.websocket import CommandChannel, WsServer

    if "BBX_FPT" in os.environ:  # experiment knob: events per connection per loop turn
        import bbx_net.websocket.server as server_module

        server_module._EVENTS_PER_TURN = int(os.environ["BBX_FPT"])
    producer, consumer = net_buffer(65536)
    commands = CommandChannel(1024)
    server = WsServer(_bench_config(), producer, commands)
    codes = [await commands.create_room() for _ in range(n_rooms)]
    await server.start()
    stop = threading.Event()

    def audio() -> None:
        out = np.zeros(4096, MESSAGE_DTYPE)
        while not stop.is_set():
            time.sleep(0.002)
            while consumer.drain_into(out) == len(out):
                pass

    threading.Thread(target=audio, daemon=True).start()
    loop = asyncio.get_running_loop()

    broadcast = _broadcaster(commands.send_threadsafe)

    def stats() -> dict[str, Any]:
        st = server.stats()
        return {"accepted": st.accepted, "rss_kib": rss_kib(), "clients": st.clients}

    say({"port": server.port, "rooms": codes})
    await control(loop, broadcast, stats)
    stop.set()
    await server.stop()


def _bench_config() -> Any:
    """Ours (in-process or pooled): limits out of the way of the bench's loads."""
    from bbx_net.websocket import RoomConfig, WsServerConfig

    return WsServerConfig(
        bind_addr=("127.0.0.1", 0),
        max_rooms=5000,
        room=RoomConfig(max_clients=1000),
        join_burst=1_000_000,
        join_per_hour=1e9,
        # The load generator is one address standing in for N phones, all opening at
        # once: the per-address cap on connections not yet joined (64) would refuse
        # most of a storm of 500 that distinct phones would not hit.
        max_unjoined_per_address=100_000,
    )


def _broadcaster(send_command: Any) -> Any:
    """broadcast(kind, hz, seconds) for ours: paced BroadcastParam("probe", t) or
    64-float visualizations with data[0] = t, handed to `send_command`."""
    from bbx_net.websocket import ServerCommand

    def broadcast(kind: str, hz: float, seconds: float) -> None:
        def send(now: float) -> None:
            if kind == "viz":
                send_command(ServerCommand.BroadcastVisualization([now] + [0.5] * 63))
            else:
                send_command(ServerCommand.BroadcastParam("probe", now))

        paced(hz, seconds, send)

    return broadcast


async def run_pool(n_rooms: int, processes: int) -> None:
    """bbx_net.serve_pool: `processes` server processes on one port, their rings
    drained together by an audio-like thread here (bind_block over all of them)."""
    from bbx_net import EVENT_DTYPE, serve_pool

    pool = serve_pool(_bench_config(), processes, 65536)
    codes = [pool.create_room_threadsafe() for _ in range(n_rooms)]
    stop = threading.Event()
    drained = [0]

    def audio() -> None:
        out = np.zeros(4096, EVENT_DTYPE)
        drain = pool.bind_block(out, 48_000, 256)
        clock = pool.clock
        while not stop.is_set():
            time.sleep(0.002)
            while (n := drain.drain(clock.now_us())) == len(out):
                drained[0] += n
            drained[0] += n

    threading.Thread(target=audio, daemon=True).start()
    loop = asyncio.get_running_loop()

    broadcast = _broadcaster(pool.send_threadsafe)

    def stats() -> dict[str, Any]:
        per = pool.stats()
        return {
            "accepted": sum(st.accepted for st in per),
            "rss_kib": sum(rss_kib(s.pid) for s in pool.servers),
            "clients": sum(st.clients for st in per),
            "per_process_clients": [st.clients for st in per],
            "drained": drained[0],
        }

    say({"port": pool.port, "rooms": codes, "pids": [s.pid for s in pool.servers]})
    await control(loop, broadcast, stats)
    stop.set()
    await asyncio.to_thread(pool.shutdown)


async def run_baseline(n_rooms: int) -> None:
    from baseline_server import BaselineServer, serve

    impl = BaselineServer()
    codes = [impl.create_room() for _ in range(n_rooms)]
    ws_server = await serve(impl, "127.0.0.1", 0)
    port = ws_server.sockets[0].getsockname()[1]
    stop = threading.Event()

    def audio() -> None:
        while not stop.is_set():
            time.sleep(0.002)
            impl.drain_audio_queue()

    threading.Thread(target=audio, daemon=True).start()
    loop = asyncio.get_running_loop()

    def broadcast(kind: str, hz: float, seconds: float) -> None:
        def send(now: float) -> None:
            if kind == "viz":
                msg = {"type": "visualization", "data": [now] + [0.5] * 63}
            else:
                msg = {"type": "update", "param": "probe", "value": now}
            asyncio.run_coroutine_threadsafe(impl.broadcast(msg), loop)

        paced(hz, seconds, send)

    def stats() -> dict[str, Any]:
        clients = sum(len(m) for m in impl.rooms.values())
        return {"accepted": impl.accepted, "rss_kib": rss_kib(), "clients": clients}

    say({"port": port, "rooms": codes})
    await control(loop, broadcast, stats)
    stop.set()
    ws_server.close()


async def run_picows(n_rooms: int) -> None:
    """The picows peer: the same room protocol on picows (a Cython WebSocket library)
    and orjson, the way its documentation writes a server: one listener per
    connection, frames handled in on_ws_frame, one transport.send per room member."""
    import queue
    import random
    import uuid

    import orjson
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

    rooms: dict[str, set[WSTransport]] = {}
    while len(rooms) < n_rooms:
        rooms.setdefault(f"{random.randint(0, 9999):04d}", set())
    audio_queue: queue.SimpleQueue[tuple[str, float, str, float]] = queue.SimpleQueue()
    counts = {"accepted": 0, "clients": 0}
    start = time.monotonic()
    text = WSMsgType.TEXT

    def now_us() -> int:
        return int((time.monotonic() - start) * 1e6)

    class Listener(WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.room: set[WSTransport] | None = None
            self.node = str(uuid.uuid4())

        def on_ws_connected(self, transport: WSTransport) -> None:
            counts["clients"] += 1

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            counts["clients"] -= 1
            if self.room is not None:
                self.room.discard(transport)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
                return
            if frame.msg_type != text:
                return
            try:
                msg = orjson.loads(frame.get_payload_as_memoryview())
            except orjson.JSONDecodeError:
                transport.send(text, b'{"type":"error","code":"INVALID_MESSAGE"}')
                return
            kind = msg.get("type")
            if kind == "join":
                members = rooms.get(msg.get("room_code"))
                if members is None:
                    transport.send(text, b'{"type":"error","code":"INVALID_ROOM"}')
                    return
                self.room = members
                members.add(transport)
                transport.send(
                    text,
                    orjson.dumps(
                        {"type": "welcome", "node_id": self.node, "server_time": now_us()}
                    ),
                )
                transport.send(text, b'{"type":"state","params":[]}')
            elif self.room is None:
                transport.send(text, b'{"type":"error","code":"NOT_JOINED"}')
            elif kind == "param":
                name, value = msg["param"], float(msg["value"])
                audio_queue.put((name, value, self.node, time.monotonic()))
                counts["accepted"] += 1
                update = orjson.dumps({"type": "update", "param": name, "value": value})
                for other in self.room:
                    if other is not transport:
                        other.send(text, update)
            elif kind == "trigger":
                audio_queue.put((msg["name"], 0.0, self.node, time.monotonic()))
                counts["accepted"] += 1
            elif kind == "ping":
                transport.send(
                    text,
                    orjson.dumps(
                        {"type": "pong", "client_time": msg["client_time"], "server_time": now_us()}
                    ),
                )
            elif kind == "sync":
                transport.send(text, b'{"type":"state","params":[]}')

    server = await ws_create_server(lambda _request: Listener(), "127.0.0.1", 0)
    stop = threading.Event()

    def audio() -> None:
        while not stop.is_set():
            time.sleep(0.002)
            try:
                while True:
                    audio_queue.get_nowait()
            except queue.Empty:
                pass

    threading.Thread(target=audio, daemon=True).start()
    loop = asyncio.get_running_loop()

    def broadcast(kind: str, hz: float, seconds: float) -> None:
        def send_all(frame: bytes) -> None:
            for members in rooms.values():
                for transport in list(members):
                    transport.send(text, frame)

        def send(now: float) -> None:
            if kind == "viz":
                frame = orjson.dumps({"type": "visualization", "data": [now] + [0.5] * 63})
            else:
                frame = orjson.dumps({"type": "update", "param": "probe", "value": now})
            loop.call_soon_threadsafe(send_all, frame)

        paced(hz, seconds, send)

    def stats() -> dict[str, Any]:
        return {"accepted": counts["accepted"], "rss_kib": rss_kib(), "clients": counts["clients"]}

    say({"port": server.sockets[0].getsockname()[1], "rooms": list(rooms)})
    await control(loop, broadcast, stats)
    stop.set()
    server.close()


async def control(loop: asyncio.AbstractEventLoop, broadcast: Any, stats: Any) -> None:
    """Reads commands from stdin on a thread; answers on stdout."""
    done = asyncio.Event()

    def reader() -> None:
        for line in sys.stdin:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "quit":
                break
            if parts[0] == "stats":
                fut = asyncio.run_coroutine_threadsafe(_call(stats), loop)
                say(fut.result(30))
            elif parts[0] in ("viz", "param"):
                broadcast(parts[0], float(parts[1]), float(parts[2]))
                say({"done": parts[0]})
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=reader, daemon=True).start()
    await done.wait()


async def _call(fn: Any) -> Any:
    return fn()


def main() -> None:
    impl, n_rooms = sys.argv[1], int(sys.argv[2])
    if impl == "pool":
        asyncio.run(run_pool(n_rooms, int(sys.argv[3])))  # the servers pick their loop
        return
    runners = {"ours": run_ours, "baseline": run_baseline, "picows": run_picows}
    coro = runners[impl](n_rooms)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        if impl in ("ours", "picows") and os.environ.get("BBX_LOOP") != "asyncio":
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(coro)
        else:
            asyncio.run(coro)  # the typical user: default loop


if __name__ == "__main__":
    main()
