"""Rooms, seats, resume tokens and join throttling, without any I/O.

Time is always an argument (seconds on any monotonic clock), so every rule here is
tested by passing numbers in.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import BbxNetError
from .message import NodeId
from .protocol import INVALID_ROOM, ROOM_FULL, ProtocolError

__all__ = [
    "JoinResult",
    "GuessBudget",
    "JoinThrottle",
    "Room",
    "RoomConfig",
    "RoomRegistry",
    "Seat",
]


@dataclass(frozen=True, slots=True)
class RoomConfig:
    """Room options.

    Attributes:
        code_length: digits in a room code (4 means "0000".."9999").
        expiration: seconds a room lives before it closes itself.
        max_clients: seats per room. A seat held for resume counts, but when the room
            is full a joining phone takes the longest-held seat rather than ROOM_FULL.
    """

    code_length: int = 4
    expiration: float = 24 * 3600.0
    max_clients: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.code_length <= 12:
            raise ValueError(f"code_length must be 1..12, got {self.code_length}")
        if not self.expiration > 0:
            raise ValueError(f"expiration must be positive seconds, got {self.expiration}")
        if self.max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, got {self.max_clients}")


@dataclass(slots=True, eq=False)
class Seat:
    """One client's place in a room: live while connected, then held for resume."""

    node_id: NodeId
    room_code: str
    token: str
    client_name: str | None
    held_until: float | None = None  # None while a connection is live

    @property
    def is_live(self) -> bool:
        return self.held_until is None


@dataclass(slots=True, eq=False)
class Room:
    """A room: its code, its link key, when it was made, and its seats by node id."""

    code: str
    created_at: float
    key: str = field(default_factory=lambda: secrets.token_urlsafe(16))  # 22 chars
    seats: dict[NodeId, Seat] = field(default_factory=dict)

    def live_members(self) -> Iterator[NodeId]:
        return (node for node, seat in self.seats.items() if seat.is_live)


@dataclass(frozen=True, slots=True)
class JoinResult:
    """What a successful join gave.

    Attributes:
        seat: the seat now live for this connection.
        resumed: the session token brought back an earlier seat (same node id).
        replaced: the seat was still live on another connection, which the caller must
            close (a phone reconnecting before its old socket was noticed dead).
    """

    seat: Seat
    resumed: bool
    replaced: bool


class RoomRegistry:
    """Every room and seat of one server.

    Args:
        config: room options.
        resume_grace: seconds a dropped client's seat is held for its session token.
        max_rooms: rooms that may exist at once.
    """

    def __init__(
        self, config: RoomConfig, resume_grace: float = 60.0, max_rooms: int = 1000
    ) -> None:
        if resume_grace < 0:
            raise ValueError("resume_grace must be >= 0")
        self.config = config
        self.resume_grace = resume_grace
        self.max_rooms = max(1, min(max_rooms, 10**config.code_length // 2))
        self._rooms: dict[str, Room] = {}
        self._by_token: dict[str, Seat] = {}
        self._by_node: dict[NodeId, Seat] = {}

    # ---- rooms ----

    def create(self, now: float, code: str | None = None, key: str | None = None) -> str:
        """Creates a room and returns its code: `code` if given, else a fresh random
        one; `key` is its link key if given, else a random one.

        Raises:
            BbxNetError: max_rooms rooms exist already, or `code` is in use or not
                `code_length` digits.
        """
        if len(self._rooms) >= self.max_rooms:
            raise BbxNetError(f"room limit reached ({self.max_rooms} rooms)")
        length = self.config.code_length
        if code is not None:
            if len(code) != length or not (code.isascii() and code.isdigit()):
                raise BbxNetError(f"a room code here is {length} digits, got {code!r}")
            if code in self._rooms:
                raise BbxNetError(f"room {code} exists already")
        else:
            space = 10**length
            while True:
                code = str(secrets.randbelow(space)).zfill(length)
                if code not in self._rooms:
                    break
        self._rooms[code] = Room(code, now) if key is None else Room(code, now, key)
        return code

    def close(self, code: str) -> list[NodeId]:
        """Removes a room and all its seats; returns the live members to disconnect."""
        room = self._rooms.pop(code, None)
        if room is None:
            return []
        live = list(room.live_members())
        for seat in room.seats.values():
            self._forget(seat)
        return live

    def expired(self, now: float) -> list[str]:
        """Codes of rooms older than the configured expiration."""
        limit = self.config.expiration
        return [code for code, room in self._rooms.items() if now - room.created_at >= limit]

    def __contains__(self, code: object) -> bool:
        return code in self._rooms

    def __len__(self) -> int:
        return len(self._rooms)

    def codes(self) -> list[str]:
        return list(self._rooms)

    def room(self, code: str) -> Room | None:
        return self._rooms.get(code)

    def key(self, code: str) -> str | None:
        """The room's link key (22 URL-safe characters); None for an unknown code."""
        room = self._rooms.get(code)
        return None if room is None else room.key

    def has_key(self, code: str, key: str | None) -> bool:
        """True if `key` is room `code`'s key (compared in constant time)."""
        room = self._rooms.get(code)
        return room is not None and key is not None and hmac.compare_digest(room.key, key)

    def has_token(self, code: str, token: str | None, now: float) -> bool:
        """True if `token` would resume a seat of room `code` now."""
        seat = self._by_token.get(token) if token else None
        if seat is None or seat.room_code != code:
            return False
        return seat.held_until is None or seat.held_until > now

    def members(self, code: str) -> list[NodeId]:
        """Live members of a room (empty for an unknown code)."""
        room = self._rooms.get(code)
        return [] if room is None else list(room.live_members())

    def seat(self, node: NodeId) -> Seat | None:
        return self._by_node.get(node)

    # ---- seats ----

    def join(
        self, code: str, now: float, token: str | None = None, client_name: str | None = None
    ) -> JoinResult:
        """Gives a connection a seat in room `code`.

        A `token` from an earlier welcome, presented while its seat is held (or still
        live on a dying connection), returns that seat: same node id. An unknown,
        expired or left token is ignored: the join proceeds as a fresh one.

        Raises:
            ProtocolError: INVALID_ROOM (no such room) or ROOM_FULL.
        """
        self.purge(now)
        room = self._rooms.get(code)
        if room is None:
            raise ProtocolError(INVALID_ROOM, "Invalid room code")
        old = self._by_token.get(token) if token else None
        if old is not None and old.room_code == code:
            replaced = old.is_live
            self._by_token.pop(old.token)
            old.token = secrets.token_urlsafe(24)  # a token is good for one resume
            old.held_until = None
            if client_name is not None:
                old.client_name = client_name
            self._by_token[old.token] = old
            return JoinResult(old, resumed=True, replaced=replaced)
        if len(room.seats) >= self.config.max_clients and not self._release_held(room):
            raise ProtocolError(ROOM_FULL, "Room is full")
        node = NodeId.generate(self._by_node)
        seat = Seat(node, code, secrets.token_urlsafe(24), client_name)
        room.seats[node] = seat
        self._by_node[node] = seat
        self._by_token[seat.token] = seat
        return JoinResult(seat, resumed=False, replaced=False)

    def drop(self, node: NodeId, now: float) -> None:
        """The connection of `node` was lost: hold its seat for the resume grace."""
        seat = self._by_node.get(node)
        if seat is None:
            return
        if self.resume_grace > 0:
            seat.held_until = now + self.resume_grace
        else:
            self.leave(node)

    def leave(self, node: NodeId) -> None:
        """`node` left on purpose: free its seat and retire its token."""
        seat = self._by_node.get(node)
        if seat is None:
            return
        room = self._rooms.get(seat.room_code)
        if room is not None:
            room.seats.pop(node, None)
        self._forget(seat)

    def purge(self, now: float) -> int:
        """Frees seats whose grace ran out; returns how many."""
        stale = [
            s for s in self._by_node.values() if s.held_until is not None and s.held_until < now
        ]
        for seat in stale:
            self.leave(seat.node_id)
        return len(stale)

    def _release_held(self, room: Room) -> bool:
        """Frees the room's longest-held seat for a live phone; False if none is held.

        A held seat only waits for a phone that may come back; a phone that is here
        now goes first. The released token later gets a fresh welcome, as after the
        grace window.
        """
        held = [s for s in room.seats.values() if s.held_until is not None]
        if not held:
            return False
        oldest = min(held, key=lambda s: s.held_until or 0.0)
        self.leave(oldest.node_id)
        return True

    def _forget(self, seat: Seat) -> None:
        self._by_node.pop(seat.node_id, None)
        if self._by_token.get(seat.token) is seat:
            del self._by_token[seat.token]


class JoinThrottle:
    """Limits failed joins per remote address (a token bucket each).

    With the defaults an address may fail 10 joins in a burst, then 60 per hour:
    finding one 4-digit code takes 5,000 guesses on average, about 83 hours, longer
    than a room lives. Three typos leave seven tries. This throttle is per address, so
    one attacker behind a venue's NAT only slows that NAT's typed codes (links with
    the room key and resumes are never throttled); `GuessBudget` bounds all
    addresses together.

    Args:
        burst: failures allowed at once.
        per_hour: failures regained per hour.
        max_addresses: addresses tracked; when exceeded, those back at a full bucket
            are forgotten first (they carry no state worth keeping).
    """

    def __init__(
        self, burst: int = 10, per_hour: float = 60.0, max_addresses: int = 100_000
    ) -> None:
        if burst < 1 or per_hour <= 0:
            raise ValueError("burst must be >= 1 and per_hour > 0")
        self.burst = float(burst)
        self.rate = per_hour / 3600.0
        self.max_addresses = max_addresses
        self._buckets: dict[str, tuple[float, float]] = {}  # addr -> (tokens, at time)

    def _tokens(self, address: str, now: float) -> float:
        tokens, then = self._buckets.get(address, (self.burst, now))
        return min(self.burst, tokens + (now - then) * self.rate)

    def allows(self, address: str, now: float) -> bool:
        """True if `address` may attempt a join now."""
        return self._tokens(address, now) >= 1.0

    def failed(self, address: str, now: float) -> None:
        """Records one failed join from `address`."""
        self._buckets[address] = (max(0.0, self._tokens(address, now) - 1.0), now)
        if len(self._buckets) > self.max_addresses:
            self._prune(now)

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until `address` may try again (0 if it may now)."""
        missing = 1.0 - self._tokens(address, now)
        return max(0.0, missing / self.rate)

    def _prune(self, now: float) -> None:
        full = [a for a in self._buckets if self._tokens(a, now) >= self.burst]
        for address in full:
            del self._buckets[address]
        while len(self._buckets) > self.max_addresses:
            # Oldest entries first (dicts keep insertion order).
            del self._buckets[next(iter(self._buckets))]


class GuessBudget:
    """Failed typed-code joins server-wide: one token bucket for every address.

    A distributed attacker (many source addresses, each under its own per-address
    limit) is held to the same budget as everyone else. The refill rate is sized so
    that in a room's lifetime at most `share` of the code space can be guessed:
    `burst + rate * lifetime <= share * space`. At 4 digits and 24 h with the defaults
    (burst 60, share 0.45) that is 3.1 failures a minute; a venue where 50 phones
    mistype in the first minute stays inside the burst.

    Args:
        code_space: how many codes exist (10 ** code_length).
        lifetime: seconds a room lives (its expiration).
        burst: failures allowed at once.
        share: most of the code space a room's lifetime may see guessed.
    """

    def __init__(
        self, code_space: int, lifetime: float, burst: int = 60, share: float = 0.45
    ) -> None:
        if not 0 < share < 1 or burst < 1 or lifetime <= 0:
            raise ValueError("share must be in (0, 1), burst >= 1, lifetime > 0")
        self.burst = float(min(burst, max(1, int(share * code_space) // 2)))
        self.rate = max(0.0, share * code_space - self.burst) / lifetime  # per second
        self._tokens = self.burst
        self._at: float | None = None

    def _refill(self, now: float) -> float:
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        return self._tokens

    def allows(self, now: float) -> bool:
        """True while a typed-code join may be tried."""
        return self._refill(now) >= 1.0

    def failed(self, now: float) -> None:
        """Records one failed typed-code join."""
        self._tokens = max(0.0, self._refill(now) - 1.0)

    def retry_after(self, now: float) -> float:
        """Seconds until typed codes are accepted again (0 if they are now)."""
        missing = 1.0 - self._refill(now)
        if missing <= 0:
            return 0.0
        return missing / self.rate if self.rate > 0 else float("inf")
