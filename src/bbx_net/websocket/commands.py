"""Commands from the host application to the server, from asyncio code or any thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import BbxNetError

if TYPE_CHECKING:
    from .server import WsServer

__all__ = [
    "BroadcastParam",
    "BroadcastVisualization",
    "CloseRoom",
    "Command",
    "CommandChannel",
    "CreateRoom",
    "ServerCommand",
    "Shutdown",
]


@dataclass(frozen=True, slots=True)
class BroadcastParam:
    """Sets a parameter's value and sends `update` to every joined client."""

    name: str
    value: float


@dataclass(frozen=True, slots=True)
class BroadcastVisualization:
    """Sends `{"type": "visualization", "data": [...]}` to every joined client.

    Encoded once for all; a client that cannot keep up gets only the newest frame.
    """

    data: Sequence[float]


def _new_future() -> concurrent.futures.Future[str]:
    return concurrent.futures.Future()


@dataclass(frozen=True, slots=True, eq=False)
class CreateRoom:
    """Creates a room; its code arrives in `response`.

    `await command` (asyncio) or `command.wait(timeout)` (any thread) gives the code.
    The server answers even before `run()` starts.
    """

    response: concurrent.futures.Future[str] = field(default_factory=_new_future)

    def __await__(self) -> Generator[Any, None, str]:
        return asyncio.wrap_future(self.response).__await__()

    def wait(self, timeout: float | None = None) -> str:
        """Blocks the calling thread until the code is known (never call it in the loop).

        Raises:
            TimeoutError: no answer within `timeout` seconds.
            BbxNetError: the room could not be created (room limit).
        """
        return self.response.result(timeout)


@dataclass(frozen=True, slots=True)
class CloseRoom:
    """Sends `closed` to that room's clients, closes their connections, removes it."""

    code: str


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Closes every connection cleanly and makes `run()` return."""


Command = BroadcastParam | BroadcastVisualization | CreateRoom | CloseRoom | Shutdown


class ServerCommand:
    """The five commands of the seed, as one namespace: `ServerCommand.Shutdown()`."""

    BroadcastParam = BroadcastParam
    BroadcastVisualization = BroadcastVisualization
    CreateRoom = CreateRoom
    CloseRoom = CloseRoom
    Shutdown = Shutdown


_COMMAND_TYPES = (BroadcastParam, BroadcastVisualization, CreateRoom, CloseRoom, Shutdown)


class CommandChannel:
    """A bounded, thread-safe channel of commands to one WsServer.

    Send from asyncio code with `await channel.send(cmd)`, from any other thread with
    `channel.send_threadsafe(cmd)`; `try_send` never blocks. At most `capacity`
    commands wait at once. Commands sent before the server exists are delivered when
    it is created; before `run()`, the server handles them at once.

    Args:
        capacity: commands that may wait to be handled.
    """

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._slots = threading.BoundedSemaphore(capacity)
        self._lock = threading.Lock()
        self._server: WsServer | None = None
        self._early: deque[Command] = deque()

    # ---- public ----

    def try_send(self, command: Command) -> bool:
        """Queues `command` unless `capacity` commands wait already. Any thread."""
        _check(command)
        if not self._slots.acquire(blocking=False):
            return False
        self._deliver(command)
        return True

    def send_threadsafe(self, command: Command, timeout: float | None = 10.0) -> None:
        """Queues `command`, waiting while the channel is full. Not from the loop thread.

        Raises:
            TimeoutError: still full after `timeout` seconds.
        """
        _check(command)
        if not self._slots.acquire(timeout=timeout):
            raise TimeoutError(f"command channel full for {timeout} s")
        self._deliver(command)

    async def send(self, command: Command) -> None:
        """Queues `command`, yielding to the loop while the channel is full."""
        _check(command)
        delay = 0.0005
        while not self._slots.acquire(blocking=False):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        self._deliver(command)

    async def create_room(self) -> str:
        """Creates a room and returns its code (asyncio)."""
        command = CreateRoom()
        await self.send(command)
        return await command

    def create_room_threadsafe(self, timeout: float | None = 10.0) -> str:
        """Creates a room and returns its code (any thread but the loop's)."""
        command = CreateRoom()
        self.send_threadsafe(command, timeout)
        return command.wait(timeout)

    # ---- used by WsServer ----

    def _attach(self, server: WsServer) -> None:
        with self._lock:
            if self._server is not None and self._server is not server:
                raise BbxNetError("a CommandChannel serves one WsServer")
            self._server = server
            early = list(self._early)
            self._early.clear()
        for command in early:
            server._submit(command)

    def _done(self) -> None:
        """The server finished one command: its slot is free again."""
        self._slots.release()

    def _deliver(self, command: Command) -> None:
        with self._lock:
            server = self._server
            if server is None:
                self._early.append(command)
                return
        server._submit(command)


def _check(command: object) -> None:
    if not isinstance(command, _COMMAND_TYPES):
        raise TypeError(f"not a ServerCommand: {command!r}")
