"""The baseline: the same JSON protocol written the way a typical user would.

Plain `websockets` with its defaults (permessage-deflate offered, its own keepalive),
stdlib `json`, one task per connection, `await ws.send` for each room member, and a
`queue.SimpleQueue` to hand changes to the audio thread. Used by bench_server.py.
"""

from __future__ import annotations

import json
import queue
import random
import time
import uuid
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection


class BaselineServer:
    def __init__(self) -> None:
        self.rooms: dict[str, set[ServerConnection]] = {}
        self.clients: set[ServerConnection] = set()
        self.values: dict[str, float] = {}
        self.audio_queue: queue.SimpleQueue[tuple[str, float, str, float]] = queue.SimpleQueue()
        self.accepted = 0
        self.start = time.monotonic()

    def create_room(self) -> str:
        while True:
            code = f"{random.randint(0, 9999):04d}"
            if code not in self.rooms:
                self.rooms[code] = set()
                return code

    def now_us(self) -> int:
        return int((time.monotonic() - self.start) * 1e6)

    async def handler(self, ws: ServerConnection) -> None:
        room: str | None = None
        node = str(uuid.uuid4())
        self.clients.add(ws)
        try:
            async for raw in ws:
                try:
                    msg: dict[str, Any] = json.loads(raw)
                except ValueError:
                    await ws.send(
                        json.dumps(
                            {"type": "error", "code": "INVALID_MESSAGE", "message": "bad json"}
                        )
                    )
                    continue
                kind = msg.get("type")
                if kind == "join":
                    code = msg.get("room_code")
                    if code not in self.rooms:
                        await ws.send(
                            json.dumps(
                                {
                                    "type": "error",
                                    "code": "INVALID_ROOM",
                                    "message": "Invalid room code",
                                }
                            )
                        )
                        continue
                    room = code
                    self.rooms[code].add(ws)
                    await ws.send(
                        json.dumps(
                            {"type": "welcome", "node_id": node, "server_time": self.now_us()}
                        )
                    )
                    await ws.send(json.dumps({"type": "state", "params": []}))
                elif room is None:
                    await ws.send(
                        json.dumps({"type": "error", "code": "NOT_JOINED", "message": "join first"})
                    )
                elif kind == "param":
                    name, value = msg["param"], float(msg["value"])
                    self.values[name] = value
                    self.audio_queue.put((name, value, node, time.monotonic()))
                    self.accepted += 1
                    update = json.dumps({"type": "update", "param": name, "value": value})
                    for other in list(self.rooms.get(room, ())):
                        if other is not ws:
                            try:
                                await other.send(update)
                            except websockets.ConnectionClosed:
                                pass
                elif kind == "trigger":
                    self.audio_queue.put((msg["name"], 0.0, node, time.monotonic()))
                    self.accepted += 1
                elif kind == "ping":
                    await ws.send(
                        json.dumps(
                            {
                                "type": "pong",
                                "client_time": msg["client_time"],
                                "server_time": self.now_us(),
                            }
                        )
                    )
                elif kind == "sync":
                    await ws.send(json.dumps({"type": "state", "params": []}))
                elif kind == "leave":
                    break
        except websockets.ConnectionClosed:
            pass
        finally:
            self.clients.discard(ws)
            if room is not None:
                self.rooms.get(room, set()).discard(ws)

    async def broadcast(self, message: dict[str, Any]) -> None:
        """What a user writes for a host broadcast: one await per client."""
        text = json.dumps(message)
        for members in list(self.rooms.values()):
            for ws in list(members):
                try:
                    await ws.send(text)
                except websockets.ConnectionClosed:
                    pass

    def drain_audio_queue(self) -> int:
        n = 0
        try:
            while True:
                self.audio_queue.get_nowait()
                n += 1
        except queue.Empty:
            return n


async def serve(server: BaselineServer, host: str, port: int) -> Any:
    return await websockets.serve(server.handler, host, port)
