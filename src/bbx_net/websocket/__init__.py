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
import contextlib
import signal
import threading
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
from .pool import ServerPool, serve_pool
from .process import ServerProcess, serve_process
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
    "ServerPool",
    "ServerProcess",
    "ServerStats",
    "Shutdown",
    "TriggerEvent",
    "WsServer",
    "WsServerConfig",
    "run",
    "serve_pool",
    "serve_process",
]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], *, handle_signals: bool = True) -> T | None:
    """asyncio.run(main), on uvloop when it is installed (faster sockets and timers).

    With `handle_signals` (and on the main thread), Ctrl-C and SIGTERM cancel `main`
    instead of killing the process: a `server.run()` inside it then closes every phone
    with `closed`, and run() returns None instead of raising KeyboardInterrupt. Handlers
    that `main` installs itself take precedence.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_stoppable(main, handle_signals))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_stoppable(main, handle_signals))


async def _stoppable(main: Coroutine[Any, Any, T], handle_signals: bool) -> T | None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    signalled = False

    def stop() -> None:
        nonlocal signalled
        signalled = True
        if task is not None:
            task.cancel()

    installed = []
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop)
            except (NotImplementedError, RuntimeError, ValueError):
                continue
            installed.append(sig)
    try:
        return await main
    except asyncio.CancelledError:
        if signalled:
            return None
        raise
    finally:
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
