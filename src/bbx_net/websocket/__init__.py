"""The WebSocket server: rooms of phones steering the audio engine.

```python
producer, consumer = bbx_net.net_buffer(256)
commands = CommandChannel(256)
server = WsServer(WsServerConfig(bind_addr="0.0.0.0:8080"), producer, commands)
code = await commands.create_room()
await server.run()
```
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..rooms import RoomConfig
from .commands import (
    BroadcastParam,
    BroadcastVisualization,
    CloseRoom,
    Command,
    CommandChannel,
    CreateRoom,
    ServerCommand,
    Shutdown,
)
from .config import ParamSpec, WsServerConfig
from .server import ClientStats, ParamEvent, ServerStats, TriggerEvent, WsServer

__all__ = [
    "BroadcastParam",
    "BroadcastVisualization",
    "ClientStats",
    "CloseRoom",
    "Command",
    "CommandChannel",
    "CreateRoom",
    "ParamEvent",
    "ParamSpec",
    "RoomConfig",
    "ServerCommand",
    "ServerStats",
    "Shutdown",
    "TriggerEvent",
    "WsServer",
    "WsServerConfig",
    "run",
]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main), on uvloop when it is installed (faster sockets and timers)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
