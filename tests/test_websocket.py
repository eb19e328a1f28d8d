"""The server over real sockets on 127.0.0.1, with a websockets client.

The transport's own duties: handshake, framing and limits, addresses, timers, flow
control, commands across threads, shutdown. The session's rules are tested without
sockets in test_session.py; RFC 6455 framing against a reference in test_conformance.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import websockets

import bbx_net.websocket.server as server_module
from bbx_net import (
    EVENT_DTYPE,
    MESSAGE_DTYPE,
    MessageType,
    NodeId,
    PayloadKind,
    hash_param_name,
    net_buffer,
)
from bbx_net.websocket import (
    CommandChannel,
    RoomConfig,
    ServerCommand,
    WsServer,
    WsServerConfig,
)

from conftest import TIMEOUT_SCALE
from wsutil import STEP, eventually, live_server, run


def drain(consumer: Any) -> np.ndarray:
    """Everything waiting in the ring."""
    out = np.zeros(len(consumer) + 1, MESSAGE_DTYPE)
    n = consumer.drain_into(out)
    return out[:n]


# ---- the seed's messages -----------------------------------------------------------


def test_join_gets_welcome_then_state() -> None:
    """welcome carries node id, server time and a session token; state follows."""

    async def main() -> None:
        async with live_server() as s:
            c = await s.joined(client_name="Phone 1")
            w = c.welcome
            NodeId.parse(w["node_id"])
            assert isinstance(w["server_time"], int) and w["server_time"] >= 0
            assert isinstance(w["session"], str) and len(w["session"]) >= 16
            assert c.state["params"] == [
                {"name": "gain", "value": 0.5, "min": 0.0, "max": 1.0},
                {"name": "freq", "value": 440.0, "min": 20.0, "max": 20000.0},
            ]
            stats = s.server.client_stats()
            assert [st.client_name for st in stats] == ["Phone 1"]

    run(main())


def test_param_reaches_the_ring_clamped_with_node_id_and_timestamp() -> None:
    """An accepted param lands in the ring (clamped) with the sender's node id."""

    async def main() -> None:
        async with live_server() as s:
            c = await s.joined()
            before = s.server.clock.now_us()
            await c.send(type="param", param="gain", value=7.5)
            await c.send(type="param", param="freq", value=880)
            await c.request(type="sync")  # a round trip: both params were handled
            rows = drain(s.consumer)
            after = s.server.clock.now_us()
            assert len(rows) == 2
            node = NodeId.parse(c.welcome["node_id"])
            assert rows[0]["param_hash"] == hash_param_name("gain")
            assert rows[0]["payload"][0] == 1.0  # clamped to max
            assert rows[1]["payload"][0] == 880.0
            for row in rows:
                assert row["type"] == MessageType.PARAMETER_CHANGE
                assert row["payload_kind"] == PayloadKind.VALUE
                assert (row["node_id_hi"], row["node_id_lo"]) == (node.high, node.low)
                assert before <= row["timestamp_us"] <= after and row["flags"] == 0
            assert s.server.param_values()["gain"] == 1.0

    run(main())


# ---- errors -------------------------------------------------------------------------


def test_oversize_frame_closes_with_1009_and_others_carry_on() -> None:
    """A frame above max_message_size closes that socket with 1009 only."""

    async def main() -> None:
        async with live_server(max_message_size=1024) as s:
            a = await s.joined()
            b = await s.joined()
            await a.ws.send("x" * 2000)
            assert await a.closed_code() == 1009
            assert (await b.request(type="ping", client_time=1))["type"] == "pong"

    run(main())


def test_garbage_sender_is_closed_with_policy_violation() -> None:
    """A client that keeps sending garbage gets errors, then a 1008 close."""

    async def main() -> None:
        async with live_server(error_budget=5) as s:
            bad = await s.joined()
            good = await s.joined()
            errors = 0
            try:
                for _ in range(50):
                    await bad.ws.send("garbage")
                    if (await bad.recv())["type"] == "error":
                        errors += 1
            except websockets.ConnectionClosed:
                pass
            assert await bad.closed_code() == 1008
            assert 5 <= errors <= 7
            assert (await good.request(type="ping", client_time=1))["type"] == "pong"
            assert s.server.stats().internal_errors == 0

    run(main())


def test_brute_force_is_rate_limited_but_typos_are_not() -> None:
    """60 wrong codes from one address hit RATE_LIMITED; three typos elsewhere do not."""

    async def main() -> None:
        async with live_server() as s:
            wrong = [f"{(int(s.code) + i) % 10000:04d}" for i in range(1, 61)]
            codes: list[str] = []
            attacker = await s.connect()
            for guess in wrong:
                try:
                    reply = await attacker.join(guess)
                except websockets.ConnectionClosed:
                    attacker = await s.connect()  # closed for misbehaving: come back
                    reply = await attacker.join(guess)
                codes.append(reply["code"])
            assert codes[:10] == ["INVALID_ROOM"] * 10
            assert set(codes[10:]) == {"RATE_LIMITED"}
            late = await s.connect()
            assert (await late.join(s.code))["code"] == "RATE_LIMITED"  # even the right one
            # A phone on another address (127.0.0.2) mistypes three times, then joins.
            phone = await s.connect(local_addr=("127.0.0.2", 0))
            for typo in wrong[:3]:
                assert (await phone.join(typo))["code"] == "INVALID_ROOM"
            assert (await phone.join(s.code))["type"] == "welcome"

    run(main())


# ---- fan-out ------------------------------------------------------------------------


def test_broadcasts_reach_every_joined_client() -> None:
    """BroadcastParam and BroadcastVisualization reach all joined clients, any room."""

    async def main() -> None:
        async with live_server() as s:
            other_room = await s.commands.create_room()
            clients = [await s.joined(), await s.joined(), await s.joined(other_room)]
            lobby = await s.connect()  # not joined: gets nothing
            await s.commands.send(ServerCommand.BroadcastParam("freq", 1000.0))
            await s.commands.send(ServerCommand.BroadcastVisualization([0.5, 0.25, 1.0]))
            for c in clients:
                assert await c.recv() == {"type": "update", "param": "freq", "value": 1000.0}
                assert await c.recv() == {"type": "visualization", "data": [0.5, 0.25, 1.0]}
            assert await lobby.nothing()
            assert s.server.param_values()["freq"] == 1000.0

    run(main())


def test_an_echo_goes_at_once_and_the_rest_of_its_interval_at_its_end() -> None:
    """Over the wire: the first change and the allowance reach the room at once; the
    ones made inside the interval coalesce and the newest arrives when it ends."""

    async def main() -> None:
        async with live_server(update_rate=2.0) as s:  # an interval of half a second
            a, b = await s.joined(), await s.joined()
            for v in (0.1, 0.2, 0.3, 0.4):
                await a.send(type="param", param="gain", value=v)
            assert await b.recv() == {"type": "update", "param": "gain", "value": 0.1}
            assert await b.recv() == {"type": "update", "param": "gain", "value": 0.2}
            assert await b.nothing(within=0.3)  # inside the interval: held
            assert await b.recv() == {"type": "update", "param": "gain", "value": 0.4}
            assert await b.nothing(within=0.6) and await a.nothing(within=0.0)

    run(main())


def test_room_expiry_closes_that_room_only() -> None:
    """A room past its expiration sends closed to its clients and closes them."""

    async def main() -> None:
        async with live_server(room=RoomConfig(expiration=1.0)) as s:
            a = await s.joined()
            assert (await a.recv(timeout=STEP + 2))["type"] == "closed"
            assert await a.closed_code() in (1000, 1001)
            assert s.server.rooms() == []

    run(main())


def test_client_that_answers_no_pings_is_evicted() -> None:
    """A client whose socket stops answering is dropped within connection_timeout."""

    async def main() -> None:
        async with live_server(ping_interval=0.1, connection_timeout=0.5) as s:
            dead = await s.joined()
            alive = await s.joined()
            assert dead.ws.transport is not None
            dead.ws.transport.pause_reading()  # no more pongs from this one
            t0 = asyncio.get_running_loop().time()
            await eventually(lambda: s.server.stats().clients == 1, timeout=STEP)
            assert asyncio.get_running_loop().time() - t0 < 0.5 + 0.5 * TIMEOUT_SCALE
            assert (await alive.request(type="ping", client_time=1))["type"] == "pong"
            stats = [st for st in s.server.client_stats() if st.node_id]
            assert stats[0].round_trip_us is not None and stats[0].round_trip_us > 0

    run(main())


def test_resume_returns_the_same_node_id_and_a_state() -> None:
    """After a dropped socket, join with the session token gives the same node id."""

    async def main() -> None:
        async with live_server() as s:
            a = await s.joined()
            node, token = a.welcome["node_id"], a.welcome["session"]
            assert a.ws.transport is not None
            a.ws.transport.abort()  # the phone's socket dies (screen locked)
            await eventually(lambda: s.server.stats().clients == 0)
            back = await s.connect()
            welcome = await back.join(s.code, session=token)
            assert welcome["node_id"] == node and welcome["session"] != token
            assert (await back.recv())["type"] == "state"
            stranger = await s.connect()
            fresh = await stranger.join(s.code, session="made-up")
            assert fresh["type"] == "welcome" and fresh["node_id"] != node

    run(main())


def test_shutdown_returns_from_run_with_every_socket_closed() -> None:
    """Shutdown: clients get closed, sockets close cleanly, run() returns."""

    async def main() -> None:
        producer, _ = net_buffer(64)
        commands = CommandChannel()
        server = WsServer(WsServerConfig(bind_addr=("127.0.0.1", 0)), producer, commands)
        code = await commands.create_room()
        task = asyncio.create_task(server.run())
        await eventually(lambda: server.sockets != [])
        url = f"ws://127.0.0.1:{server.port}"
        conns = [await websockets.connect(url) for _ in range(3)]
        await conns[0].send(orjson.dumps({"type": "join", "room_code": code}).decode())
        await conns[0].recv()
        await conns[0].recv()
        await commands.send(ServerCommand.Shutdown())
        await asyncio.wait_for(task, STEP)
        assert orjson.loads(await conns[0].recv())["type"] == "closed"
        for ws in conns:
            await asyncio.wait_for(ws.wait_closed(), STEP)
            assert ws.protocol.close_code == 1001
            assert ws.transport is not None
            ws.transport.abort()
        assert server.stats().connections == 0

    run(main())


def test_cancelling_run_closes_everything() -> None:
    """Cancelling run() also closes every connection and stops listening."""

    async def main() -> None:
        producer, _ = net_buffer(64)
        server = WsServer(WsServerConfig(bind_addr=("127.0.0.1", 0)), producer)
        task = asyncio.create_task(server.run())
        await eventually(lambda: server.sockets != [])
        ws = await websockets.connect(f"ws://127.0.0.1:{server.port}")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(ws.wait_closed(), STEP)
        assert server.sockets == []
        assert ws.transport is not None
        ws.transport.abort()

    run(main())


def test_commands_from_a_plain_thread() -> None:
    """A non-asyncio thread creates a room, broadcasts and shuts the server down."""

    async def main() -> None:
        async with live_server() as s:
            result: dict[str, Any] = {}
            c = await s.joined()

            def host_thread() -> None:
                result["code"] = s.commands.create_room_threadsafe(timeout=STEP)
                s.commands.send_threadsafe(ServerCommand.BroadcastParam("gain", 0.125))

            t = threading.Thread(target=host_thread)
            t.start()
            assert await c.recv() == {"type": "update", "param": "gain", "value": 0.125}
            await asyncio.get_running_loop().run_in_executor(None, t.join, STEP)
            assert result["code"] in s.server.rooms()

    run(main())


def test_commands_before_run_are_answered() -> None:
    """The seed's Basic Usage: CreateRoom awaited before run() does not hang."""

    async def main() -> None:
        producer, _ = net_buffer(8)
        commands = CommandChannel(4)
        create = ServerCommand.CreateRoom()
        await commands.send(create)  # even before the server exists
        server = WsServer(WsServerConfig(bind_addr="127.0.0.1:0"), producer, commands)
        code = await asyncio.wait_for(create, STEP)
        assert code in server.rooms()
        assert create.wait(0) == code
        await commands.send(ServerCommand.Shutdown())
        await asyncio.wait_for(server.run(), STEP)  # returns at once

    run(main())


# ---- load and slow clients ----------------------------------------------------------


def test_a_client_that_stops_reading_delays_nobody() -> None:
    """A stalled phone gets only bounded, coalesced traffic; the others keep flowing."""

    async def main() -> None:
        async with live_server(broadcast_capacity=8) as s:
            stalled = await s.joined()
            fine = await s.joined()
            assert stalled.ws.transport is not None
            stalled.ws.transport.pause_reading()
            frame = [float(i) for i in range(10_000)]  # ~100 KB per frame
            loop = asyncio.get_running_loop()
            for i in range(300):  # 30 MB: more than any socket buffer holds
                frame[0] = float(i)
                t0 = loop.time()
                await s.commands.send(ServerCommand.BroadcastVisualization(frame))
                got = await fine.recv()
                assert got["data"][0] == float(i)
                assert loop.time() - t0 < 1.0 * TIMEOUT_SCALE
            stats = {st.node_id: st for st in s.server.client_stats()}
            assert stats[stalled.welcome["node_id"]].dropped > 100
            assert stats[fine.welcome["node_id"]].dropped == 0

    run(main())


def test_hundred_phones_in_one_room_at_60_hz_all_reach_the_ring() -> None:
    """100 clients × 60 Hz for 1.5 s: every message reaches the ring; echoes coalesce."""

    async def main() -> None:
        async with live_server(capacity=32768) as s:
            clients = [await s.joined() for _ in range(100)]
            received = [0] * len(clients)

            async def reader(i: int) -> None:
                ws = clients[i].ws
                try:
                    while True:
                        await ws.recv()
                        received[i] += 1
                except websockets.ConnectionClosed:
                    pass

            readers = [asyncio.create_task(reader(i)) for i in range(len(clients))]
            loop = asyncio.get_running_loop()
            ticks = 90
            start = loop.time()
            for tick in range(ticks):
                value = (tick % 100) / 100
                frame = orjson.dumps({"type": "param", "param": "gain", "value": value}).decode()
                for c in clients:
                    await c.ws.send(frame)
                delay = start + (tick + 1) / 60 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            total = ticks * len(clients)
            await eventually(lambda: s.server.stats().accepted == total, timeout=STEP * 2)
            stats = s.server.stats()
            assert stats.refused == 0 and stats.ring_dropped == 0
            assert len(drain(s.consumer)) == total
            await asyncio.sleep(0.2)
            for r in readers:
                r.cancel()
            # Without coalescing each phone would get 99 × 90 updates; the flush rate
            # bounds it to about 60 per second per parameter.
            elapsed = loop.time() - start
            assert max(received) <= 60 * elapsed * 1.5 + 10
            assert min(received) > 0

    run(main(), timeout=120)


def test_ring_overload_drops_and_counts_without_blocking() -> None:
    """With the audio side stalled, the ring fills; extra messages are counted."""

    async def main() -> None:
        async with live_server(capacity=4) as s:
            c = await s.joined()
            for i in range(10):
                await c.send(type="param", param="gain", value=i / 10)
            assert (await c.request(type="ping", client_time=1))["type"] == "pong"
            stats = s.server.stats()
            assert (stats.accepted, stats.refused, stats.ring_dropped) == (4, 6, 6)

    run(main())


# ---- scheduling over the wire --------------------------------------------------------


def test_event_with_at_arrives_in_its_block_at_the_right_sample() -> None:
    """A param sent with at=T lands in the audio block containing T at frame (T-start)·sr."""

    async def main() -> None:
        async with live_server() as s:
            c = await s.joined()
            pong = await c.request(type="ping", client_time=0)
            at = pong["server_time"] + 200_000  # 200 ms ahead
            await c.send(type="param", param="gain", value=0.9, at=at)
            await c.request(type="sync")
            rate, size = 48_000, 256
            block_us = size * 1_000_000 // rate
            start = at - 3 * block_us - 1_234  # T falls in the 4th block from here
            out = np.zeros(16, EVENT_DTYPE)
            found = None
            for k in range(8):
                block_start = start + k * block_us
                n = s.consumer.drain_block(out, block_start, rate, size)
                if n:
                    found = (k, block_start, out[:n].copy())
                    break
            assert found is not None
            k, block_start, events = found
            assert k == 3 and len(events) == 1
            assert events[0]["timestamp_us"] == at and events[0]["flags"] == 1
            assert events[0]["sample_offset"] == (at - block_start) * rate // 1_000_000
            assert events[0]["payload"][0] == pytest.approx(0.9)

    run(main())


def test_fragmented_messages_are_handled_in_order() -> None:
    """A message sent in fragments works like a whole one (the assembler path)."""

    async def main() -> None:
        async with live_server() as s:
            c = await s.joined()
            await c.ws.send(['{"type": "ping", ', '"client_time": 42}'])
            assert (await c.recv())["client_time"] == 42
            await c.ws.send(["not ", "json"])
            assert (await c.recv())["code"] == "INVALID_MESSAGE"

    run(main())


def test_allowed_origins_are_enforced() -> None:
    """With allowed_origins set, other Origin headers are refused at the handshake."""

    async def main() -> None:
        async with live_server(allowed_origins=("http://stage.local",)) as s:
            good = await s.connect(origin="http://stage.local")
            assert (await good.join(s.code))["type"] == "welcome"
            with pytest.raises(websockets.InvalidStatus) as info:
                await s.connect(origin="http://evil.example")
            assert info.value.response.status_code == 403

    run(main())


def test_page_is_served_over_http_on_the_same_port() -> None:
    """A plain GET on the WebSocket port returns the phone page; unknown paths 404."""

    async def main() -> None:
        async with live_server() as s:
            for path, status, marker in (
                ("/", 200, b"<!doctype html>"),
                ("/bbx-client.js", 200, b"export class BbxClient"),
                ("/nope", 404, b"not found"),
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", s.server.port)
                writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                data = await asyncio.wait_for(reader.read(), STEP)
                writer.close()
                await writer.wait_closed()
                assert data.startswith(f"HTTP/1.1 {status}".encode()), data[:40]
                assert marker in data

    run(main())


def test_the_hosts_own_pages_are_served_beside_the_client(tmp_path: Path) -> None:
    """static_dir: the host's files at their paths (subfolders too), its index.html at
    /, the package's bbx-client.js unchanged even if the host has one; hidden files and
    paths outside the folder are not reachable."""
    (tmp_path / "index.html").write_text("<!doctype html><title>host page</title>")
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "main.js").write_text('import { BbxClient } from "/bbx-client.js";')
    (tmp_path / "bbx-client.js").write_text("not the client")
    (tmp_path / ".secret").write_text("hidden")
    (tmp_path.parent / "outside.txt").write_text("outside")

    async def get(port: int, path: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), STEP)
        writer.close()
        await writer.wait_closed()
        return data

    async def main() -> None:
        async with live_server(static_dir=tmp_path) as s:
            port = s.server.port
            assert b"host page" in await get(port, "/")
            main_js = await get(port, "/js/main.js")
            assert main_js.startswith(b"HTTP/1.1 200") and b"text/javascript" in main_js
            assert b"export class BbxClient" in await get(port, "/bbx-client.js")
            assert b"<title>Join with your phone" in await get(port, "/show")
            for path in ("/.secret", "/../outside.txt", "/js/../../outside.txt"):
                assert (await get(port, path)).startswith(b"HTTP/1.1 404"), path

    run(main())
    with pytest.raises(ValueError, match="not a folder"):
        WsServerConfig(static_dir=tmp_path / "missing")


def test_flooding_clients_do_not_starve_the_others() -> None:
    """20 phones each dump 5,000 messages at once: the server handles a bounded number of
    frames per connection per loop turn (so others get their turn), answers another
    phone's pings meanwhile, and every message still reaches the ring."""

    async def main() -> None:
        async with live_server(capacity=131072) as s:
            loop = asyncio.get_running_loop()
            turn = [0]

            def tick() -> None:  # runs once per event-loop iteration
                turn[0] += 1
                if not stopped:
                    loop.call_soon(tick)

            stopped = False
            per_turn: Counter[tuple[int, int]] = Counter()
            session = s.server._session
            handle = session.receive

            def spy(peer: Any, data: Any, now_us: int, binary: bool = False) -> None:
                per_turn[(id(peer), turn[0])] += 1
                handle(peer, data, now_us, binary)

            session.receive = spy  # type: ignore[method-assign]
            loop.call_soon(tick)
            floods = [await s.joined() for _ in range(20)]
            probe = await s.joined(await s.commands.create_room())  # no echoes
            burst = b"".join(
                _masked(orjson.dumps({"type": "param", "param": "gain", "value": 0.5}))
                for _ in range(5_000)
            )
            for f in floods:
                assert f.ws.transport is not None
                f.ws.transport.write(burst)  # ~160 KB of frames in one write each
            worst = 0.0
            for i in range(20):
                t0 = loop.time()
                assert (await probe.request(type="ping", client_time=i))["type"] == "pong"
                worst = max(worst, loop.time() - t0)
            await eventually(lambda: s.server.stats().accepted == 100_000, timeout=STEP * 4)
            stopped = True
            print(f"worst probe round trip during the flood: {worst * 1000:.0f} ms")
            limit = server_module._EVENTS_PER_TURN
            assert limit < 5_000  # so each burst takes several turns
            assert max(per_turn.values()) <= limit

    run(main(), timeout=120)


def _masked(
    payload: bytes, opcode: int = 0x1, fin: bool = True, mask: bytes = b"\x00\x00\x00\x00"
) -> bytes:
    """One client frame, masked as clients must (the mask is applied here)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes([b0, 0x80 | n])
    else:
        head = bytes([b0, 0x80 | 126]) + n.to_bytes(2, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def _param(i: int) -> bytes:
    return orjson.dumps({"type": "param", "param": "gain", "value": i / 1000})


def test_frames_split_at_every_byte_are_reassembled_in_order() -> None:
    """A stream of frames (short, 16-bit length, masked) fed one byte at a time."""

    async def main() -> None:
        async with live_server() as s:
            c = await s.joined()
            long_name = {"type": "ping", "client_time": 7, "pad": "x" * 300}
            stream = b"".join(
                [_masked(_param(i), mask=b"\x12\x34\x56\x78") for i in range(5)]
                + [_masked(orjson.dumps(long_name), mask=b"\x9a\xbc\xde\xf0")]
            )
            assert c.ws.transport is not None
            for i in range(len(stream)):
                c.ws.transport.write(stream[i : i + 1])
                if i % 16 == 0:
                    await asyncio.sleep(0)
            pong = await c.recv()
            assert pong["type"] == "pong" and pong["client_time"] == 7
            rows = drain(s.consumer)
            assert [round(float(v), 3) for v in rows["payload"][:, 0]] == [
                0.0,
                0.001,
                0.002,
                0.003,
                0.004,
            ]

    run(main())


def test_control_frames_between_data_frames_keep_their_order() -> None:
    """A ping between two params in one write: both params land, the ping is answered."""

    async def main() -> None:
        async with live_server() as s:
            c = await s.joined()
            assert c.ws.transport is not None
            pong_waiter = await c.ws.ping(b"hello")  # websockets answers from its side
            c.ws.transport.write(
                _masked(_param(1))
                + _masked(b"ping-data", opcode=0x9)
                + _masked(_param(2))
                + _masked(orjson.dumps({"type": "ping", "client_time": 3}))
            )
            assert (await c.recv())["client_time"] == 3
            await asyncio.wait_for(pong_waiter, STEP)
            assert len(drain(s.consumer)) == 2

    run(main())


def test_unmasked_client_frame_fails_the_connection() -> None:
    """Clients must mask; an unmasked frame closes that connection with 1002."""

    async def main() -> None:
        async with live_server() as s:
            c = await s.joined()
            other = await s.joined()
            assert c.ws.transport is not None
            raw = _param(1)
            c.ws.transport.write(bytes([0x81, len(raw)]) + raw)
            assert await c.closed_code() == 1002
            assert (await other.request(type="ping", client_time=1))["type"] == "pong"
            assert s.consumer.is_empty()

    run(main())


def test_close_frame_then_more_bytes_closes_cleanly() -> None:
    """Data after a close frame in the same write is not handled as messages."""

    async def main() -> None:
        async with live_server() as s:
            c = await s.joined()
            assert c.ws.transport is not None
            c.ws.transport.write(
                _masked(_param(1)) + _masked(b"\x03\xe8", opcode=0x8) + _masked(_param(2))
            )
            assert await c.closed_code() in (1000, 1005, 1006)
            assert len(drain(s.consumer)) == 1

    run(main())


def test_server_estimates_each_clients_clock_offset() -> None:
    """A client whose clock runs 1 s ahead shows an offset of about +1 s to the host."""

    async def main() -> None:
        async with live_server(ping_interval=0.05) as s:
            c = await s.joined()
            node = c.welcome["node_id"]

            def stats() -> Any:
                return next(st for st in s.server.client_stats() if st.node_id == node)

            await eventually(lambda: stats().round_trip_us is not None)
            for _ in range(5):
                ahead = s.server.clock.now_us() + 1_000_000  # "my clock says"
                assert (await c.request(type="ping", client_time=ahead))["type"] == "pong"
            offset = stats().clock_offset_us
            assert offset is not None and abs(offset - 1_000_000) < 50_000, offset

    run(main())


def test_stalled_handshakes_delay_nobody_and_time_out() -> None:
    """Sockets that never finish the handshake neither block others nor stay forever."""

    async def main() -> None:
        async with live_server(handshake_timeout=0.5) as s:
            stalled = []
            for _ in range(20):
                reader, writer = await asyncio.open_connection("127.0.0.1", s.server.port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")  # unfinished
                stalled.append((reader, writer))
            c = await s.joined()  # served while the 20 hang
            assert (await c.request(type="ping", client_time=1))["type"] == "pong"
            for reader, writer in stalled:  # each is cut off after handshake_timeout
                data = await asyncio.wait_for(reader.read(), STEP)  # returns at EOF only
                assert b" 101 " not in data
                writer.close()

    run(main())


def test_tls_serves_wss_and_the_page_over_https() -> None:
    """With ssl_context set, phones join over wss:// and the page comes over https://."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def main() -> None:
        async with live_server(ssl_context=server_ctx) as s:
            url = f"wss://127.0.0.1:{s.server.port}/"
            async with websockets.connect(url, ssl=client_ctx) as ws:
                await ws.send(orjson.dumps({"type": "join", "room_code": s.code}).decode())
                assert orjson.loads(await ws.recv())["type"] == "welcome"
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", s.server.port, ssl=client_ctx
            )
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            page = await asyncio.wait_for(reader.read(), STEP)
            writer.close()
            assert page.startswith(b"HTTP/1.1 200") and b"<!doctype html>" in page
            with pytest.raises((OSError, websockets.exceptions.InvalidHandshake)):
                await websockets.connect(f"ws://127.0.0.1:{s.server.port}/", open_timeout=2)

    run(main())


def test_hostile_values_over_the_wire_get_errors_not_internal_errors() -> None:
    """1e300, 3.5e38 coordinates, 10**400 and lone surrogates: an `error` reply each,
    charged to the client (closed 1008 past its budget), no internal error."""

    async def main() -> None:
        async with live_server(params=[], error_budget=100) as s:
            c = await s.joined()
            frames = [
                '{"type":"param","param":"gain","value":1e300}',
                '{"type":"trigger","name":"pad","x":3.5e38,"y":0}',
                '{"type":"param","param":"gain","value":1' + "0" * 400 + "}",
                '{"type":"trigger","name":"\\ud800"}',
                '{"type":"trigger","name":"pad:1e300,0"}',
                b'{"type":"sync"}',  # a binary frame: the protocol is text
            ]
            for frame in frames:
                await c.ws.send(frame)
                reply = await c.recv()
                assert reply["type"] == "error", reply
                assert reply["code"] in ("INVALID_VALUE", "INVALID_MESSAGE")
            stats = s.server.stats()
            assert stats.internal_errors == 0 and stats.errors == len(frames)
            assert s.consumer.is_empty()

    run(main())
