"""RFC 6455 conformance, case by case against a plain websockets server.

The case families follow Autobahn|Testsuite's 1-7 and a bounded part of 9 (framing,
pings and pongs, reserved bits, opcodes, fragmentation, UTF-8, close handling,
limits), adapted to this protocol: where Autobahn expects an echo, the client sends a
JSON `ping` and expects its `pong`. Every case runs against the bbx_net server and
against a reference: websockets' own asyncio server with a trivial handler that joins
and answers pings the same way. The test asserts the same outcome on both: the
sequence of replies (pongs by client_time, errors by code, protocol pongs by payload)
and the close code, read until a sentinel ping is answered or the server closes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from wsutil import STEP, live_server, run

MAX_SIZE = 64 * 1024  # both servers: the bbx_net default
SENTINEL = 999_999
TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


# ---- the client side: raw frames ----------------------------------------------------------


def frame(
    opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0, masked: bool = True
) -> bytes:
    """One client frame, masked with a random key as RFC 6455 §5.3 requires."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([b0, mask_bit | n])
    elif n < 65536:
        head = bytes([b0, mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, mask_bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + body


def ping_json(t: int, pad: int = 0, extra: bytes = b"") -> bytes:
    """A JSON ping of about `pad` extra bytes; `extra` is spliced raw into a string."""
    return b'{"type":"ping","client_time":%d,"s":"%s%s"}' % (t, b"x" * pad, extra)


def ping_of_size(t: int, size: int) -> bytes:
    base = len(ping_json(t))
    return ping_json(t, max(0, size - base))


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    return b"" if code is None else code.to_bytes(2, "big") + reason


def fragments(opcode: int, payload: bytes, size: int) -> bytes:
    """`payload` as a fragmented message of `size`-byte fragments."""
    parts = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    out = []
    for i, part in enumerate(parts):
        out.append(frame(opcode if i == 0 else CONT, part, fin=i == len(parts) - 1))
    return b"".join(out)


@dataclass
class Case:
    """One conformance case: bytes to send after the join, and how to write them."""

    family: str
    name: str
    data: bytes
    chop: int | None = None  # write in chunks of this many bytes (1: byte by byte)
    with_handshake: bool = False  # the bytes go in the same write as the handshake
    sentinel: bool = True

    def __str__(self) -> str:
        return f"{self.family}:{self.name}"


# ---- the outcome: what the server sent back ---------------------------------------------


@dataclass
class Outcome:
    events: list[Any] = field(default_factory=list)

    def add(self, *event: Any) -> None:
        self.events.append(event)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(2)
    n = head[1] & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return head[0] & 0x0F, await reader.readexactly(n)


async def outcome_of(port: int, case: Case) -> list[Any]:
    """Connects, joins, plays the case, returns what came back (bounded in time)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), STEP)
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = (
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    join = frame(TEXT, b'{"type":"join","room_code":"%s"}' % CODE[port].encode())
    out = Outcome()
    try:
        if case.with_handshake:
            writer.write(handshake + join + case.data)
        else:
            writer.write(handshake)
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STEP)
        if not case.with_handshake:
            writer.write(join)
        for _ in range(2):  # welcome, state
            op, body = await asyncio.wait_for(read_frame(reader), STEP)
            assert op == TEXT, (op, body)  # keepalive pings are off on both servers
        if not case.with_handshake:
            if case.chop is None:
                writer.write(case.data)
            else:
                for i in range(0, len(case.data), case.chop):
                    writer.write(case.data[i : i + case.chop])
                    await writer.drain()
        if case.sentinel:
            writer.write(frame(TEXT, ping_json(SENTINEL)))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        for _ in range(20_000):
            try:
                op, body = await asyncio.wait_for(read_frame(reader), STEP)
            except (asyncio.IncompleteReadError, ConnectionError):
                out.add("eof")
                break
            if op == TEXT:
                msg = orjson.loads(body)
                if msg["type"] == "pong":
                    if msg["client_time"] == SENTINEL:
                        break
                    out.add("pong", msg["client_time"])
                else:
                    out.add(msg["type"], msg.get("code"))
            elif op == PONG:
                out.add("PONG", body)
            elif op == CLOSE:
                out.add("close", int.from_bytes(body[:2], "big") if len(body) >= 2 else None)
                break
            else:
                out.add("frame", op)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), STEP)
    return out.events


CODE: dict[int, str] = {}


# ---- the reference: websockets' own server with a trivial handler ------------------------


async def reference_handler(ws: ServerConnection) -> None:
    async for message in ws:
        if isinstance(message, bytes):
            await ws.send(orjson.dumps({"type": "error", "code": "INVALID_MESSAGE"}).decode())
            continue
        try:
            obj = orjson.loads(message)
        except orjson.JSONDecodeError:
            await ws.send(orjson.dumps({"type": "error", "code": "INVALID_MESSAGE"}).decode())
            continue
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind == "join":
            await ws.send('{"type":"welcome"}')
            await ws.send('{"type":"state","params":[]}')
        elif kind == "ping":
            reply = {"type": "pong", "client_time": obj["client_time"], "server_time": 0}
            await ws.send(orjson.dumps(reply).decode())
        else:
            await ws.send(orjson.dumps({"type": "error", "code": "UNKNOWN_TYPE"}).decode())


@contextlib.asynccontextmanager
async def reference_server() -> AsyncIterator[int]:
    async with serve(
        reference_handler,
        "127.0.0.1",
        0,
        max_size=MAX_SIZE,
        compression=None,
        ping_interval=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        CODE[port] = "0000"
        yield port


# ---- the cases -----------------------------------------------------------------------------

VALID_UTF8 = [
    b"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!",
    "κόσμε".encode(),
    b"\xc2\x80",  # first 2-byte
    b"\xe0\xa0\x80",  # first 3-byte
    b"\xf0\x90\x80\x80",  # first 4-byte
    b"\xdf\xbf",  # last 2-byte
    b"\xef\xbf\xbf",  # U+FFFF
    b"\xf4\x8f\xbf\xbf",  # U+10FFFF
    b"\xed\x9f\xbf",  # U+D7FF, just below the surrogates
    b"\xee\x80\x80",  # U+E000, just above
    b"\xef\xbf\xbd",  # U+FFFD
    "😀🎛️🎚️".encode(),
]
INVALID_UTF8 = [
    b"\x80",  # lone continuation byte
    b"\xbf",
    b"\x80\xbf\x80",
    b"\xc0\xaf",  # overlong "/"
    b"\xe0\x80\xaf",
    b"\xf0\x80\x80\xaf",
    b"\xc1\xbf",  # overlong, maximal
    b"\xc2",  # truncated 2-byte
    b"\xe0\xa0",  # truncated 3-byte
    b"\xf0\x90\x80",  # truncated 4-byte
    b"\xed\xa0\x80",  # U+D800: an encoded surrogate (CESU-8)
    b"\xed\xbf\xbf",  # U+DFFF
    b"\xed\xa0\xbd\xed\xb2\x80",  # a surrogate pair, encoded as two surrogates
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xfe",
    b"\xff",
    b"\xfe\xfe\xff\xff",
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
]


def cases() -> list[Case]:
    out: list[Case] = []

    def add(family: str, name: str, data: bytes, **kw: Any) -> None:
        out.append(Case(family, name, data, **kw))

    # 1. Framing: text and binary messages at every length boundary.
    for size in (0, 1, 125, 126, 127, 128, 65535, 65536):
        payload = ping_of_size(size, size) if size >= 40 else b"x" * size
        add("1", f"text-{size}", frame(TEXT, payload))
        add("1", f"binary-{size}", frame(BINARY, b"\xfe" * size))
    for size in (125, 126, 65535):
        add("1", f"text-{size}-chopped", frame(TEXT, ping_of_size(size, size)), chop=997)
    # 2. Pings and pongs.
    add("2", "ping-empty", frame(PING))
    add("2", "ping-text", frame(PING, b"Hello, world!"))
    add("2", "ping-binary", frame(PING, bytes([0x00, 0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0x00, 0xFF])))
    add("2", "ping-125", frame(PING, b"\xfe" * 125))
    add("2", "ping-126", frame(PING, b"\xfe" * 126))
    add("2", "unsolicited-pong", frame(PONG, b"unsolicited"))
    add("2", "unsolicited-pong-then-ping", frame(PONG, b"u") + frame(PING, b"p"))
    add("2", "ten-pings", b"".join(frame(PING, b"payload-%d" % i) for i in range(10)))
    add("2", "ten-pings-chopped", b"".join(frame(PING, b"p%d" % i) for i in range(10)), chop=1)
    add("2", "ping-chopped", frame(PING, b"\xfe" * 125), chop=1)
    # 3. Reserved bits (no extension negotiated: any RSV bit fails the connection).
    for rsv in range(1, 8):
        add("3", f"rsv{rsv}-text", frame(TEXT, ping_json(1), rsv=rsv))
    add("3", "rsv-after-good", frame(TEXT, ping_json(1)) + frame(TEXT, ping_json(2), rsv=2))
    add("3", "rsv-ping", frame(PING, b"x", rsv=4))
    add("3", "rsv-close", frame(CLOSE, close_payload(1000), rsv=1))
    add("3", "rsv-binary", frame(BINARY, b"\x00", rsv=6))
    # 4. Opcodes: reserved data (3-7) and control (B-F) opcodes.
    for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF):
        add("4", f"opcode-{op}", frame(op, b"x"))
        add("4", f"good-then-opcode-{op}", frame(TEXT, ping_json(1)) + frame(op))
    # 5. Fragmentation.
    msg = ping_json(5, 200)
    add("5", "ping-fragmented", frame(PING, b"ab", fin=False) + frame(CONT, b"cd"))
    add("5", "pong-fragmented", frame(PONG, b"ab", fin=False) + frame(CONT, b"cd"))
    add("5", "text-two-fragments", fragments(TEXT, msg, 150))
    add("5", "text-two-fragments-chopped", fragments(TEXT, msg, 150), chop=1)
    add("5", "text-many-fragments", fragments(TEXT, msg, 1))
    add(
        "5",
        "text-empty-fragments",
        frame(TEXT, b"", fin=False) + frame(CONT, msg, fin=False) + frame(CONT, b""),
    )
    for ctrl in (PING, PONG):
        mid = frame(ctrl, b"between")
        data = frame(TEXT, msg[:50], fin=False) + mid + frame(CONT, msg[50:])
        add("5", f"{ctrl}-between-fragments", data)
        add("5", f"{ctrl}-between-fragments-chopped", data, chop=1)
    add("5", "continuation-first", frame(CONT, msg))
    add(
        "5",
        "continuation-first-unfinished",
        frame(CONT, msg[:40], fin=False) + frame(CONT, msg[40:]),
    )
    add(
        "5",
        "text-inside-fragmented",
        frame(TEXT, msg[:50], fin=False) + frame(TEXT, ping_json(6)) + frame(CONT, msg[50:]),
    )
    add(
        "5",
        "binary-inside-fragmented",
        frame(TEXT, msg[:50], fin=False) + frame(BINARY, b"x") + frame(CONT, msg[50:]),
    )
    add("5", "unfinished-then-sentinel", frame(TEXT, msg[:50], fin=False))
    add("5", "fragmented-then-whole", fragments(TEXT, ping_json(1), 10) + frame(TEXT, ping_json(2)))
    add(
        "5",
        "whole-fragmented-whole",
        frame(TEXT, ping_json(1)) + fragments(TEXT, ping_json(2), 7) + frame(TEXT, ping_json(3)),
    )
    add("5", "binary-fragmented", fragments(BINARY, b"\x01" * 300, 100))
    # 6. UTF-8: in whole and fragmented text frames, split at every byte.
    for i, seq in enumerate(VALID_UTF8 + INVALID_UTF8):
        kind = "valid" if i < len(VALID_UTF8) else "invalid"
        payload = ping_json(60 + i, extra=seq)
        add("6", f"{kind}-{i}-whole", frame(TEXT, payload))
        start = payload.index(b'"s":"') + 5
        for cut in range(start, start + len(seq) + 1):
            add(
                "6",
                f"{kind}-{i}-split-{cut - start}",
                frame(TEXT, payload[:cut], fin=False) + frame(CONT, payload[cut:]),
            )
        add("6", f"{kind}-{i}-fragments-of-1", fragments(TEXT, payload, 1))
        add("6", f"{kind}-{i}-chopped", frame(TEXT, payload), chop=1)
    add("6", "bare-invalid", frame(TEXT, b"\xff\xfe"))
    add("6", "utf16-json", frame(TEXT, '{"type":"ping","client_time":1}'.encode("utf-16")))
    add("6", "utf32-json", frame(TEXT, '{"type":"ping","client_time":1}'.encode("utf-32")))
    add("6", "bom-json", frame(TEXT, b"\xef\xbb\xbf" + ping_json(1)))
    add(
        "6",
        "good-then-invalid",
        frame(TEXT, ping_json(1)) + frame(TEXT, ping_json(2, extra=b"\xc0")),
    )
    add(
        "6",
        # The connection fails mid-write: the messages behind are not answered. (Not a
        # control frame behind it: websockets' parser answers a ping before its handler
        # decodes the text before it, so whether it does depends on scheduling there.)
        "invalid-then-pings",
        frame(TEXT, ping_json(2, extra=b"\xc0"))
        + b"".join(frame(TEXT, ping_json(i)) for i in range(3, 6)),
    )
    # 7. Close handling.
    for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999):
        add("7", f"close-{code}", frame(CLOSE, close_payload(code)), sentinel=False)
    for code in (
        0,
        999,
        1004,
        1005,
        1006,
        1012,
        1013,
        1014,
        1015,
        1016,
        1100,
        2000,
        2999,
        5000,
        65535,
    ):
        add("7", f"close-invalid-{code}", frame(CLOSE, close_payload(code)), sentinel=False)
    add("7", "close-empty", frame(CLOSE), sentinel=False)
    add("7", "close-1-byte", frame(CLOSE, b"\x03"), sentinel=False)
    add("7", "close-reason", frame(CLOSE, close_payload(1000, b"bye")), sentinel=False)
    add("7", "close-reason-123", frame(CLOSE, close_payload(1000, b"r" * 123)), sentinel=False)
    add("7", "close-payload-126", frame(CLOSE, close_payload(1000, b"r" * 124)), sentinel=False)
    add(
        "7",
        "close-reason-invalid-utf8",
        frame(CLOSE, close_payload(1000, b"\xce\xba\xed\xa0\x80")),
        sentinel=False,
    )
    add(
        "7",
        "close-then-text",
        frame(CLOSE, close_payload(1000)) + frame(TEXT, ping_json(1)),
        sentinel=False,
    )
    add(
        "7",
        "close-then-ping",
        frame(CLOSE, close_payload(1000)) + frame(PING, b"x"),
        sentinel=False,
    )
    add(
        "7",
        "text-then-close",
        frame(TEXT, ping_json(1)) + frame(CLOSE, close_payload(1000)),
        sentinel=False,
    )
    add("7", "fragment-then-close", frame(TEXT, msg[:30], fin=False) + frame(CLOSE), sentinel=False)
    add("7", "close-chopped", frame(CLOSE, close_payload(1000, b"bye")), chop=1, sentinel=False)
    # 9. Limits and volume (bounded: messages up to the 64 KiB limit, 1,000 frames).
    add("9", "thousand-pings-one-write", b"".join(frame(TEXT, ping_json(i)) for i in range(1000)))
    add(
        "9",
        "hundred-pings-chopped",
        b"".join(frame(TEXT, ping_json(i)) for i in range(100)),
        chop=7,
    )
    big = ping_of_size(9, MAX_SIZE)
    for size in (64, 256, 1024, 4096, 16384):
        add("9", f"64k-in-{size}-fragments", fragments(TEXT, big, size))
    add("9", "64k-chopped-1000", frame(TEXT, big), chop=1000)
    add("9", "oversize-text", frame(TEXT, ping_of_size(1, MAX_SIZE + 1)))
    add("9", "oversize-binary", frame(BINARY, b"\x00" * (MAX_SIZE + 1)))
    add("9", "oversize-fragmented", fragments(TEXT, ping_of_size(1, MAX_SIZE + 1), 4096))
    add("9", "oversize-length-only", bytes([0x81, 0xFF]) + (2**40).to_bytes(8, "big"))
    add("9", "unmasked", frame(TEXT, ping_json(1), masked=False))
    # Data in the same TCP write as the handshake (and the join) is answered.
    add("H", "join-and-ping-with-handshake", frame(TEXT, ping_json(1)), with_handshake=True)
    add(
        "H",
        "pings-with-handshake",
        b"".join(frame(TEXT, ping_json(i)) for i in range(5)) + frame(PING, b"p"),
        with_handshake=True,
    )
    add("H", "fragmented-with-handshake", fragments(TEXT, ping_json(7), 5), with_handshake=True)
    return out


CASES = cases()


def bbx_server() -> Any:
    """The bbx_net server under test; its keepalive pings are off, as the reference's."""
    return live_server(params=[], ping_interval=600.0, connection_timeout=600.0)


def test_every_case_has_the_same_outcome_as_websockets() -> None:
    """All cases: the bbx_net server and a plain websockets server answer the same."""

    async def main() -> None:
        async with reference_server() as ref_port, bbx_server() as s:
            CODE[s.server.port] = s.code
            differ: list[str] = []
            tally: Counter[tuple[str, bool]] = Counter()
            sem = asyncio.Semaphore(8)

            async def one(case: Case) -> None:
                async with sem:
                    ref = await outcome_of(ref_port, case)
                    ours = await outcome_of(s.server.port, case)
                same = ours == ref
                tally[(case.family, same)] += 1
                if not same:
                    differ.append(f"{case}: reference {ref[:6]} ours {ours[:6]}")

            await asyncio.gather(*(one(c) for c in CASES))
            for fam in sorted({c.family for c in CASES}):
                print(f"family {fam}: same {tally[(fam, True)]}, different {tally[(fam, False)]}")
            assert not differ, "\n".join(differ[:40])
            assert s.server.stats().internal_errors == 0

    run(main(), timeout=300)


_SURROGATE = len(VALID_UTF8) + INVALID_UTF8.index(b"\xed\xa0\x80")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (f"6:invalid-{_SURROGATE}-whole", ("close", 1007)),  # ED A0 80, whole frame
        (f"6:invalid-{_SURROGATE}-split-1", ("close", 1007)),  # the same, fragmented
        ("5:text-inside-fragmented", ("close", 1002)),
        ("3:rsv1-text", ("close", 1002)),
        ("9:oversize-text", ("close", 1009)),
    ],
)
def test_key_cases_close_with_the_rfc_code(name: str, expected: tuple[str, int]) -> None:
    """The cases the issue names end in the RFC's close code on bbx_net (not by accident
    equal: the reference is checked to give the same code too)."""
    case = next(c for c in CASES if str(c) == name)

    async def main() -> None:
        async with reference_server() as ref_port, bbx_server() as s:
            CODE[s.server.port] = s.code
            for port in (ref_port, s.server.port):
                events = await outcome_of(port, case)
                assert tuple(events[-1]) == expected, (port, events)

    run(main())


def test_replies_leave_in_order_of_receipt_however_the_bytes_are_cut() -> None:
    """Fragmented and whole pings in one write, or byte by byte: pongs 1, 2, 3 in order."""
    data = (
        fragments(TEXT, ping_json(1), 9)
        + frame(TEXT, ping_json(2))
        + fragments(TEXT, ping_json(3), 4)
    )

    async def main() -> None:
        async with bbx_server() as s:
            CODE[s.server.port] = s.code
            for chop in (None, 1, 3, 50):
                events = await outcome_of(s.server.port, Case("X", "order", data, chop=chop))
                assert events == [("pong", 1), ("pong", 2), ("pong", 3)], (chop, events)

    run(main())
