"""The session core without sockets: messages in, ring pushes and frames out, time passed in."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import orjson
import pytest

import bbx_net
from bbx_net.websocket import (
    ParamEvent,
    ParamSpec,
    RoomConfig,
    ServerCommand,
    TriggerEvent,
    WsServerConfig,
)
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

    def __init__(self, ring: tuple[int, int | None] = (1024, None), **config: Any) -> None:
        config.setdefault("params", [ParamSpec("gain", 0.5, 0.0, 1.0)])
        self.producer, self.consumer = bbx_net.net_buffer(*ring)
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


def test_every_error_code_leaves_the_connection_usable() -> None:
    """Each bad input gets its SPEC §8 code; nothing reaches the ring; the peer carries on."""
    w = World(room=RoomConfig(max_clients=1))
    peer, sink = w.connect()

    def code_of(raw: bytes, binary: bool = False) -> str:
        w.session.receive(peer, raw, w.now, binary=binary)
        (reply,) = sink.take()
        assert reply["type"] == "error", reply
        return str(reply["code"])

    def j(**msg: Any) -> bytes:
        return orjson.dumps(msg)

    assert code_of(b"{not json") == "INVALID_MESSAGE"
    assert code_of(b'{"type": "sync"}', binary=True) == "INVALID_MESSAGE"
    assert code_of(j(type="dance")) == "UNKNOWN_TYPE"
    assert code_of(j(type="join", room_code="x" + w.code)) == "INVALID_ROOM"
    w.send(peer, type="join", room_code=w.code)
    sink.take()
    assert code_of(j(type="param", param="nope", value=1)) == "UNKNOWN_PARAM"
    assert code_of(b'{"type":"param","param":"gain","value":NaN}') == "INVALID_MESSAGE"
    assert code_of(j(type="param", param="gain", value=1e300)) == "INVALID_VALUE"
    assert code_of(j(type="param", param="gain", value=1, at=w.now + 11 * S)) == "INVALID_TIME"
    assert code_of(j(type="param", param="gain", value=1, at=-5)) == "INVALID_TIME"
    other, so = w.connect("10.0.0.2")
    w.send(other, type="join", room_code=w.code)
    assert so.codes() == ["ROOM_FULL"]
    assert len(w.ring()) == 0 and sink.closed is None
    w.send(peer, type="ping", client_time=3)
    assert sink.codes() == ["pong"]
    assert w.session.stats().errors == 10


def test_sync_ping_and_triggers() -> None:
    """sync → state with current values; ping → pong with the time now; triggers reach
    the ring in both forms and are echoed to nobody."""
    w = World()
    (a, sa), (_, sb) = w.joined(), w.joined()
    w.send(a, type="param", param="gain", value=0.25)
    sb.take()
    w.send(a, type="sync")
    (state,) = sa.take()
    assert state["type"] == "state" and state["params"][0]["value"] == 0.25
    for t in (1234567890, 12.5, 0):
        w.send(a, type="ping", client_time=t)
        assert sa.take() == [{"type": "pong", "client_time": t, "server_time": w.now}]
    w.ring()
    w.send(a, type="trigger", name="note_on")
    w.send(a, type="trigger", name="pad", x=0.25, y=0.75)
    w.send(a, type="trigger", name="pad:0.5,0.125")
    rows = w.ring()
    assert list(rows["type"]) == [bbx_net.MessageType.TRIGGER] * 3
    assert list(rows["payload_kind"]) == [0, 2, 2]
    assert rows[1]["payload"].tolist() == [0.25, 0.75]
    assert rows[2]["payload"].tolist() == [0.5, 0.125]
    assert rows[2]["param_hash"] == bbx_net.hash_param_name("pad")
    assert sb.take() == [] and sa.take() == []


def test_leave_closes_1000_and_frees_the_seat() -> None:
    """leave closes normally; the seat is free at once (not held for resume)."""
    w = World(room=RoomConfig(max_clients=1))
    peer, sink = w.joined()
    w.send(peer, type="leave")
    assert sink.closed == (1000, "left", False)
    w.session.closed(peer, w.now)
    w.joined("10.0.0.2")


def test_listeners_observe_accepted_changes() -> None:
    """The host sees each accepted param and trigger with its sender and timing."""
    w = World()
    events: list[Any] = []
    w.session.add_listener(events.append)
    peer, _ = w.joined()
    w.send(peer, type="param", param="gain", value=0.3)
    w.send(peer, type="trigger", name="hit", x=1, y=2, at=w.now + S)
    param, trigger = events
    assert isinstance(param, ParamEvent) and param.value == pytest.approx(0.3)
    assert param.node_id == peer.node_str and param.queued and param.timestamp_us == w.now
    assert isinstance(trigger, TriggerEvent) and (trigger.x, trigger.y) == (1, 2)
    assert trigger.at == w.now + S and trigger.room_code == w.code


def test_broadcasts_reach_every_joined_client_in_every_room() -> None:
    """BroadcastParam and BroadcastVisualization: all joined clients, none in the lobby."""
    w = World()
    w.session.command(other := ServerCommand.CreateRoom(), w.now)
    members = [w.joined(), w.joined()]
    c, sc = w.connect()
    w.send(c, type="join", room_code=other.wait(0))
    sc.take()
    lobby, sl = w.connect()
    w.session.command(ServerCommand.BroadcastParam("freq", 1000.0), w.now)
    w.session.command(ServerCommand.BroadcastVisualization([0.5, 0.25, 1.0]), w.now)
    for sink in [s for _, s in members] + [sc]:
        assert sink.take() == [
            {"type": "update", "param": "freq", "value": 1000.0},
            {"type": "visualization", "data": [0.5, 0.25, 1.0]},
        ]
    assert sl.take() == []
    assert w.session.param_values()["freq"] == 1000.0


def test_close_room_closes_that_room_only() -> None:
    """CloseRoom: closed + 1000 to its members; other rooms carry on; its code is gone."""
    w = World()
    w.session.command(other := ServerCommand.CreateRoom(), w.now)
    a, sa = w.joined()
    b, sb = w.connect()
    w.send(b, type="join", room_code=other.wait(0))
    sb.take()
    w.session.command(ServerCommand.CloseRoom(w.code), w.now)
    assert sa.take() == [{"type": "closed", "reason": "closed"}]
    assert sa.closed is not None and sa.closed[0] == 1000
    assert sb.take() == [] and sb.closed is None
    assert w.session.rooms() == [other.wait(0)]
    late, sl = w.connect()
    w.send(late, type="join", room_code=w.code)
    assert sl.codes() == ["INVALID_ROOM"]


def test_resume_while_the_old_connection_lingers_replaces_it() -> None:
    """A phone back before its old socket died takes its seat over; the old one closes."""
    w = World()
    old, so = w.connect()
    w.send(old, type="join", room_code=w.code)
    token = so.take()[0]["session"]
    new, sn = w.connect()
    w.send(new, type="join", room_code=w.code, session=token)
    assert sn.take()[0]["node_id"] == old.node_str
    assert so.closed is not None and so.closed[0] == 1000
    w.session.closed(old, w.now)  # the old socket's end does not free the new seat
    assert w.session.stats().clients == 1
    w.send(new, type="ping", client_time=1)
    assert sn.codes() == ["pong"]


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
    """The first change and the allowance of one more go at once; the rest of the
    interval coalesces, and its end sends the newest."""
    w = World(update_rate=10.0)
    a, _ = w.joined()
    b, sb = w.joined()
    for v in (0.1, 0.2, 0.3, 0.4):
        w.send(a, type="param", param="gain", value=v)
    assert [m["value"] for m in sb.take()] == [0.1, 0.2]
    assert w.session.is_holding and w.session.next_echo_us == w.now + S // 10
    w.session.flush(w.now + S // 20)
    assert sb.take() == []  # not due yet
    w.now += S // 10
    w.session.flush(w.now)
    assert [m["value"] for m in sb.take()] == [0.4]
    assert not w.session.is_holding


def test_no_member_gets_back_a_value_older_than_its_own_change() -> None:
    """The newest value skips its sender; what waits is always the newest."""
    w = World(update_rate=10.0)
    (a, sa), (b, sb), (c, sc) = w.joined(), w.joined(), w.joined()
    w.send(a, type="param", param="gain", value=0.1)
    assert [m["value"] for m in sb.take() + sc.take()] == [0.1, 0.1]
    w.send(b, type="param", param="gain", value=0.2)
    assert [m["value"] for m in sa.take() + sc.take()] == [0.2, 0.2]
    w.send(c, type="param", param="gain", value=0.25)
    assert [m["value"] for m in sa.take() + sb.take()] == [0.25, 0.25]
    w.send(a, type="param", param="gain", value=0.3)  # b and c spent their allowance
    assert sb.take() == [] and sc.take() == []
    assert w.session.next_echo_us == w.now + S // 10
    w.now += S // 10
    w.session.flush(w.now)
    assert sa.take() == []  # a's own 0.3 is newest: nothing older comes back to it
    assert [m["value"] for m in sb.take()] == [0.3]
    assert [m["value"] for m in sc.take()] == [0.3]
    assert not w.session.is_holding and w.session.next_echo_us is None


def test_an_echo_waits_only_for_what_is_left_of_its_interval() -> None:
    """A phone at the update rate is echoed at once; past the allowance a change waits
    exactly until the rate allows it, not for a tick."""
    w = World(update_rate=10.0)
    (a, _), (_, sb) = w.joined(), w.joined()
    for i in range(5):  # one interval apart: every one goes at once
        w.send(a, type="param", param="gain", value=i / 10)
        assert [m["value"] for m in sb.take()] == [i / 10]
        w.now += S // 10
    w.send(a, type="param", param="gain", value=0.8)
    w.send(a, type="param", param="gain", value=0.85)  # the allowance
    w.send(a, type="param", param="gain", value=0.9)  # waits
    assert [m["value"] for m in sb.take()] == [0.8, 0.85]
    due = w.session.next_echo_us
    assert due == w.now + S // 10
    w.session.flush(due - 1)
    assert sb.take() == []
    w.session.flush(due)
    assert [m["value"] for m in sb.take()] == [0.9]


def test_a_phone_that_joins_holds_the_state_and_is_echoed_the_next_change_at_once() -> None:
    w = World(update_rate=10.0)
    (a, _), (b, sb) = w.joined(), w.joined()
    w.send(a, type="param", param="gain", value=0.1)
    assert len(sb.take()) == 1
    _, sc = w.joined()  # its state frame holds 0.1: nothing owed
    w.session.flush(w.now + S)
    assert sc.take() == []
    w.send(a, type="param", param="gain", value=0.2)
    assert [m["value"] for m in sc.take()] == [0.2]  # never sent gain: at once
    assert [m["value"] for m in sb.take()] == [0.2]  # its allowance
    w.send(a, type="param", param="gain", value=0.3)
    assert [m["value"] for m in sc.take()] == [0.3]
    assert sb.take() == []
    assert w.session.next_echo_us == w.now + S // 10  # b's trailing edge
    w.session.closed(b, w.now)  # b leaves before it
    w.now += S // 10
    w.session.flush(w.now)
    assert sb.take() == []  # gone: nothing more written to it
    assert not w.session.is_holding


def test_a_host_broadcast_supersedes_a_waiting_echo() -> None:
    """BroadcastParam goes out at once to all, and drops the older echo still waiting."""
    w = World(update_rate=10.0)
    (a, sa), (_, sb) = w.joined(), w.joined()
    for v in (0.1, 0.2, 0.3):  # 0.3 waits for the interval
        w.send(a, type="param", param="gain", value=v)
    w.session.command(ServerCommand.BroadcastParam("gain", 0.9), w.now)
    assert [m["value"] for m in sa.take()] == [0.9]
    assert [m["value"] for m in sb.take()] == [0.1, 0.2, 0.9]
    w.now += S
    w.session.flush(w.now)
    assert sa.take() == [] and sb.take() == []
    assert w.session.param_values()["gain"] == 0.9


def test_echoes_to_a_big_room_stay_at_the_update_rate() -> None:
    """1,000 changes inside one interval: each of 199 members gets the first two and
    the newest."""
    w = World(update_rate=10.0, room=RoomConfig(max_clients=300))
    members = [w.joined() for _ in range(200)]
    sender = members[0][0]
    for i in range(1000):
        w.send(sender, type="param", param="gain", value=i / 1000)
    w.now += S // 10
    w.session.flush(w.now)
    for _, sink in members[1:]:
        assert [m["value"] for m in sink.take()] == [0.0, 0.001, 0.999]


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


# ---- bounds (abuse resistance) ------------------------------------------------------


def test_a_connection_that_does_not_join_in_time_is_closed_1008() -> None:
    """join_timeout after the handshake, an unjoined connection closes; joined ones stay."""
    w = World(join_timeout=15.0)
    idle, si = w.connect()
    _, sj = w.joined()
    w.now += 15 * S - 1
    w.session.housekeeping(w.now)
    assert si.closed is None
    w.now += 2
    w.session.housekeeping(w.now)
    assert si.closed == (1008, "no join in time", False)
    assert sj.closed is None
    w.session.closed(idle, w.now)
    assert w.session.stats().connections == 1


def test_unjoined_connections_per_address_are_bounded() -> None:
    """max_unjoined_per_address at once; joining or leaving frees a place; others unaffected."""
    w = World(max_unjoined_per_address=3)
    waiting = [w.connect("10.0.0.5") for _ in range(3)]
    _, se = w.connect("10.0.0.5")
    assert se.codes() == ["SERVER_FULL"] and se.closed is not None and se.closed[0] == 1008
    assert w.session.stats().connections == 3
    assert w.connect("10.0.0.6")[1].closed is None  # another address: its own count
    w.send(waiting[0][0], type="join", room_code=w.code)  # joined: no longer waiting
    _, so = w.connect("10.0.0.5")
    assert so.take() == [] and so.closed is None
    w.session.closed(waiting[1][0], w.now)
    _, sa = w.connect("10.0.0.5")
    assert sa.closed is None
    _, sr = w.connect("10.0.0.5")
    assert sr.codes() == ["SERVER_FULL"]


def test_seats_per_address_are_bounded_when_set() -> None:
    """max_seats_per_address live seats per room per address; ROOM_FULL past it."""
    w = World(max_seats_per_address=2)
    a, _ = w.joined("10.0.0.7")
    w.joined("10.0.0.7")
    third, st = w.connect("10.0.0.7")
    w.send(third, type="join", room_code=w.code)
    assert st.codes() == ["ROOM_FULL"] and st.closed is None
    w.joined("10.0.0.8")  # another address is unaffected
    w.session.command(other := ServerCommand.CreateRoom(), w.now)
    w.send(third, type="join", room_code=other.wait(0))  # per room: another room is fine
    assert [m["type"] for m in st.take()] == ["welcome", "state"]
    # The same phone reconnecting (its token, old socket still open) takes its seat over.
    w2 = World(max_seats_per_address=1)
    p, sp = w2.connect("10.0.0.9")
    w2.send(p, type="join", room_code=w2.code)
    token = sp.take()[0]["session"]
    q, sq = w2.connect("10.0.0.9")
    w2.send(q, type="join", room_code=w2.code, session=token)
    assert sq.take()[0]["type"] == "welcome" and sp.closed is not None
    # A seat freed by a dropped connection counts no more.
    w.session.closed(a, w.now)
    w.joined("10.0.0.7")


def test_undeclared_parameter_names_are_bounded() -> None:
    """With no declared params, max_undeclared_params names; a new one after that is
    UNKNOWN_PARAM; known names keep working."""
    w = World(params=[], max_undeclared_params=3)
    peer, sink = w.joined()
    for name in ("a", "b", "c", "d", "a"):
        w.send(peer, type="param", param=name, value=0.5)
    assert sink.codes() == ["UNKNOWN_PARAM"]
    assert sorted(w.session.param_values()) == ["a", "b", "c"]
    assert len(w.ring()) == 4


def test_the_link_key_and_a_valid_token_are_never_throttled() -> None:
    """An address out of failed joins still joins with the room's key or resumes with
    its token; a typed code from it (even the right one) waits."""
    w = World()
    key = w.session.room_key(w.code)
    assert key is not None and len(key) == 22
    phone, sp = w.connect("10.1.0.1")
    w.send(phone, type="join", room_code=w.code)
    token = sp.take()[0]["session"]
    w.session.closed(phone, w.now)  # its socket drops; the seat is held
    attacker, sa = w.connect("10.1.0.1")
    for _ in range(12):
        w.send(attacker, type="join", room_code="nope")
    assert sa.codes()[-1] == "RATE_LIMITED"
    w.send(attacker, type="join", room_code=w.code)
    assert sa.codes() == ["RATE_LIMITED"]
    linked, sl = w.connect("10.1.0.1")
    w.send(linked, type="join", room_code=w.code, key=key)
    assert [m["type"] for m in sl.take()] == ["welcome", "state"]
    back, sb = w.connect("10.1.0.1")
    w.send(back, type="join", room_code=w.code, session=token)
    assert sb.take()[0]["node_id"] == phone.node_str
    wrong, sw = w.connect("10.1.0.1")
    w.send(wrong, type="join", room_code=w.code, key="x" * 22)  # a wrong key: typed
    assert sw.codes() == ["RATE_LIMITED"]


def test_distributed_guessing_stays_below_half_the_code_space_in_a_room_lifetime() -> None:
    """Attackers on ever new addresses, guessing as fast as the server lets them for a
    whole room lifetime (24 h), get fewer than 5,000 of the 10,000 codes tried."""
    w = World()
    key = w.session.room_key(w.code)
    tried = 0
    address = 0
    end = w.now + 24 * 3600 * S
    while w.now < end:
        for _ in range(10):  # ten fresh addresses a second: never per-address limited
            address += 1
            peer, sink = w.connect(f"10.{address >> 16 & 255}.{address >> 8 & 255}.{address & 255}")
            w.send(peer, type="join", room_code="nope")
            (code,) = sink.codes()
            w.session.closed(peer, w.now)
            if code == "RATE_LIMITED":
                break
            tried += 1
        w.now += 10 * S
    assert 4_000 < tried < 5_000  # the budget is used, and bounded
    # Meanwhile the right code typed by a phone may be refused, the link never is.
    peer, sink = w.connect("10.200.0.1")
    w.send(peer, type="join", room_code=w.code, key=key)
    assert [m["type"] for m in sink.take()] == ["welcome", "state"]


def test_fifty_typos_in_the_first_minute_lock_nobody_out() -> None:
    """A venue where 50 phones mistype once each: every one then joins by typing."""
    w = World()
    phones = [w.connect(f"10.9.0.{i}") for i in range(50)]
    for peer, _ in phones:
        w.send(peer, type="join", room_code="nope")
        w.now += S
    for peer, sink in phones:
        w.send(peer, type="join", room_code=w.code)
        assert sink.codes() == ["INVALID_ROOM", "welcome", "state"]


def test_the_server_estimates_a_reporting_client_from_the_same_exchanges() -> None:
    """A client that reports its last exchange in each ping: the server completes it
    with its own receipt stamp and fits the same filter, so both estimates agree;
    a server_time the server never sent is ignored; old-style pings still work."""
    w = World()
    peer, sink = w.joined()
    sink.take()
    client_ahead = 2_500_000.0  # the phone's clock minus the server's
    mine = bbx_net.OffsetEstimator()  # what the phone itself computes
    last = None
    for _ in range(40):
        t1 = w.now + client_ahead - 3_000  # sent 3 ms before it arrives (phone clock)
        msg: dict[str, Any] = {"type": "ping", "client_time": t1}
        if last is not None:
            msg |= {"last": last, "offset": mine.offset_us, "rtt": mine.latest_delay_us}
        w.send(peer, **msg)
        (pong,) = sink.take()
        t4 = pong["server_time"] + client_ahead + 4_000  # 4 ms back
        mine.add_sample(t1, pong["server_time"], pong["server_time"], t4)
        last = [t1, pong["server_time"], t4]
        w.now += 50_000
    w.session.refit_clocks()
    (stats,) = w.session.client_stats()
    # Half the 1 ms asymmetry is invisible to both; both see the same thing.
    assert stats.clock_offset_us == pytest.approx(client_ahead + 500, abs=1)
    assert stats.reported_offset_us == pytest.approx(-(mine.offset_us or 0), abs=1)
    assert stats.round_trip_us == pytest.approx(7_000)
    assert stats.clock_error_us is not None and stats.clock_error_us < 10

    before = stats.clock_offset_us
    w.send(peer, type="ping", client_time=1, last=[0, 12345, 10], offset=0, rtt=10)
    sink.take()
    w.session.refit_clocks()
    assert w.session.client_stats()[0].clock_offset_us == before  # not a pong we sent

    old, old_sink = w.joined("10.0.0.2")
    old_sink.take()
    w.session.keepalive(w.now)
    w.now += 2_000
    w.session.pong(old, old_sink.pings[-1], w.now)
    w.send(old, type="ping", client_time=w.now - 1_000 + 7)
    stats = {s.address: s for s in w.session.client_stats()}
    assert stats["10.0.0.2"].clock_offset_us == pytest.approx(7, abs=1)


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"last": [1, 2]}, "INVALID_MESSAGE"),
        ({"last": "x"}, "INVALID_MESSAGE"),
        ({"last": [1, "2", 3]}, "INVALID_MESSAGE"),
        ({"last": [10, 2, 3]}, "INVALID_VALUE"),
        ({"offset": "x"}, "INVALID_MESSAGE"),
        ({"rtt": -1}, "INVALID_VALUE"),
        ({"rtt": True}, "INVALID_MESSAGE"),
    ],
)
def test_a_malformed_clock_report_is_refused_with_a_code(extra: dict[str, Any], code: str) -> None:
    w = World()
    peer, sink = w.joined()
    sink.take()
    w.send(peer, type="ping", client_time=5, **extra)
    assert sink.codes() == [code]
    w.send(peer, type="ping", client_time=6)  # the connection is still usable
    assert sink.codes() == ["pong"]


def test_one_phone_cannot_fill_the_schedule_and_what_is_due_now_never_waits() -> None:
    """4,296 events 8 s ahead from one phone (more than the 4,096-slot schedule), then
    one immediate event from another: the immediate one is in the very next block."""
    w = World(ring=(8192, 4096), error_budget=10_000)
    a, sa = w.joined()
    b, sb = w.joined("10.0.0.2")
    sa.take(), sb.take()
    for i in range(4_296):
        w.send(a, type="param", param="gain", value=0.25, at=w.now + 8 * S + i)
    codes = sa.codes()
    assert codes.count("SCHEDULE_FULL") == 4_296 - 256  # its share: 1/8 of half
    out = np.zeros(64, dtype=bbx_net.EVENT_DTYPE)
    assert w.consumer.drain_block(out, w.now, 48_000, 256) == 0
    assert w.consumer.pending == 256
    w.send(b, type="param", param="gain", value=0.75)
    n = w.consumer.drain_block(out, w.now + 5_333, 48_000, 256)
    assert n == 1 and out[0]["payload"][0] == pytest.approx(0.75)
    # Refused events changed nothing: the last accepted value is the one kept.
    w.send(b, type="sync")
    (state,) = [m for m in sb.take() if m["type"] == "state"]
    assert state["params"][0]["value"] == pytest.approx(0.75)


def test_many_phones_share_half_the_schedule_and_it_frees_as_time_passes() -> None:
    w = World(ring=(8192, 4096), error_budget=10_000)
    phones = [w.joined(f"10.0.1.{i}") for i in range(20)]
    refused = 0
    for peer, sink in phones:
        sink.take()
        for i in range(200):
            w.send(peer, type="param", param="gain", value=0.5, at=w.now + 5 * S + i)
        refused += sink.codes().count("SCHEDULE_FULL")
    assert 20 * 200 - refused == 2_048  # half of 4,096 in all
    peer, sink = phones[0]
    assert set(sink.codes()) == {"update"}  # the others' changes, echoed
    w.send(peer, type="param", param="gain", value=0.5, at=w.now + 6 * S)
    assert sink.codes() == ["SCHEDULE_FULL"]
    w.send(peer, type="param", param="gain", value=0.5)  # due now: never refused
    assert sink.codes() == []
    w.now += 5 * S + 1_000  # every counted event is due: the shares are free again
    w.send(peer, type="param", param="gain", value=0.5, at=w.now + S)
    assert sink.codes() == []


def test_the_operator_view_sees_rooms_and_phones_and_steers_them() -> None:
    """admin with the token: admin_state now and every housekeeping tick (rooms, their
    phones with round trip and counters, ring and values); broadcast_param, close_room
    and new_room work. A wrong token, or admin commands from a phone: FORBIDDEN."""
    w = World(admin_token="t" * 22)
    phone, phone_sink = w.joined(client_name="Ana")
    phone_sink.take()
    admin, admin_sink = w.connect("10.0.0.9")
    w.send(admin, type="admin", token="t" * 22)
    (state,) = admin_sink.take()
    assert state["type"] == "admin_state"
    (room,) = state["rooms"]
    assert room["code"] == w.code and [p["client_name"] for p in room["phones"]] == ["Ana"]
    assert {"round_trip_us", "clock_offset_us", "messages_in", "errors", "dropped"} <= set(
        room["phones"][0]
    )
    assert state["stats"]["ring_capacity"] > 0 and state["values"] == {"gain": 0.5}

    w.send(admin, type="admin_command", command="broadcast_param", param="gain", value=0.75)
    result, _ = admin_sink.take()
    assert result == {"type": "admin_result", "command": "broadcast_param"}
    assert phone_sink.take() == [{"type": "update", "param": "gain", "value": 0.75}]
    w.send(admin, type="admin_command", command="new_room")
    result, state = admin_sink.take()
    new = result["room_code"]
    assert new != w.code and {r["code"] for r in state["rooms"]} == {w.code, new}
    w.send(admin, type="admin_command", command="close_room", room_code=w.code)
    admin_sink.take()
    assert phone_sink.take()[0]["type"] == "closed"
    w.session.housekeeping(w.now)
    (tick,) = admin_sink.take()
    assert [r["code"] for r in tick["rooms"]] == [new]
    w.send(admin, type="admin_command", command="close_room", room_code="0000")
    assert admin_sink.codes() == ["INVALID_ROOM"]

    intruder, intruder_sink = w.connect("10.0.0.8")
    w.send(intruder, type="admin", token="nope")
    w.send(intruder, type="admin_command", command="new_room")
    assert intruder_sink.codes() == ["FORBIDDEN", "FORBIDDEN"]
    other, other_sink = w.connect("10.0.0.7")
    w.send(other, type="join", room_code=new)
    other_sink.take()
    w.send(other, type="admin_command", command="close_room", room_code=new)
    assert other_sink.codes() == ["FORBIDDEN"]
    off = World()  # no admin_token: no operator view at all
    peer, sink = off.connect()
    off.send(peer, type="admin", token="")
    assert sink.codes() == ["FORBIDDEN"]
