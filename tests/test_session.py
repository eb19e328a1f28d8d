"""The session core without sockets: messages in, ring pushes and frames out, time passed in."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import orjson
import pytest

import bbx_net
from bbx_net.websocket import ParamSpec, RoomConfig, ServerCommand, WsServerConfig
from bbx_net.websocket.session import Peer, Session

S = 1_000_000  # µs per second


class FakeSink:
    """Records what the session wrote, closed, pinged or aborted."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str, bool] | None = None
        self.pings: list[bytes] = []
        self.aborted = False

    def write(self, message: bytes) -> None:
        assert self.closed is None, "written after close"
        self.sent.append(orjson.loads(message))

    def close(self, code: int, reason: str, fail: bool = False) -> None:
        self.closed = (code, reason, fail)

    def ping(self, payload: bytes) -> None:
        self.pings.append(payload)

    def abort(self) -> None:
        self.aborted = True

    def take(self) -> list[dict[str, Any]]:
        out, self.sent = self.sent, []
        return out

    def codes(self) -> list[str]:
        return [m.get("code", m["type"]) for m in self.take()]


class World:
    """A session, its ring and a room, at a time the test moves."""

    def __init__(self, **config: Any) -> None:
        config.setdefault("params", [ParamSpec("gain", 0.5, 0.0, 1.0)])
        self.producer, self.consumer = bbx_net.net_buffer(1024)
        self.now = 1_000 * S
        self.session = Session(WsServerConfig(**config), self.producer, self.now)
        cmd = ServerCommand.CreateRoom()
        self.session.command(cmd, self.now)
        self.code = cmd.wait(0)

    def connect(self, address: str = "10.0.0.1") -> tuple[Peer, FakeSink]:
        sink = FakeSink()
        return self.session.open(address, sink, self.now), sink

    def send(self, peer: Peer, **msg: Any) -> None:
        self.session.receive(peer, orjson.dumps(msg), self.now)

    def joined(self, address: str = "10.0.0.1", **extra: Any) -> tuple[Peer, FakeSink]:
        peer, sink = self.connect(address)
        self.send(peer, type="join", room_code=self.code, **extra)
        assert [m["type"] for m in sink.take()] == ["welcome", "state"]
        return peer, sink

    def ring(self) -> np.ndarray:
        out = np.zeros(64, bbx_net.MESSAGE_DTYPE)
        return out[: self.consumer.drain_into(out)]


def test_join_gives_welcome_with_server_time_then_state() -> None:
    """welcome carries node id, the injected now and a token; state follows."""
    w = World()
    peer, sink = w.connect()
    w.send(peer, type="join", room_code=w.code, client_name="A")
    welcome, state = sink.take()
    assert welcome["type"] == "welcome" and welcome["server_time"] == w.now
    assert welcome["node_id"] == peer.node_str and welcome["session"]
    assert state["params"] == [{"name": "gain", "value": 0.5, "min": 0.0, "max": 1.0}]


def test_rules_before_join_and_twice() -> None:
    """NOT_JOINED before join, INVALID_ROOM for a wrong code, ALREADY_JOINED after."""
    w = World()
    peer, sink = w.connect()
    for msg in (
        {"type": "param", "param": "gain", "value": 1},
        {"type": "sync"},
        {"type": "ping", "client_time": 1},
        {"type": "leave"},
    ):
        w.send(peer, **msg)
    assert sink.codes() == ["NOT_JOINED"] * 4
    w.send(peer, type="join", room_code="x" + w.code)
    assert sink.codes() == ["INVALID_ROOM"]
    w.send(peer, type="join", room_code=w.code)
    sink.take()
    w.send(peer, type="join", room_code=w.code)
    assert sink.codes() == ["ALREADY_JOINED"]


def test_param_is_clamped_into_the_ring_and_echoed_to_the_room_only() -> None:
    """A change reaches the ring with node id and time; others in the room get update."""
    w = World()
    a, sa = w.joined()
    b, sb = w.joined()
    w.session.command(other := ServerCommand.CreateRoom(), w.now)
    c, sc = w.connect()
    w.send(c, type="join", room_code=other.wait(0))
    sc.take()
    w.send(a, type="param", param="gain", value=7.0)
    (m,) = w.ring()
    assert m["payload"][0] == 1.0 and m["timestamp_us"] == w.now
    assert (int(m["node_id_hi"]), int(m["node_id_lo"])) == (a.seat.node_id.high, a.seat.node_id.low)
    assert sb.take() == [{"type": "update", "param": "gain", "value": 1.0}]
    assert sa.take() == [] and sc.take() == []


def test_echoes_coalesce_to_the_update_rate_and_flush_later() -> None:
    """Within one update interval later changes coalesce; flush sends the newest."""
    w = World(update_rate=10.0)
    a, _ = w.joined()
    b, sb = w.joined()
    for v in (0.1, 0.2, 0.3):
        w.send(a, type="param", param="gain", value=v)
    assert [m["value"] for m in sb.take()] == [0.1]
    assert w.session.is_holding
    w.now += S // 20
    w.session.flush(w.now)
    assert sb.take() == []  # not due yet
    w.now += S // 20
    w.session.flush(w.now)
    assert [m["value"] for m in sb.take()] == [0.3]
    assert not w.session.is_holding


def test_no_member_gets_back_a_value_older_than_its_own_change() -> None:
    """Echoes wait per room with their sender: the newest value skips only its sender."""
    w = World(update_rate=10.0)
    (a, sa), (b, sb), (c, sc) = w.joined(), w.joined(), w.joined()
    w.send(a, type="param", param="gain", value=0.1)  # due: out at once
    assert [m["value"] for m in sb.take() + sc.take()] == [0.1, 0.1]
    w.send(b, type="param", param="gain", value=0.2)  # within the interval: waits
    w.send(a, type="param", param="gain", value=0.3)  # supersedes b's, sent by a
    w.now += S // 10
    w.session.flush(w.now)
    assert sa.take() == []  # a's own 0.3 is newest: b's older 0.2 never reaches a
    assert [m["value"] for m in sb.take()] == [0.3]
    assert [m["value"] for m in sc.take()] == [0.3]
    assert not w.session.is_holding


def test_a_host_broadcast_supersedes_a_waiting_echo() -> None:
    """BroadcastParam goes out at once to all, and drops the older echo still waiting."""
    w = World(update_rate=10.0)
    (a, sa), (b, sb) = w.joined(), w.joined()
    w.send(a, type="param", param="gain", value=0.1)
    w.send(a, type="param", param="gain", value=0.2)  # waits for the interval
    w.session.command(ServerCommand.BroadcastParam("gain", 0.9), w.now)
    assert [m["value"] for m in sa.take()] == [0.9]
    assert [m["value"] for m in sb.take()] == [0.1, 0.9]
    w.now += S
    w.session.flush(w.now)
    assert sa.take() == [] and sb.take() == []
    assert w.session.param_values()["gain"] == 0.9


def test_echoes_to_a_big_room_stay_at_the_update_rate() -> None:
    """1,000 changes inside one interval: each of 199 members gets the first and newest."""
    w = World(update_rate=10.0, room=RoomConfig(max_clients=300))
    members = [w.joined() for _ in range(200)]
    sender = members[0][0]
    for i in range(1000):
        w.send(sender, type="param", param="gain", value=i / 1000)
    w.now += S // 10
    w.session.flush(w.now)
    for _, sink in members[1:]:
        assert [m["value"] for m in sink.take()] == [0.0, 0.999]


def test_a_paused_client_gets_newest_state_when_it_resumes() -> None:
    """While paused: updates coalesce, visualization keeps the newest, replies queue."""
    w = World(broadcast_capacity=2)
    a, _ = w.joined()
    b, sb = w.joined()
    w.session.paused(b)
    for v in (0.1, 0.2):
        w.send(a, type="param", param="gain", value=v)
        w.now += S  # each echo due: both reach b's outbox, where they coalesce
    for i in range(3):
        w.session.command(ServerCommand.BroadcastVisualization([i]), w.now)
    for t in (1, 2, 3):
        w.send(b, type="ping", client_time=t)
    assert sb.take() == []
    w.now += S
    w.session.resumed(b, w.now)
    got = sb.take()
    assert [m["type"] for m in got] == ["pong", "pong", "update", "visualization"]
    assert [m["client_time"] for m in got[:2]] == [2, 3]  # bounded queue kept the newest
    assert got[2]["value"] == 0.2 and got[3]["data"] == [2.0]
    # One update superseded, two visualization frames stale, one pong pushed out.
    assert b.outbox.dropped == 4 and a.outbox.dropped == 0


def test_invalid_utf8_fails_the_connection_with_1007() -> None:
    """Bytes that are not UTF-8 close with 1007 (fail), no error reply."""
    w = World()
    peer, sink = w.joined()
    w.session.receive(peer, b'{"type":"trigger","name":"\xed\xa0\x80"}', w.now)
    assert sink.take() == [] and sink.closed == (1007, "invalid UTF-8", True)
    w.send(peer, type="ping", client_time=1)
    assert sink.take() == []  # nothing after the close


def test_error_budget_closes_with_1008_and_regains_one_per_second() -> None:
    """error_budget errors in a burst; the next closes 1008; time forgives one a second."""
    w = World(error_budget=3)
    peer, sink = w.connect()
    for _ in range(3):
        w.send(peer, type="dance")
    assert sink.closed is None
    w.now += 2 * S
    w.send(peer, type="dance")
    w.send(peer, type="dance")
    assert sink.closed is None
    w.send(peer, type="dance")
    assert sink.closed is not None and sink.closed[0] == 1008
    assert w.session.stats().errors == 6


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type":"param","param":"gain","value":1e300}',
        b'{"type":"trigger","name":"pad","x":3.5e38,"y":0}',
        b'{"type":"param","param":"gain","value":1' + b"0" * 400 + b"}",
        b'{"type":"trigger","name":"\\ud800"}',
        b'{"type":"param","param":"gain","value":NaN}',
        b"[" * 5000,
    ],
)
def test_hostile_values_are_errors_never_internal(payload: bytes) -> None:
    """Each is an `error` reply charged to the client; nothing reaches the ring."""
    w = World(params=[])
    peer, sink = w.joined()
    w.session.receive(peer, payload, w.now)
    (reply,) = sink.take()
    assert reply["type"] == "error" and reply["code"] in ("INVALID_VALUE", "INVALID_MESSAGE")
    assert peer.errors == 1 and w.session.stats().internal_errors == 0
    assert len(w.ring()) == 0


def test_join_throttle_counts_failures_per_address_on_the_session_clock() -> None:
    """10 failed joins in a burst, then RATE_LIMITED; another address is unaffected."""
    w = World()
    peer, sink = w.connect("10.0.0.9")
    for _ in range(10):
        w.send(peer, type="join", room_code="nope")
        w.now += S // 10  # within budget: forgiven errors
    assert sink.codes() == ["INVALID_ROOM"] * 10
    w.send(peer, type="join", room_code=w.code)
    assert sink.codes() == ["RATE_LIMITED"]
    w.joined("10.0.0.10")
    w.now += 60 * S  # one failure regained per minute
    w.send(peer, type="join", room_code=w.code)
    assert [m["type"] for m in sink.take()] == ["welcome", "state"]


def test_keepalive_pings_everyone_and_drops_the_silent() -> None:
    """A ping per connection; a matching pong sets the µs round trip; silence aborts."""
    w = World(connection_timeout=30.0)
    a, sa = w.joined()
    b, sb = w.joined()
    w.session.keepalive(w.now)
    assert len(sa.pings) == 1 and len(sb.pings) == 1
    w.now += 1234
    w.session.pong(a, sa.pings[0], w.now)
    w.session.pong(b, b"wrong", w.now)
    assert a.rtt_us == 1234.0 and b.rtt_us is None
    w.now += 30 * S
    w.session.keepalive(w.now)
    assert sb.aborted and not sa.aborted


def test_a_dropped_seat_is_held_then_resumed_or_yields_to_a_live_phone() -> None:
    """Drop, resume with the token: same node id; in a full room a new phone takes it."""
    w = World(room=RoomConfig(max_clients=1))
    a, sa = w.connect()
    w.send(a, type="join", room_code=w.code)
    token = sa.take()[0]["session"]
    w.session.closed(a, w.now)
    again, s2 = w.connect()
    w.send(again, type="join", room_code=w.code, session=token)
    welcome = s2.take()[0]
    assert welcome["node_id"] == a.node_str  # resumed: same node id
    token = welcome["session"]
    w.session.closed(again, w.now)
    b, sb = w.connect()
    w.send(b, type="join", room_code=w.code)  # full only with a held seat: b takes it
    assert [m["type"] for m in sb.take()] == ["welcome", "state"]
    assert b.node_str != a.node_str


def test_room_expiry_on_the_injected_clock() -> None:
    """A room closes itself `expiration` seconds after creation: closed, then 1000."""
    w = World(room=RoomConfig(expiration=100.0))
    peer, sink = w.joined()
    w.now += 99 * S
    w.session.housekeeping(w.now)
    assert sink.closed is None
    w.now += 1 * S
    w.session.housekeeping(w.now)
    assert sink.take() == [{"type": "closed", "reason": "expired"}]
    assert sink.closed is not None and sink.closed[0] == 1000
    assert w.session.rooms() == []


def test_server_full_is_refused_with_an_error_and_1013() -> None:
    """Past max_connections a connection gets SERVER_FULL and a try-later close."""
    w = World(max_connections=1)
    w.connect()
    peer, sink = w.connect()
    assert sink.codes() == ["SERVER_FULL"] and sink.closed is not None
    assert sink.closed[0] == 1013 and w.session.stats().connections == 1


def test_visualization_is_copied_at_the_call() -> None:
    """The host reuses its buffer right after sending: phones get what was sent."""
    w = World()
    peer, sink = w.joined()
    buf = np.array([1.0, 2.0], np.float32)
    cmd = ServerCommand.BroadcastVisualization(buf)
    buf[:] = 9.0
    w.session.command(cmd, w.now)
    assert sink.take() == [{"type": "visualization", "data": [1.0, 2.0]}]


def test_bad_commands_raise_to_the_caller() -> None:
    """Validation happens when a command is made, on the caller's thread."""
    with pytest.raises(ValueError):
        ServerCommand.BroadcastVisualization([float("nan")])
    with pytest.raises(ValueError):
        ServerCommand.BroadcastParam("gain", float("inf"))
    with pytest.raises(ValueError):
        ServerCommand.BroadcastParam("", 1.0)
    with pytest.raises((TypeError, ValueError)):
        ServerCommand.BroadcastVisualization(["a"])  # type: ignore[list-item]


def test_a_failing_listener_is_counted_and_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Internal errors count every time and log at most once per kind per minute."""
    w = World()

    def broken(event: object) -> None:
        raise RuntimeError("listener bug")

    w.session.add_listener(broken)
    peer, _ = w.joined()
    with caplog.at_level(logging.ERROR):
        for _ in range(100):
            w.send(peer, type="param", param="gain", value=0.5)
        w.now += 61 * S
        w.send(peer, type="param", param="gain", value=0.5)
    assert w.session.stats().internal_errors == 101
    logged = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert len(logged) == 2 and "99 more" in logged[1].getMessage()
