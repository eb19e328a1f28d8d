"""Rooms, seats, resume and join throttling, with time passed in."""

from __future__ import annotations

import pytest

from bbx_net.errors import BbxNetError
from bbx_net.protocol import INVALID_ROOM, ROOM_FULL, ProtocolError
from bbx_net.rooms import JoinThrottle, RoomConfig, RoomRegistry


def registry(**kw: object) -> RoomRegistry:
    grace = float(kw.pop("grace", 60.0))  # type: ignore[arg-type]
    return RoomRegistry(RoomConfig(**kw), resume_grace=grace)  # type: ignore[arg-type]


def test_codes_have_the_configured_length_and_are_unique() -> None:
    """Codes are digit strings of code_length, never repeated among live rooms."""
    reg = RoomRegistry(RoomConfig(code_length=2), max_rooms=50)
    codes = {reg.create(0.0) for _ in range(50)}
    assert len(codes) == 50
    assert all(len(c) == 2 and c.isdigit() for c in codes)
    with pytest.raises(BbxNetError):
        reg.create(0.0)


def test_default_code_is_four_digits_with_leading_zeros_kept() -> None:
    """Default codes are 4 digits; zero-padded codes are valid."""
    reg = registry()
    codes = [reg.create(0.0) for _ in range(200)]
    assert all(len(c) == 4 and c.isdigit() for c in codes)


def test_join_unknown_room_is_invalid_room() -> None:
    """A code that names no room is INVALID_ROOM."""
    reg = registry()
    with pytest.raises(ProtocolError) as info:
        reg.join("9999" if "9999" not in reg else "0000", 0.0)
    assert info.value.code == INVALID_ROOM


def test_room_full_of_live_seats_is_room_full() -> None:
    """max_clients live seats; one more is ROOM_FULL."""
    reg = registry(max_clients=2)
    code = reg.create(0.0)
    reg.join(code, 0.0)
    reg.join(code, 0.0)
    with pytest.raises(ProtocolError) as info:
        reg.join(code, 2.0)
    assert info.value.code == ROOM_FULL


def test_a_held_seat_never_keeps_a_live_phone_out() -> None:
    """A full room with held seats gives the longest-held one to the joining phone."""
    reg = registry(max_clients=3)
    code = reg.create(0.0)
    a, b, c = (reg.join(code, 0.0).seat for _ in range(3))
    token_a, token_b = a.token, b.token
    reg.drop(b.node_id, 1.0)  # held first
    reg.drop(a.node_id, 2.0)  # held later
    d = reg.join(code, 3.0)  # the original's client sends no token: takes b's seat
    assert not d.resumed and d.seat.node_id not in (a.node_id, b.node_id, c.node_id)
    assert reg.seat(b.node_id) is None and reg.seat(a.node_id) is a
    back_a = reg.join(code, 4.0, token_a)  # a's seat was still held: resumed
    assert back_a.resumed and back_a.seat.node_id == a.node_id
    with pytest.raises(ProtocolError) as info:  # b's token: the room is all live now
        reg.join(code, 5.0, token_b)
    assert info.value.code == ROOM_FULL
    reg.drop(c.node_id, 6.0)
    fresh_b = reg.join(code, 7.0, token_b)  # fresh welcome, new node id
    assert not fresh_b.resumed and fresh_b.seat.node_id != b.node_id


def test_resume_within_grace_returns_the_same_node_id() -> None:
    """A dropped client presenting its token gets its node id back, once."""
    reg = registry()
    code = reg.create(0.0)
    first = reg.join(code, 0.0, client_name="Phone")
    token = first.seat.token
    node = first.seat.node_id
    reg.drop(node, 10.0)
    again = reg.join(code, 50.0, token)
    assert again.resumed and not again.replaced and again.seat.node_id == node
    assert again.seat.token != token  # rotated: the old token is spent
    reg.drop(node, 60.0)
    fresh = reg.join(code, 61.0, token)
    assert not fresh.resumed and fresh.seat.node_id != node


def test_token_after_grace_or_leave_gives_a_fresh_seat() -> None:
    """Expired or left tokens are not errors: the phone just gets a new node id."""
    reg = registry(grace=30)
    code = reg.create(0.0)
    a = reg.join(code, 0.0)
    reg.drop(a.seat.node_id, 0.0)
    late = reg.join(code, 31.0, a.seat.token)
    assert not late.resumed and late.seat.node_id != a.seat.node_id
    reg.leave(late.seat.node_id)
    after_leave = reg.join(code, 32.0, late.seat.token)
    assert not after_leave.resumed


def test_resume_of_a_live_seat_replaces_the_old_connection() -> None:
    """A phone back before its dead socket was noticed takes its seat over."""
    reg = registry()
    code = reg.create(0.0)
    a = reg.join(code, 0.0)
    b = reg.join(code, 1.0, a.seat.token)
    assert b.resumed and b.replaced and b.seat.node_id == a.seat.node_id
    assert reg.members(code) == [a.seat.node_id]


def test_token_for_another_room_is_ignored() -> None:
    """A token only resumes in its own room."""
    reg = registry()
    one, two = reg.create(0.0), reg.create(0.0)
    a = reg.join(one, 0.0)
    reg.drop(a.seat.node_id, 0.0)
    b = reg.join(two, 1.0, a.seat.token)
    assert not b.resumed


def test_close_returns_live_members_and_forgets_seats() -> None:
    """Closing a room lists its live members and invalidates its tokens."""
    reg = registry()
    code = reg.create(0.0)
    other = reg.create(0.0)
    a = reg.join(code, 0.0)
    b = reg.join(code, 0.0)
    c = reg.join(other, 0.0)
    reg.drop(b.seat.node_id, 0.0)
    assert reg.close(code) == [a.seat.node_id]
    assert code not in reg and other in reg
    assert reg.seat(a.seat.node_id) is None and reg.seat(c.seat.node_id) is not None
    assert reg.close(code) == []


def test_rooms_expire() -> None:
    """A room is listed as expired once `expiration` seconds have passed."""
    reg = registry(expiration=100.0)
    code = reg.create(10.0)
    assert reg.expired(109.0) == []
    assert reg.expired(110.0) == [code]


def test_bad_room_config_is_refused() -> None:
    """Out-of-range options raise ValueError."""
    for bad in ({"code_length": 0}, {"expiration": 0}, {"max_clients": 0}):
        with pytest.raises(ValueError):
            RoomConfig(**bad)  # type: ignore[arg-type]


def test_throttle_bound_defeats_brute_force_but_not_typos() -> None:
    """10 failures in a burst, then 60 per hour; 3 typos never lock anyone out."""
    t = JoinThrottle()
    now = 0.0
    for _ in range(3):
        assert t.allows("phone", now)
        t.failed("phone", now)
    assert t.allows("phone", now)
    attempts = 0
    while t.allows("attacker", now):
        t.failed("attacker", now)
        attempts += 1
    assert attempts == 10
    assert 59 < t.retry_after("attacker", now) <= 60
    assert t.allows("someone else", now)  # per address, never global
    # Over a day: 10 + 60 * 24 guesses, far fewer than the 5,000 needed on average.
    day = 0
    now = 0.0
    while now < 24 * 3600:
        if t.allows("slow attacker", now):
            t.failed("slow attacker", now)
            day += 1
        now += 10.0
    assert day <= 10 + 60 * 24 + 1
    assert day < 5000


def test_throttle_table_is_bounded() -> None:
    """Tracking many addresses keeps at most max_addresses entries."""
    t = JoinThrottle(max_addresses=100)
    for i in range(1000):
        t.failed(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(t._buckets) <= 100


def test_a_room_can_have_the_code_and_key_the_host_chose() -> None:
    """A poster's code and link survive a restart: the same code and key again."""
    reg = registry()
    assert reg.create(0.0, "0042", "k" * 22) == "0042"
    assert reg.has_key("0042", "k" * 22)
    with pytest.raises(BbxNetError, match="exists"):
        reg.create(0.0, "0042")
    for bad in ("42", "00421", "00x2", "٠٠٤٢"):
        with pytest.raises(BbxNetError, match="4 digits"):
            reg.create(0.0, bad)
    assert reg.create(0.0) != "0042"  # random codes still work beside it


def test_create_room_command_refuses_malformed_codes_and_keys_at_once() -> None:
    from bbx_net.websocket import ServerCommand

    assert ServerCommand.CreateRoom("1234", "A" * 16).code == "1234"
    for code, key in (("12a4", None), (None, "short"), (None, "x" * 65), (None, "a b" * 8)):
        with pytest.raises(ValueError):
            ServerCommand.CreateRoom(code, key)
