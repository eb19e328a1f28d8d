"""Abuse over real sockets on loopback: one client or address must not take the server
down or keep other phones out. Limits and timeouts are shrunk to keep each test short."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import struct
import time

import pytest
import websockets

from wsutil import STEP, eventually, live_server, run


def _masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + body


def _flood_pings(port: int, seconds: float, pings: int) -> tuple[int, bool]:
    """Opens a raw WebSocket that sends pings and never reads.

    Returns (pings sent, whether sending blocked before all were sent).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response
    ping = _masked(0x9, b"p" * 125)  # the largest control payload: the largest pongs
    batch = ping * 64
    sock.settimeout(0.5)
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while sent < pings and time.monotonic() < deadline:
            sock.sendall(batch)
            sent += 64
    except (TimeoutError, OSError):
        return sent, True  # the server stopped reading us (or dropped us)
    finally:
        sock.close()
    return sent, False


def test_a_ping_flood_that_never_reads_is_cut_off_and_delays_nobody() -> None:
    """Reading pauses while the flooder's pongs are unread, so it cannot grow server
    memory; past 16 unread pings it is closed (1008); a healthy phone keeps its pongs."""

    async def main() -> None:
        async with live_server() as s:
            healthy = await s.joined()
            loop = asyncio.get_running_loop()
            flood = loop.run_in_executor(None, _flood_pings, s.server.port, STEP, 1_000_000)
            while not flood.done():
                pong = await healthy.request(type="ping", client_time=1)
                assert pong["type"] == "pong"
                await asyncio.sleep(0.05)
            sent, blocked = await flood
            assert blocked, f"the server read all {sent} pings of a client that never reads"
            assert sent < 200_000  # a few MB of socket buffers, not the whole flood
            await eventually(lambda: s.server.stats().connections == 1, timeout=STEP)
            assert (await healthy.request(type="ping", client_time=2))["type"] == "pong"
            assert s.server.stats().internal_errors == 0

    run(main())


def test_a_connection_that_never_joins_is_closed_1008() -> None:
    """join_timeout after the handshake: 1008; a phone that joined stays."""

    async def main() -> None:
        async with live_server(join_timeout=0.3) as s:
            lurker = await s.connect()
            phone = await s.joined()
            assert await lurker.closed_code() == 1008
            assert (await phone.request(type="ping", client_time=1))["type"] == "pong"

    run(main())


def test_unjoined_sockets_per_address_are_bounded() -> None:
    """Past max_unjoined_per_address from one address: SERVER_FULL and 1008; another
    address, and a socket that joins, are unaffected."""

    async def main() -> None:
        async with live_server(max_unjoined_per_address=3) as s:
            lurkers = [await s.connect() for _ in range(3)]
            extra = await s.connect()
            assert (await extra.recv())["code"] == "SERVER_FULL"
            assert await extra.closed_code() == 1008
            other = await s.connect(local_addr=("127.0.0.2", 0))
            assert (await other.join(s.code))["type"] == "welcome"
            assert (await lurkers[0].join(s.code))["type"] == "welcome"
            await lurkers[0].recv()  # state
            again = await s.connect()  # one place freed by that join
            assert (await again.join(s.code))["type"] == "welcome"

    run(main())


def test_one_address_cannot_squat_a_room_when_limited() -> None:
    """max_seats_per_address: one address's third join gets ROOM_FULL, another's works."""

    async def main() -> None:
        async with live_server(max_seats_per_address=2) as s:
            await s.joined()
            await s.joined()
            third = await s.connect()
            assert (await third.join(s.code))["code"] == "ROOM_FULL"
            await s.joined(local_addr=("127.0.0.2", 0))

    run(main())


def test_held_seats_yield_to_live_phones() -> None:
    """A full room whose seats are only held (dropped phones) still admits a new phone."""

    async def main() -> None:
        from bbx_net.websocket import RoomConfig

        async with live_server(room=RoomConfig(max_clients=2)) as s:
            for _ in range(2):
                dropped = await s.joined()
                assert dropped.ws.transport is not None
                dropped.ws.transport.abort()
            await eventually(lambda: s.server.stats().clients == 0)
            await s.joined()
            await s.joined()
            late = await s.connect()
            assert (await late.join(s.code))["code"] == "ROOM_FULL"  # two live: full

    run(main())


def test_undeclared_parameter_names_are_bounded() -> None:
    """With no declared params, new names past max_undeclared_params are UNKNOWN_PARAM."""

    async def main() -> None:
        async with live_server(params=[], max_undeclared_params=50) as s:
            c = await s.joined()
            for i in range(60):
                await c.send(type="param", param=f"p{i}", value=0.5)
            codes = [(await c.recv())["code"] for _ in range(10)]
            assert codes == ["UNKNOWN_PARAM"] * 10
            assert len(s.server.param_values()) == 50
            await c.send(type="param", param="p0", value=0.25)  # a known name still works
            assert await c.nothing()

    run(main())


# ---- HTTP on the page port ----------------------------------------------------------


async def _http(port: int, *writes: bytes) -> bytes:
    """Sends `writes` (each its own TCP write) and reads until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for data in writes:
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(0.02)
        return await asyncio.wait_for(reader.read(1 << 20), STEP)
    finally:
        writer.close()


def _split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, body


def test_http_methods_head_pipelining_and_garbage(caplog: pytest.LogCaptureFixture) -> None:
    """Other methods: 405 with Allow. HEAD: GET's headers, no body. Pipelined requests:
    the first is answered, then the connection closes. Garbage: closed. No errors logged."""

    async def main() -> None:
        async with live_server() as s:
            port = s.server.port
            for method in (b"POST", b"PUT", b"DELETE", b"OPTIONS"):
                req = method + b" / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                status, headers, _ = _split(await _http(port, req))
                assert status == "HTTP/1.1 405 Method Not Allowed"
                assert headers["Allow"] == "GET, HEAD"
            get = _split(await _http(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
            head = _split(await _http(port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert head[0] == get[0] == "HTTP/1.1 200 OK"
            assert head[1]["Content-Length"] == get[1]["Content-Length"] == str(len(get[2]))
            assert head[2] == b"" and len(get[2]) > 100
            two = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /bbx-client.js HTTP/1.1\r\nHost: x\r\n\r\n"
            assert (await _http(port, two)).count(b"HTTP/1.1 ") == 1
            later = (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"POST / HTTP/1.1\r\n\r\n")
            assert (await _http(port, *later)).count(b"HTTP/1.1 ") == 1
            for garbage in (b"garbage\r\n\r\n", b"\x00\xff" * 100 + b"\r\n\r\n", b"GET\r\n\r\n"):
                await _http(port, garbage)  # closed, with or without a 400
            ws = await s.joined()  # the WebSocket path is untouched
            assert (await ws.request(type="ping", client_time=1))["type"] == "pong"
            assert s.server.stats().internal_errors == 0

    with caplog.at_level(logging.WARNING):
        run(main())
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_origin_null_and_no_origin_are_distinct() -> None:
    """allowed_origins: "null" admits the literal `Origin: null`, "" admits no Origin."""

    async def main() -> None:
        async with live_server(allowed_origins=("null",)) as s:
            await s.connect(origin="null")
            with pytest.raises(websockets.InvalidStatus) as info:
                await s.connect()
            assert info.value.response.status_code == 403
        async with live_server(allowed_origins=("",)) as s:
            await s.connect()
            with pytest.raises(websockets.InvalidStatus):
                await s.connect(origin="null")

    run(main())


# ---- guessing -----------------------------------------------------------------------


def test_a_thousand_addresses_guessing_get_no_more_than_the_server_budget() -> None:
    """1,000 source addresses (127.x.y.z), three wrong codes each, default settings: only
    the server-wide burst and its refill are answered INVALID_ROOM, the rest are
    RATE_LIMITED; meanwhile a phone with the link key joins at once."""

    async def main() -> None:
        async with live_server() as s:
            loop = asyncio.get_running_loop()
            start = loop.time()
            counts: dict[str, int] = {}
            wrong = f"{(int(s.code) + 1) % 10000:04d}"
            for i in range(1000):
                address = f"127.{1 + i // 250}.{i % 250}.{1 + i % 7}"
                c = await s.connect(local_addr=(address, 0))
                for _ in range(3):
                    code = (await c.join(wrong))["code"]
                    counts[code] = counts.get(code, 0) + 1
                await c.discard()
                s.clients.remove(c)
            minutes = (loop.time() - start) / 60
            assert counts.get("INVALID_ROOM", 0) <= 60 + 3.1 * minutes + 1
            assert counts["RATE_LIMITED"] >= 3000 - 60 - 3.1 * minutes - 1
            typed = await s.connect(local_addr=("127.9.9.9", 0))
            assert (await typed.join(s.code))["code"] == "RATE_LIMITED"
            linked = await s.connect(local_addr=("127.9.9.9", 0))
            key = s.server.room_key(s.code)
            assert (await linked.join(s.code, key=key))["type"] == "welcome"

    run(main(), timeout=120)


def test_phones_with_the_key_or_a_token_join_beside_a_throttled_attacker() -> None:
    """Same address as an attacker who spent its failed joins: the link and a resume work."""

    async def main() -> None:
        async with live_server() as s:
            phone = await s.joined()
            token = phone.welcome["session"]
            assert phone.ws.transport is not None
            phone.ws.transport.abort()
            attacker = await s.connect()
            codes = [(await attacker.join("nope"))["code"] for _ in range(11)]
            assert codes[-1] == "RATE_LIMITED"
            back = await s.connect()
            welcome = await back.join(s.code, session=token)
            assert welcome["node_id"] == phone.welcome["node_id"]
            linked = await s.connect()
            welcome = await linked.join(s.code, key=s.server.room_key(s.code))
            assert welcome["type"] == "welcome"

    run(main())
