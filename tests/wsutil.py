"""Helpers for server tests: a live server on 127.0.0.1:0 and a JSON client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from bbx_net import net_buffer
from bbx_net.websocket import CommandChannel, ParamSpec, WsServer, WsServerConfig

from conftest import TIMEOUT_SCALE

T = TypeVar("T")

#: Seconds any one await in a test may take before the test fails.
STEP = 5.0 * TIMEOUT_SCALE

PARAMS = [ParamSpec("gain", 0.5, 0.0, 1.0), ParamSpec("freq", 440.0, 20.0, 20000.0)]


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Runs a test coroutine with asyncio debug on and an overall time bound."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout * TIMEOUT_SCALE)

    return asyncio.run(bounded(), debug=True)


@contextlib.asynccontextmanager
async def live_server(capacity: int = 4096, **config: Any) -> AsyncIterator[Server]:
    """A started server (with one room) on 127.0.0.1:0; stopped on exit."""
    config.setdefault("params", PARAMS)
    config.setdefault("bind_addr", ("127.0.0.1", 0))
    producer, consumer = net_buffer(capacity)
    commands = CommandChannel()
    server = WsServer(WsServerConfig(**config), producer, commands)
    code = await commands.create_room()
    await server.start()
    handle = Server(server, consumer, commands, code)
    try:
        yield handle
    finally:
        await asyncio.wait_for(server.stop(), STEP * 2)
        for client in handle.clients:
            await client.discard()


class Server:
    def __init__(
        self, server: WsServer, consumer: Any, commands: CommandChannel, code: str
    ) -> None:
        self.server = server
        self.consumer = consumer
        self.commands = commands
        self.code = code
        self.clients: list[Client] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/"

    async def connect(self, **kw: Any) -> Client:
        ws = await asyncio.wait_for(websockets.connect(self.url, **kw), STEP)
        client = Client(ws)
        self.clients.append(client)
        return client

    async def joined(
        self, code: str | None = None, *, client_name: str | None = None, **connect_kw: Any
    ) -> Client:
        """A client that joined (welcome and state already read)."""
        client = await self.connect(**connect_kw)
        extra = {} if client_name is None else {"client_name": client_name}
        client.welcome = await client.join(code or self.code, **extra)
        assert client.welcome["type"] == "welcome", client.welcome
        client.state = await client.recv()
        assert client.state["type"] == "state"
        return client


class Client:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}
        self.state: dict[str, Any] = {}

    async def send(self, **msg: Any) -> None:
        await self.ws.send(orjson.dumps(msg).decode())

    async def recv(self, timeout: float = STEP) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        result: dict[str, Any] = orjson.loads(frame)
        return result

    async def request(self, **msg: Any) -> dict[str, Any]:
        await self.send(**msg)
        return await self.recv()

    async def join(self, code: str, **extra: Any) -> dict[str, Any]:
        return await self.request(type="join", room_code=code, **extra)

    async def nothing(self, within: float = 0.3) -> bool:
        """True if no frame arrives within `within` seconds."""
        try:
            await asyncio.wait_for(self.ws.recv(), within)
        except TimeoutError:
            return True
        return False

    async def recv_until(
        self, pred: Callable[[dict[str, Any]], bool], limit: int = 1000
    ) -> dict[str, Any]:
        """Reads frames until one satisfies `pred` (bounded in count and time)."""
        for _ in range(limit):
            msg = await self.recv()
            if pred(msg):
                return msg
        raise AssertionError("no matching frame")

    async def closed_code(self) -> int | None:
        """Waits for the server to close; returns the close code."""
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(10_000):
                await asyncio.wait_for(self.ws.recv(), STEP)
        await asyncio.wait_for(self.ws.wait_closed(), STEP)
        return self.ws.protocol.close_code  # the sans-I/O layer: public since 14.0

    async def close(self) -> None:
        await asyncio.wait_for(self.ws.close(), STEP)

    async def discard(self) -> None:
        """Releases the socket whatever state it is in (test teardown)."""
        if self.ws.transport is not None:
            self.ws.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.wait_closed(), STEP)


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], timeout: float = STEP, interval: float = 0.01
) -> None:
    """Polls `check` until it holds (bounded by `timeout`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
