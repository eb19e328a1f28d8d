"""Commands from the host application to the server, from asyncio code or any thread.

A command is validated and encoded when it is made, on the caller's thread: a bad one
raises there (ValueError / TypeError), and a `BroadcastVisualization` holds its own
encoded copy, so the host may reuse its buffer at once. The channel knows nothing of
the server: it queues commands and wakes whoever consumes them (`bind` / `drain`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BbxNetError
from ..protocol import MAX_NAME_LENGTH, encode_update, encode_visualization

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
    """Sets a parameter's value and sends `update` to every joined client.

    Raises:
        ValueError: `name` is not a 1..128 character string or `value` is not a finite
            number (at construction, on the caller's thread).
    """

    name: str
    value: float
    frame: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name, value = self.name, self.value
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
            raise ValueError(f"BroadcastParam name must be 1..128 characters: {name!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"BroadcastParam {name}: value must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"BroadcastParam {name}: value must be finite")
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "frame", encode_update(name, value))


@dataclass(frozen=True, slots=True)
class BroadcastVisualization:
    """Sends `{"type": "visualization", "data": [...]}` to every joined client.

    `data` is copied and encoded when the command is made, so the host may overwrite
    its buffer right after. Encoded once for all; a client that cannot keep up gets only
    the newest frame.

    `stream` (0..2**32-1) names one of several views (a meter, a spectrum); a client
    that cannot keep up gets the newest frame of each stream. Stream 0 is the page's
    default view; other streams add `"stream": n` to the message.

    Raises:
        ValueError: a value is not a finite number, or `stream` is out of range (at
            construction).
        TypeError: `data` is not a sequence of numbers.
    """

    data: Sequence[float]
    stream: int = 0
    frame: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = tuple(float(v) for v in self.data)
        stream = self.stream
        if isinstance(stream, bool) or not isinstance(stream, int) or not 0 <= stream < 1 << 32:
            raise ValueError(f"visualization stream must be 0..2**32-1, got {stream!r}")
        object.__setattr__(self, "data", values)
        object.__setattr__(self, "frame", encode_visualization(values, stream))


_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _new_future() -> concurrent.futures.Future[str]:
    return concurrent.futures.Future()


@dataclass(frozen=True, slots=True, eq=False)
class CreateRoom:
    """Creates a room; its code arrives in `response`.

    `await command` (asyncio) or `command.wait(timeout)` (any thread) gives the code.
    The server answers even before `run()` starts.

    `code` asks for that code (digits, the configured length) and `key` for that link
    key (16-64 URL-safe characters), so a poster's code and QR code outlive a restart;
    by default both are random. A code in use fails with BbxNetError.
    """

    code: str | None = None
    key: str | None = None
    response: concurrent.futures.Future[str] = field(default_factory=_new_future)

    def __post_init__(self) -> None:
        if self.code is not None and not (self.code.isascii() and self.code.isdigit()):
            raise ValueError(f"a room code is digits, got {self.code!r}")
        if self.key is not None and not (
            16 <= len(self.key) <= 64 and _KEY_CHARS.issuperset(self.key)
        ):
            raise ValueError("a room key is 16-64 characters of A-Z a-z 0-9 - _")

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
    """A bounded, thread-safe channel of commands to one server.

    Send from asyncio code with `await channel.send(cmd)`, from any other thread with
    `channel.send_threadsafe(cmd)`; `try_send` never blocks. At most `capacity`
    commands wait at once. Commands sent before a consumer is bound wait for it.

    The consuming side (a WsServer) calls `bind(wake)` once; `wake()` is then called
    after every queued command, on the sender's thread, and the consumer takes the
    commands with `drain()`.

    Args:
        capacity: commands that may wait to be handled.
    """

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._slots = threading.BoundedSemaphore(capacity)
        self._lock = threading.Lock()
        self._queue: deque[Command] = deque()
        self._wake: Callable[[], None] | None = None

    # ---- sending (any thread) ---------------------------------------------------------

    def try_send(self, command: Command) -> bool:
        """Queues `command` unless `capacity` commands wait already. Any thread."""
        _check(command)
        if not self._slots.acquire(blocking=False):
            return False
        self._put(command)
        return True

    def send_threadsafe(self, command: Command, timeout: float | None = 10.0) -> None:
        """Queues `command`, waiting while the channel is full. Not from the loop thread.

        Raises:
            TimeoutError: still full after `timeout` seconds.
        """
        _check(command)
        if not self._slots.acquire(timeout=timeout):
            raise TimeoutError(f"command channel full for {timeout} s")
        self._put(command)

    async def send(self, command: Command) -> None:
        """Queues `command`, yielding to the loop while the channel is full."""
        _check(command)
        delay = 0.0005
        while not self._slots.acquire(blocking=False):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        self._put(command)

    async def create_room(self, code: str | None = None, key: str | None = None) -> str:
        """Creates a room and returns its code (asyncio); see CreateRoom."""
        command = CreateRoom(code, key)
        await self.send(command)
        return await command

    def create_room_threadsafe(
        self, timeout: float | None = 10.0, code: str | None = None, key: str | None = None
    ) -> str:
        """Creates a room and returns its code (any thread but the loop's)."""
        command = CreateRoom(code, key)
        self.send_threadsafe(command, timeout)
        return command.wait(timeout)

    # ---- consuming (the server) -------------------------------------------------------

    def bind(self, wake: Callable[[], None]) -> None:
        """Makes `wake` the consumer's signal (thread-safe); wakes it if commands wait.

        Raises:
            BbxNetError: another consumer is bound already (a channel serves one server).
        """
        with self._lock:
            if self._wake is not None and self._wake != wake:
                raise BbxNetError("a CommandChannel serves one WsServer")
            self._wake = wake
            waiting = bool(self._queue)
        if waiting:
            wake()

    def drain(self) -> list[Command]:
        """The waiting commands, oldest first; their slots are free again."""
        with self._lock:
            commands = list(self._queue)
            self._queue.clear()
        for _ in commands:
            self._slots.release()
        return commands

    def __len__(self) -> int:
        return len(self._queue)

    def _put(self, command: Command) -> None:
        with self._lock:
            self._queue.append(command)
            wake = self._wake
        if wake is not None:
            wake()


def _check(command: object) -> None:
    if not isinstance(command, _COMMAND_TYPES):
        raise TypeError(f"not a ServerCommand: {command!r}")
