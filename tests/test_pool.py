"""Several server processes on one port (serve_pool) and SO_REUSEPORT underneath it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from test_process import config, leftovers, phone, wait_for

from bbx_net import EVENT_DTYPE, BbxNetError, net_buffer, serve_pool
from bbx_net.websocket import (
    BroadcastParam,
    CloseRoom,
    CommandChannel,
    CreateRoom,
    Shutdown,
    WsServer,
    WsServerConfig,
)

from wsutil import STEP, run

PHONES = 24  # all on one of two processes: a chance of 2 ** -23 per run


def test_reuse_port_lets_two_servers_share_a_port_and_is_off_by_default() -> None:
    async def scenario() -> None:
        servers = []
        try:
            for _ in range(2):
                producer, _ = net_buffer(16)
                cfg = config(reuse_port=True)
                if servers:
                    cfg = config(reuse_port=True, bind_addr=("127.0.0.1", servers[0].port))
                server = WsServer(cfg, producer, CommandChannel())
                await server.start()
                servers.append(server)
            assert servers[0].port == servers[1].port
            producer, _ = net_buffer(16)
            plain = WsServer(
                config(bind_addr=("127.0.0.1", servers[0].port)), producer, CommandChannel()
            )
            with pytest.raises(OSError):
                await plain.start()
        finally:
            for server in servers:
                await server.stop()

    run(scenario())
    assert WsServerConfig().reuse_port is False


def test_a_pool_spreads_phones_and_the_audio_side_gets_every_message_in_order() -> None:
    with serve_pool(config(), processes=2, ring_capacity=1024) as pool:
        assert leftovers() == []
        assert len(pool.servers) == 2 and len(pool.consumers) == 2
        assert len({s.pid for s in pool.servers}) == 2
        assert {s.port for s in pool.servers} == {pool.port}
        # One clock: every process stamps on the timeline the host reads.
        assert len({s.clock.origin_ns for s in pool.servers}) == 1
        code = pool.create_room_threadsafe(timeout=STEP)
        assert [s.rooms() for s in pool.servers] == [[code], [code]]
        keys = {s.room_key(code) for s in pool.servers}
        assert len(keys) == 1 and None not in keys
        out = np.zeros(64, EVENT_DTYPE)
        drain = pool.bind_block(out, 48_000, 256)

        async def scenario() -> None:
            phones = [await phone(pool.port, code) for _ in range(PHONES)]
            per_process = [s.stats().clients for s in pool.servers]
            assert sum(per_process) == PHONES and min(per_process) > 0, per_process
            start = pool.clock.now_us()
            for i, p in enumerate(phones):
                await p.send(type="param", param="gain", value=i / 100)
                # The same `at` from every phone, whichever process it reached.
                await p.send(type="param", param="freq", value=100.0 + i, at=start + 300_000)
            got: list[tuple[int, float]] = []
            deadline = time.monotonic() + STEP
            while len(got) < PHONES and time.monotonic() < deadline:
                n = drain.drain(pool.clock.now_us())
                got += [(int(e["sample_offset"]), float(e["payload"][0])) for e in out[:n]]
                await asyncio.sleep(0.005)
            assert sorted(v for _, v in got) == pytest.approx([i / 100 for i in range(PHONES)])
            assert all(offset == 0 for offset, _ in got)
            # Each phone's freq follows its gain: the last ones may still be on the way.
            deadline = time.monotonic() + STEP
            while sum(c.pending for c in pool.consumers) < PHONES:
                if time.monotonic() > deadline:
                    break
                assert drain.drain(pool.clock.now_us()) == 0  # not due yet: held
                await asyncio.sleep(0.005)
            assert sum(c.pending for c in pool.consumers) == PHONES  # freq waits for its block
            n = drain.drain(start + 300_000 - 1_000)
            assert n == PHONES
            assert set(out["sample_offset"][:n]) == {48}  # 1 ms into the block, all of them
            assert sorted(float(v) for v in out["payload"][:n, 0]) == [
                100.0 + i for i in range(PHONES)
            ]
            # A host broadcast reaches the phones of every process.
            pool.send_threadsafe(BroadcastParam("gain", 0.75))
            for p in phones:
                msg = await p.recv_until(lambda m: m["type"] == "update" and m["value"] == 0.75)
                assert msg["param"] == "gain"
            assert sum(st.accepted for st in pool.stats()) == 2 * PHONES
            assert len(pool.client_stats()) == PHONES
            pool.send_threadsafe(CloseRoom(code))
            for p in phones:
                assert (await p.recv_until(lambda m: m["type"] == "closed"))["type"] == "closed"
                await p.discard()

        run(scenario())
        assert wait_for(lambda: pool.rooms() == [])
    assert [s.returncode for s in pool.servers] == [0, 0]
    assert leftovers() == []


def test_a_pool_refuses_what_it_manages_and_undoes_a_half_made_room() -> None:
    with serve_pool(config(), processes=2, ring_capacity=64) as pool:
        with pytest.raises(TypeError):
            pool.try_send(CreateRoom())
        with pytest.raises(TypeError):
            pool.send_threadsafe(Shutdown())
        # The code is taken in the second process only: the first makes it, the second
        # refuses, and the first closes it again.
        taken = pool.servers[1].commands.create_room_threadsafe(timeout=STEP)
        with pytest.raises(BbxNetError):
            pool.create_room_threadsafe(timeout=STEP, code=taken)
        assert wait_for(lambda: pool.servers[0].rooms() == [])
        assert pool.servers[1].rooms() == [taken]
        assert pool.try_send(CloseRoom(taken))
        assert wait_for(lambda: pool.rooms() == [])
        assert pool.alive
    assert not pool.alive


@pytest.mark.parametrize("bad", [{"processes": 0}, {"keep_name": True}, {"clock_origin_ns": 1}])
def test_bad_pool_options_fail_before_any_process_starts(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        serve_pool(config(), **bad)
    assert leftovers() == []
