"""The server process started by `serve_process`: `python -m bbx_net.websocket._child`.

Arguments: the file descriptor of its end of the socketpair, and the name of the shared
segment the host creates. It serves until the host sends Shutdown or goes away (end of
stream on the socketpair: the host exited or was killed), then marks the segment
stopped and removes its name. Nothing here is a public API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any

from .._clock import ClockSync
from .._ring import STATE_SERVING, STATE_STOPPED, SharedSegment, unlink_segment
from . import run
from ._wire import FrameReader, pack, read_frame
from .commands import Command, CreateRoom, Shutdown
from .config import WsServerConfig
from .server import ParamEvent, TriggerEvent, WsServer

logger = logging.getLogger("bbx_net.process")

#: Calls the host may make on the server (read-only snapshots, and the projector).
_CALLS: dict[str, Callable[..., Any]] = {
    "stats": WsServer.stats,
    "client_stats": WsServer.client_stats,
    "param_values": WsServer.param_values,
    "rooms": WsServer.rooms,
    "room_key": WsServer.room_key,
    "show": WsServer.show,
}
#: Events waiting to reach the host past this many bytes are dropped (and counted).
_EVENT_BACKLOG = 4 * 1024 * 1024


class _Link(asyncio.Protocol):
    """The server's side of the socketpair."""

    def __init__(self, server: WsServer) -> None:
        self.server = server
        self.reader = FrameReader()
        self.transport: Any = None  # an asyncio.Transport (uvloop's is not a subclass)
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.forward_events = False
        self.events_dropped = 0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except Exception:
            logger.exception("bad frame from the host; stopping")
            self.server.commands.try_send(Shutdown())
            return
        for frame in frames:
            if frame[0] == "call":
                self._call(*frame[1:])
            elif frame[0] == "listen":
                self._forward(bool(frame[1]))
            else:  # commands keep their order through one task
                self.queue.put_nowait(frame)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        # The host closed its end, exited or was killed: stop serving.
        self.transport = None
        self.server.commands.try_send(Shutdown())
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, *message: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(pack(*message))

    def _forward(self, on: bool) -> None:
        """Listens to the server only while the host has listeners: with none, the
        session makes no event objects at all (they cost on every message)."""
        if on and not self.forward_events:
            self.server.add_listener(self.on_event)
        elif not on and self.forward_events:
            self.server.remove_listener(self.on_event)
        self.forward_events = on

    def on_event(self, event: ParamEvent | TriggerEvent) -> None:
        if not self.forward_events or self.transport is None:
            return
        if self.transport.get_write_buffer_size() > _EVENT_BACKLOG:
            self.events_dropped += 1  # the host does not read: keep serving
            return
        self.send("event", event)

    def _call(self, ident: int, name: str, args: tuple[Any, ...]) -> None:
        try:
            result = _CALLS[name](self.server, *args)
        except Exception as exc:  # a bad call is the caller's error, sent back
            self.send("reply", ident, False, (type(exc).__name__, str(exc)))
        else:
            self.send("reply", ident, True, result)

    async def pump(self) -> None:
        """Hands the host's commands to the server's channel, in order."""
        channel = self.server.commands
        while True:
            frame = await self.queue.get()
            if frame[0] == "create_room":
                _, ident, code, key = frame
                try:
                    create = CreateRoom(code, key)
                    await channel.send(create)
                    value = await create
                except Exception as exc:
                    self.send("reply", ident, False, (type(exc).__name__, str(exc)))
                else:
                    self.send("reply", ident, True, value)
            elif frame[0] == "cmd":
                command: Command = frame[1]  # validated and encoded by the host
                await channel.send(command)


async def _serve(sock: socket.socket, segment: SharedSegment, options: dict[str, Any]) -> int:
    config: WsServerConfig = options["config"]
    if options.get("certfile"):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(options["certfile"], options.get("keyfile"))
        config = dataclasses.replace(config, ssl_context=context)
    viz = segment.viz()
    server = WsServer(
        config,
        segment.producer(),
        clock=ClockSync(origin_ns=segment.clock_origin_ns),
        viz=None if viz is None else viz[1],
    )
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    _, link = await loop.connect_accepted_socket(lambda: _Link(server), sock=sock)
    # SIGTERM stops cleanly; Ctrl-C in the host's terminal is the host's to handle
    # (the host then shuts this process down, or its exit ends the socketpair).
    loop.add_signal_handler(signal.SIGTERM, lambda: server.commands.try_send(Shutdown()))
    try:
        await server.start()
    except Exception as exc:  # the port is taken, the address is wrong...
        logger.error("cannot start: %s", exc)
        segment.state = STATE_STOPPED
        link.send("failed", f"{type(exc).__name__}: {exc}")
        if link.transport is not None:
            link.transport.close()  # after what it holds is written
        return 1
    pump = asyncio.ensure_future(link.pump())
    try:
        segment.state = STATE_SERVING
        link.send("ready", server.port, os.getpid())
        await server.run()
    finally:
        pump.cancel()
        segment.state = STATE_STOPPED
        link.send("stopped", link.events_dropped)
        if link.transport is not None:
            link.transport.close()
    return 0


def main(argv: list[str]) -> int:
    fd, name = int(argv[1]), argv[2]
    logging.basicConfig(level=logging.WARNING, format="bbx-net server: %(message)s")
    sock = socket.socket(fileno=fd)
    try:
        first = read_frame(sock)
        if first is None or first[0] != "start":
            return 1  # the host went away before it started us
        options = first[1]
        segment = SharedSegment.attach(name)
        segment.server_pid = os.getpid()
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            result = run(_serve(sock, segment, options), handle_signals=False)
        except Exception as exc:
            logger.exception("server failed")
            segment.state = STATE_STOPPED
            try:
                sock.setblocking(True)
                sock.sendall(pack("failed", f"{type(exc).__name__}: {exc}"))
            except OSError:
                pass
            return 1
        return 0 if result is None else result
    finally:
        unlink_segment(name)  # gone already unless the host never took it down


if __name__ == "__main__":
    sys.exit(main(sys.argv))
