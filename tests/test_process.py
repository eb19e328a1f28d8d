"""The server in its own process: the shared ring, commands, events, death and cleanup."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bbx_net import EVENT_DTYPE, BbxNetError, SharedSegment, _ring, serve_process
from bbx_net.websocket import (
    BroadcastParam,
    BroadcastVisualization,
    CloseRoom,
    ParamEvent,
    WsServerConfig,
)

from conftest import TIMEOUT_SCALE
from wsutil import PARAMS, STEP, Client, run

SHM = Path("/dev/shm")


def leftovers(pid: int | None = None) -> list[str]:
    """Segments of ours still named in /dev/shm (this process's, or pid's)."""
    tag = f"bbx-net-{pid or os.getpid()}-"
    return sorted(p.name for p in SHM.iterdir() if p.name.startswith(tag))


def config(**kw: Any) -> WsServerConfig:
    kw.setdefault("params", PARAMS)
    kw.setdefault("bind_addr", ("127.0.0.1", 0))
    return WsServerConfig(**kw)


def wait_for(pred: Any, timeout: float = STEP) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return bool(pred())


async def phone(port: int, code: str) -> Client:
    import websockets

    ws = await asyncio.wait_for(websockets.connect(f"ws://127.0.0.1:{port}/"), STEP)
    client = Client(ws)
    client.welcome = await client.join(code)
    assert client.welcome["type"] == "welcome", client.welcome
    client.state = await client.recv()
    return client


def test_a_phone_reaches_the_audio_process_and_the_host_reaches_the_phone() -> None:
    server = serve_process(config(), 1024)
    try:
        assert leftovers() == []  # the name went once the server had mapped it
        code = server.commands.create_room_threadsafe(timeout=STEP)
        events: list[Any] = []
        server.add_listener(events.append)
        out = np.zeros(16, EVENT_DTYPE)
        drain = server.consumer.bind_block(out, 48_000, 256)

        async def scenario() -> None:
            client = await phone(server.port, code)
            before = server.clock.now_us()
            await client.send(type="param", param="gain", value=0.25)
            await client.send(type="param", param="freq", value=880.0, at=before + 200_000)
            assert wait_for(lambda: len(server.consumer) == 2)
            # The shared clock: the server stamped the message with the time this
            # process reads from ClockSync(origin_ns=...) too.
            n = drain.drain(server.clock.now_us())
            assert n == 1
            first = out[0]
            assert abs(first["payload"][0] - 0.25) < 1e-7
            assert before <= first["timestamp_us"] <= server.clock.now_us()
            assert server.consumer.pending == 1  # freq waits for its block
            assert drain.drain(before + 200_000 - 1000) == 1
            assert out[0]["sample_offset"] == 48  # 1 ms into the block
            # The host's commands reach the phone.
            server.commands.send_threadsafe(BroadcastParam("gain", 0.75))
            assert (await client.recv()) == {"type": "update", "param": "gain", "value": 0.75}
            server.commands.send_threadsafe(BroadcastVisualization([1.0, 2.0], 3))
            msg = await client.recv()
            assert msg == {"type": "visualization", "data": [1.0, 2.0], "stream": 3}
            # The audio thread's way back: the visualization ring.
            assert server.viz is not None
            assert server.viz.try_push(0, np.array([0.5, -0.5], np.float32))
            msg = await client.recv()
            assert msg == {"type": "visualization", "data": [0.5, -0.5]}
            # Stats and events cross over.
            stats = server.stats()
            assert (stats.clients, stats.rooms, stats.accepted) == (1, 1, 2)
            assert [c.room_code for c in server.client_stats()] == [code]
            assert server.param_values()["gain"] == 0.75
            assert server.rooms() == [code] and server.room_key(code)
            assert wait_for(lambda: len(events) >= 3)
            names = [e.name for e in events if isinstance(e, ParamEvent)]
            assert names[:2] == ["gain", "freq"]
            server.commands.send_threadsafe(CloseRoom(code))
            assert (await client.recv())["type"] == "closed"
            await client.discard()

        run(scenario())
        # The closed room's code is free again.
        assert server.commands.create_room_threadsafe(timeout=STEP, code=code) == code
    finally:
        assert server.shutdown() == 0
    assert not server.alive and server.returncode == 0
    assert leftovers() == []


def test_a_code_in_use_fails_on_the_callers_side() -> None:
    with serve_process(config(), 64) as server:
        code = server.commands.create_room_threadsafe(timeout=STEP)
        with pytest.raises(BbxNetError):
            server.commands.create_room_threadsafe(timeout=STEP, code=code)
        with pytest.raises(ValueError):  # validated here, before it crosses
            server.commands.try_send(BroadcastParam("", 1.0))
        assert server.rooms() == [code]
    assert server.returncode == 0 and leftovers() == []


def test_millions_of_messages_cross_exactly_once_in_order() -> None:
    """3,000,000 sequence-numbered messages from another process's Python producer
    reach a C consumer thread here once each, in order."""
    total = 3_000_000
    name = f"/bbx-net-{os.getpid()}-seq"
    segment = SharedSegment.create(name, 4096, viz_capacity=0)
    try:
        checker = _ring._SequenceChecker(segment.consumer(), total, 120.0 * TIMEOUT_SCALE)
        producer = subprocess.run(
            [sys.executable, "-c", PRODUCER, name, str(total)],
            capture_output=True,
            text=True,
            timeout=180 * TIMEOUT_SCALE,
        )
        result = checker.join()
    finally:
        segment.unlink()
    assert producer.returncode == 0, producer.stderr
    print(f"moved {result['received']}; {producer.stdout.strip()}")
    assert result == {"received": total, "errors": 0, "first_bad": None, "timed_out": False}


PRODUCER = textwrap.dedent(
    """
    import sys, time
    from bbx_net import SharedSegment
    seg = SharedSegment.attach(sys.argv[1])
    p = seg.producer()
    send, total, seq, full = p.try_send, int(sys.argv[2]), 0, 0
    deadline = time.monotonic() + 150
    while seq < total:
        if send(0, seq & 0xFFFFFFFF, 1, 0.0, 0.0, 0, seq, seq):
            seq += 1
        else:
            full += 1
            if full & 0xFFFF == 0 and time.monotonic() > deadline:
                sys.exit("timed out")
    print(f"producer saw the ring full {full} times")
    """
)


def test_kill_9_of_the_server_mid_stream_is_detected_and_loses_nothing_accepted() -> None:
    server = serve_process(config(), 1 << 16)
    exits: list[int] = []
    server.on_exit(exits.append)
    code = server.commands.create_room_threadsafe(timeout=STEP)
    received: list[float] = []

    async def stream() -> None:
        import websockets

        client = await phone(server.port, code)
        try:
            for i in range(2000):
                await client.send(type="param", param="freq", value=float(20 + i))
                if i == 1000:
                    os.kill(server.pid, signal.SIGKILL)
                if i % 100 == 0:
                    await asyncio.sleep(0.005)
        except websockets.ConnectionClosed:
            pass  # the server is gone
        await client.discard()

    run(stream())
    assert wait_for(lambda: not server.alive, 10 * TIMEOUT_SCALE)
    assert server.returncode == -signal.SIGKILL and exits == [-signal.SIGKILL]
    with pytest.raises(BbxNetError, match="died"):
        server.commands.create_room_threadsafe(timeout=STEP)
    with pytest.raises(BbxNetError):
        server.stats()
    # What the server had accepted is still in the ring, whole and in order.
    while (m := server.consumer.try_pop()) is not None:
        received.append(m.value)
    assert len(received) > 0
    assert received == [float(20 + i) for i in range(len(received))]
    assert server.shutdown() == -signal.SIGKILL
    assert leftovers() == []


HOST = textwrap.dedent(
    """
    import sys, time
    from bbx_net import serve_process
    from bbx_net.websocket import WsServerConfig
    server = serve_process(WsServerConfig(bind_addr=("127.0.0.1", 0)), 64,
                           keep_name=sys.argv[1] == "keep")
    print(server.pid, server.segment_name, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.parametrize("keep", ["keep", "default"])
def test_kill_9_of_the_host_stops_the_server_and_removes_the_segment(keep: str) -> None:
    host = subprocess.Popen([sys.executable, "-c", HOST, keep], stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None
        line = host.stdout.readline().split()
        child, name = int(line[0]), line[1]
        assert (SHM / name[1:]).exists() == (keep == "keep")
        host.kill()
        host.wait(STEP)
        assert wait_for(lambda: not _alive(child), 10 * TIMEOUT_SCALE), "server outlived its host"
        assert not (SHM / name[1:]).exists()
        assert leftovers(host.pid) == []
    finally:
        if host.poll() is None:
            host.kill()
            host.wait(STEP)
        if host.stdout is not None:
            host.stdout.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its dead parent's reaper) has ended too.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_host_that_dies_before_handing_over_leaves_no_segment() -> None:
    """The child knows the name before the segment exists: end of stream before
    `start` makes it remove the name and exit."""
    name = f"/bbx-net-{os.getpid()}-early"
    ours, theirs = socket.socketpair()
    child = subprocess.Popen(
        [sys.executable, "-m", "bbx_net.websocket._child", str(theirs.fileno()), name],
        pass_fds=(theirs.fileno(),),
    )
    theirs.close()
    segment = SharedSegment.create(name, 16)
    assert (SHM / name[1:]).exists()
    ours.close()  # the host "dies" here
    assert child.wait(STEP) == 1
    assert not (SHM / name[1:]).exists()
    del segment


def test_a_server_that_cannot_start_says_why_and_leaves_nothing() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(BbxNetError, match="did not start: OSError"):
            serve_process(config(bind_addr=("127.0.0.1", taken.getsockname()[1])), 64)
    finally:
        taken.close()
    assert leftovers() == []


def test_bad_configurations_fail_before_any_process_starts() -> None:
    import ssl

    with pytest.raises(ValueError, match="certfile"):
        serve_process(config(ssl_context=ssl.create_default_context()), 64)

    class Local(WsServerConfig):  # a class defined in a function does not pickle
        pass

    with pytest.raises(ValueError, match="pickle"):
        serve_process(Local(bind_addr=("127.0.0.1", 0)), 64)
    with pytest.raises(ValueError):
        serve_process(config(), 0)
    assert leftovers() == []


def test_the_child_refuses_a_bad_frame_without_a_traceback_loop() -> None:
    """A malformed frame on the private link stops the server cleanly (exit 0)."""
    server = serve_process(config(), 64)
    server._send(b"\x00\x00\x00\x04junk")  # not a pickle
    assert server.wait(10 * TIMEOUT_SCALE) == 0
    assert server.shutdown() == 0 and leftovers() == []


def test_shared_segment_checks_what_it_maps() -> None:
    name = f"/bbx-net-{os.getpid()}-check"
    fd = os.open(f"/dev/shm/{name[1:]}", os.O_CREAT | os.O_RDWR, 0o600)
    os.write(fd, b"\0" * 4096)
    os.close(fd)
    try:
        with pytest.raises(ValueError, match="not a bbx_net segment"):
            SharedSegment.attach(name)
    finally:
        _ring.unlink_segment(name)
    with pytest.raises(FileNotFoundError):
        SharedSegment.attach(name)
    with pytest.raises(ValueError):
        SharedSegment.attach("no-slash")
    segment = SharedSegment.create(name, 8)
    try:
        with pytest.raises(FileExistsError):
            SharedSegment.create(name, 8)
        other = SharedSegment.attach(name)
        assert other.clock_origin_ns == segment.clock_origin_ns
        assert other.owner_pid == os.getpid() and other.state == _ring.STATE_STARTING
        segment.state = _ring.STATE_SERVING
        assert other.state == _ring.STATE_SERVING
        with pytest.raises(ValueError):
            segment.state = 7
    finally:
        assert segment.unlink() and not segment.unlink()
    # The mapping outlives the name: both ends still work.
    p, c = segment.producer(), other.consumer()
    assert p.try_send_param("gain", 0.5) and c.try_pop().value == 0.5  # type: ignore[union-attr]


def test_events_cross_only_while_the_host_listens() -> None:
    """The server listens to its session only while the host has listeners (events
    cost on every message): none before, each while, none after."""
    with serve_process(config(), 256) as server:
        code = server.commands.create_room_threadsafe(timeout=STEP)
        events: list[Any] = []

        async def scenario() -> None:
            client = await phone(server.port, code)
            await client.send(type="param", param="gain", value=0.1)
            assert wait_for(lambda: server.stats().accepted == 1)
            server.add_listener(events.append)
            server.stats()  # a round trip behind the listen frame: it has been applied
            await client.send(type="param", param="gain", value=0.2)
            assert wait_for(lambda: len(events) == 1)
            server.remove_listener(events.append)
            server.stats()
            await client.send(type="param", param="gain", value=0.3)
            assert wait_for(lambda: server.stats().accepted == 3)
            server.add_listener(events.append)
            server.stats()
            await client.send(type="param", param="gain", value=0.4)
            assert wait_for(lambda: len(events) == 2)
            await client.discard()

        run(scenario())
        assert [e.value for e in events] == pytest.approx([0.2, 0.4])
