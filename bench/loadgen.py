"""A lean WebSocket client for load generation (bench_server.py).

Speaks just enough RFC 6455 to be cheap: the handshake, masked text frames built once
and written as bytes, unmasked server frames parsed by length, pings answered,
permessage-deflate offered as browsers do (and inflated when the server uses it).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
import zlib
from collections.abc import Callable

import orjson

_MASK = b"\x11\x22\x33\x44"


def frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame (the mask is fixed: this is a load generator)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ _MASK[i & 3] for i, b in enumerate(payload))
    return head + _MASK + masked


def json_frame(**msg: object) -> bytes:
    return frame(orjson.dumps(msg))


class Client(asyncio.Protocol):
    """One connection. `on_text(payload, now)` sees every text message."""

    def __init__(
        self, host: str, port: int, on_text: Callable[[Client, bytes, float], None] | None = None
    ) -> None:
        self.host, self.port = host, port
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.open = asyncio.get_running_loop().create_future()
        self.welcome = asyncio.get_running_loop().create_future()
        self.handshaken = False
        self.inflater: zlib._Decompress | None = None
        self.received = 0
        self.closed = False
        self.close_reason = b""
        self.t_connect = time.monotonic()

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  (uvloop's is not a subclass)
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.handshaken:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1").lower()
            del self.buf[: end + 4]
            if " 101 " not in head.split("\r\n", 1)[0]:
                self.open.set_exception(ConnectionError(head.split("\r\n", 1)[0]))
                return
            if "permessage-deflate" in head:
                self.inflater = zlib.decompressobj(-15)
            self.handshaken = True
            self.open.set_result(None)
        self._parse()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for waiter in (self.open, self.welcome):
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"lost ({self.close_reason!r})"))
                waiter.exception()  # raised to whoever awaits it, not logged if no one does

    def _parse(self) -> None:
        buf = self.buf
        pos = 0
        now = time.monotonic()
        while True:
            if len(buf) - pos < 2:
                break
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            hl = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n = struct.unpack_from("!H", buf, pos + 2)[0]
                hl = 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                hl = 10
            if len(buf) - pos < hl + n:
                break
            payload = bytes(buf[pos + hl : pos + hl + n])
            pos += hl + n
            opcode = b0 & 0x0F
            if opcode == 0x1 or opcode == 0x0:
                if b0 & 0x40 and self.inflater is not None:
                    payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
                self.received += 1
                if not self.welcome.done() and b'"welcome"' in payload[:40]:
                    self.welcome.set_result(now)
                if self.on_text is not None:
                    self.on_text(self, payload, now)
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(frame(payload, 0xA))
            elif opcode == 0x8 and self.transport is not None:
                self.close_reason = payload
                self.transport.write(frame(payload[:2], 0x8))
                self.transport.close()
        del buf[:pos]

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def buffered(self) -> int:
        return 0 if self.transport is None else self.transport.get_write_buffer_size()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def connect(
    host: str, port: int, on_text: Callable[[Client, bytes, float], None] | None = None
) -> Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: Client(host, port, on_text), host, port)
    await client.open
    return client


async def connect_and_join(
    host: str, port: int, code: str, on_text: Callable[[Client, bytes, float], None] | None = None
) -> Client:
    client = await connect(host, port, on_text)
    client.write(json_frame(type="join", room_code=code))
    await client.welcome
    return client
