"""The jitter relay (bench/jitter_relay.py) and the clock filter through it, live."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import TIMEOUT_SCALE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from jitter_relay import JitterRelay, Profile, fixed, normal, switch  # noqa: E402


@pytest.fixture
def echo() -> Iterator[int]:
    """A TCP echo server on loopback, one connection at a time, bounded."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10 * TIMEOUT_SCALE)

    def serve() -> None:
        for _ in range(4):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10 * TIMEOUT_SCALE)
                try:
                    while data := conn.recv(65536):
                        conn.sendall(data)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    listener.close()


def round_trip(port: int, payload: bytes = b"x") -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=10 * TIMEOUT_SCALE) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.monotonic()
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            got += s.recv(65536)
        assert got == payload
        return time.monotonic() - start


def test_each_direction_gets_its_delay(echo: int) -> None:
    relay = JitterRelay(("127.0.0.1", echo), Profile(up=fixed(20), down=fixed(30)))
    try:
        rtt = round_trip(relay.start())
    finally:
        relay.close()
    assert 0.050 <= rtt < 0.050 + 0.5 * TIMEOUT_SCALE


def test_order_and_bytes_are_kept_under_heavy_jitter(echo: int) -> None:
    """500 numbered chunks sent at once with delays of 5 ± 4 ms each: they come back
    whole and in order (a chunk never overtakes the one before it)."""
    relay = JitterRelay(("127.0.0.1", echo), Profile(up=normal(5, 4), down=normal(5, 4)), seed=3)
    port = relay.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10 * TIMEOUT_SCALE) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sent = b"".join(f"{i:05d};".encode() for i in range(500))
            for i in range(500):
                s.sendall(f"{i:05d};".encode())
            got = b""
            deadline = time.monotonic() + 20 * TIMEOUT_SCALE
            while len(got) < len(sent) and time.monotonic() < deadline:
                got += s.recv(65536)
    finally:
        relay.close()
    assert got == sent


def test_loss_is_a_retransmission_delay_and_routes_change_on_time(echo: int) -> None:
    relay = JitterRelay(("127.0.0.1", echo), Profile(fixed(1), fixed(1), loss=1.0, rto_ms=100))
    try:
        assert round_trip(relay.start()) >= 0.2
    finally:
        relay.close()
    route = switch(fixed(1), fixed(40), at_s=0.3)
    relay = JitterRelay(("127.0.0.1", echo), Profile(route, fixed(0)))
    try:
        port = relay.start()
        assert round_trip(port) < 0.030
        time.sleep(0.4)
        assert round_trip(port) >= 0.040
    finally:
        relay.close()


def test_the_clock_filter_holds_through_jitter_against_ground_truth() -> None:
    """A live server, a Python phone through (5, 2) ms jitter for 8 s: its estimate of
    the server clock (truth: both read CLOCK_MONOTONIC) stays within 1.5 ms, and the
    naive last-ping estimate does not."""
    from bench_clock import Server  # the bench's server harness
    from clock_client import run

    server = Server()
    relay = JitterRelay(("127.0.0.1", server.port), Profile(normal(5, 2), normal(5, 2)), seed=1)
    try:
        port = relay.start()
        result: dict[str, object] = {}
        thread = threading.Thread(
            target=lambda: result.update(run(f"ws://127.0.0.1:{port}/", server.code, 8.0)),
            daemon=True,
        )
        thread.start()
        thread.join(30 * TIMEOUT_SCALE)
        assert not thread.is_alive()
    finally:
        relay.close()
        server.stop()
    truth = -server.origin_us
    samples = result["samples"]
    assert isinstance(samples, list)
    late = [s for s in samples if s[0] - result["joined_us"] > 3e6]  # type: ignore[operator]
    ours = sorted(abs(s[1] - truth) for s in late)
    naive = sorted(abs(s[2] - truth) for s in late)
    assert len(ours) > 50
    assert ours[int(len(ours) * 0.99)] < 1_500
    assert naive[int(len(naive) * 0.99)] > ours[int(len(ours) * 0.99)]
