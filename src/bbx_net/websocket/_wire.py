"""Framing of the private channel between an audio host and its server process.

A frame is a 4-byte big-endian length and a pickled tuple. Both ends are this package
in two processes of one user, joined by a socketpair that no one else holds, so pickle
carries the already validated and encoded commands as they are.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

_LENGTH = struct.Struct(">I")
#: A frame larger than this is a broken peer, not a message.
MAX_FRAME = 64 * 1024 * 1024


def pack(*message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


def unpack(body: bytes) -> tuple[Any, ...]:
    message = pickle.loads(body)
    if not isinstance(message, tuple) or not message:
        raise ValueError("malformed frame")
    return message


def read_frame(sock: socket.socket) -> tuple[Any, ...] | None:
    """The next frame from a blocking socket, or None at end of stream."""
    head = _read_exactly(sock, _LENGTH.size)
    if head is None:
        return None
    (length,) = _LENGTH.unpack(head)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes")
    body = _read_exactly(sock, length)
    if body is None:
        return None
    return unpack(body)


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        try:
            chunk = sock.recv(min(n, 1 << 20))
        except (ConnectionError, OSError):
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class FrameReader:
    """Incremental parser for the asyncio side: feed bytes, take whole frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        buf = self._buf
        buf += data
        out = []
        while len(buf) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buf)
            if length > MAX_FRAME:
                raise ValueError(f"frame of {length} bytes")
            if len(buf) < _LENGTH.size + length:
                break
            out.append(unpack(bytes(buf[_LENGTH.size : _LENGTH.size + length])))
            del buf[: _LENGTH.size + length]
        return out
