"""The session core: every rule of the server, as plain code with time passed in.

A client's decoded text messages and the host's commands go in; ring pushes, messages
for clients (through each client's `Outbox`), pings and closes come out. Rooms, seats
and resume, the join throttle, error budgets, echo fan-out and coalescing, keepalive
decisions and stats all live here. No asyncio, no websockets, no sockets, no wall
clock: every entry point takes `now_us`, microseconds on the server clock (the
`ClockSync` whose readings phones see in `welcome` and `pong`), so the whole session
runs on one clock and is tested by passing numbers in.

Threading: a Session belongs to one thread (the event loop's, once serving). The
snapshots (`stats`, `client_stats`, `param_values`) only read and may be taken from
any thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import hmac
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from .._ring import NetBufferProducer, hash_param_name
from ..clock_filter import OffsetEstimator
from ..errors import BbxNetError
from ..message import NodeId
from ..protocol import (
    ALREADY_JOINED,
    FORBIDDEN,
    INVALID_ROOM,
    INVALID_VALUE,
    NOT_JOINED,
    RATE_LIMITED,
    ROOM_FULL,
    SCHEDULE_FULL,
    SERVER_FULL,
    UNKNOWN_PARAM,
    Admin,
    AdminCommand,
    InvalidText,
    Join,
    Leave,
    ParamState,
    Ping,
    ProtocolError,
    Sync,
    Trigger,
    check_at,
    encode_closed,
    encode_error,
    encode_pong,
    encode_state,
    encode_update,
    encode_welcome,
    load_frame,
    message_from_json,
    param_fields,
)
from ..rooms import GuessBudget, JoinThrottle, RoomRegistry, Seat
from .commands import (
    BroadcastParam,
    BroadcastVisualization,
    CloseRoom,
    Command,
    CreateRoom,
    Shutdown,
)
from .config import ParamSpec, WsServerConfig
from .echo import EchoClock, EchoLine
from .outbox import Outbox, Sink

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INVALID_DATA",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_TRY_LATER",
    "ClientStats",
    "ParamEvent",
    "Peer",
    "ServerStats",
    "Session",
    "TriggerEvent",
]

logger = logging.getLogger(__name__)

#: Close codes (RFC 6455 §7.4.1).
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_INVALID_DATA = 1000, 1001, 1007
CLOSE_POLICY, CLOSE_TRY_LATER = 1008, 1013

#: An internal error of one kind is logged at most once per this many µs.
_LOG_EVERY_US = 60_000_000
_PONGS_REMEMBERED = 8  # a client's clock report must name one of these pongs
_FIT_AT_ONCE = 16  # estimators with this few samples are fitted on every sample
_FITS_PER_TICK = 4  # larger ones wait for refit_clocks, this many per call


@dataclass(frozen=True, slots=True)
class ParamEvent:
    """An accepted parameter change, as handed to listeners (after clamping)."""

    name: str
    value: float
    node_id: str | None  # None: the host (BroadcastParam)
    room_code: str | None
    at: int | None
    timestamp_us: int
    queued: bool  # False: the ring was full and the audio side did not get it


@dataclass(frozen=True, slots=True)
class TriggerEvent:
    """An accepted trigger, as handed to listeners."""

    name: str
    x: float | None
    y: float | None
    node_id: str
    room_code: str
    at: int | None
    timestamp_us: int
    queued: bool


@dataclass(frozen=True, slots=True)
class ClientStats:
    """One connection, as the host sees it (a snapshot)."""

    node_id: str | None
    room_code: str | None
    client_name: str | None
    address: str
    round_trip_us: float | None  # latest round trip (the client's report, else keepalive)
    clock_offset_us: float | None  # client clock minus server clock (+ = client ahead)
    messages_in: int
    messages_out: int
    dropped: int  # outgoing messages dropped or coalesced because the client was slow
    errors: int
    clock_error_us: float | None = None  # standard error of clock_offset_us
    reported_offset_us: float | None = None  # the client's own estimate, same sign


@dataclass(frozen=True, slots=True)
class ServerStats:
    """The server, as the host sees it (a snapshot)."""

    connections: int
    clients: int  # joined
    rooms: int
    ring_len: int
    ring_capacity: int
    ring_dropped: int
    accepted: int  # messages queued into the ring
    refused: int  # messages the ring refused (it was full)
    errors: int
    internal_errors: int


Listener = Callable[[ParamEvent | TriggerEvent], None]


class Peer:
    """One connection as the session sees it. Slotted: thousands may live at once."""

    __slots__ = (
        "address",
        "outbox",
        "seat",
        "node_str",
        "error_tokens",
        "error_time_us",
        "errors",
        "messages_in",
        "last_pong_us",
        "ping_payload",
        "ping_sent_us",
        "rtt_us",
        "estimator",
        "pong_times",
        "clock_queued",
        "clock_offset_us",
        "clock_error_us",
        "reported",
        "reported_offset_us",
        "reported_rtt_us",
        "closing",
        "replaced",
        "registered",
        "opened_us",
        "admin",
    )

    def __init__(self, address: str, outbox: Outbox, budget: int, now_us: int) -> None:
        self.address = address
        self.outbox = outbox
        self.seat: Seat | None = None
        self.node_str: str | None = None
        self.error_tokens = float(budget)
        self.error_time_us = now_us
        self.errors = 0
        self.messages_in = 0
        self.last_pong_us = now_us
        self.ping_payload: bytes | None = None  # the ping awaiting its pong
        self.ping_sent_us = 0
        self.rtt_us: float | None = None
        self.estimator: OffsetEstimator | None = None
        self.pong_times: list[int] = []  # server_time of the last pongs sent
        self.clock_queued = False  # waiting in Session._clock_queue for a refit
        self.clock_offset_us: float | None = None  # the estimator's, as last refit
        self.clock_error_us: float | None = None
        self.reported = False  # the client reports its exchanges (`last` in ping)
        self.reported_offset_us: float | None = None
        self.reported_rtt_us: float | None = None
        self.closing = False
        self.replaced = False  # its seat went to a newer connection of the same phone
        self.registered = False  # counted in the session (False: refused SERVER_FULL)
        self.opened_us = now_us
        self.admin = False  # an operator view (admin token), not a phone


class _Room:
    """One room's live connections and the echo line of each parameter changed in it
    (see `echo`: each member is sent a parameter at most `update_rate` times a second,
    at once when it was not sent it within the interval)."""

    __slots__ = ("code", "members", "by_address", "lines")

    def __init__(self, code: str) -> None:
        self.code = code
        self.members: set[Peer] = set()
        self.by_address: dict[str, int] = {}  # remote address -> live members from it
        self.lines: dict[str, EchoLine[Peer]] = {}  # parameter -> its echoes in this room

    def add(self, peer: Peer) -> None:
        self.members.add(peer)
        self.by_address[peer.address] = self.by_address.get(peer.address, 0) + 1
        for line in self.lines.values():
            line.add(peer)

    def retire(self) -> None:
        """The room is gone: its lines' trailing edges are dropped."""
        for line in self.lines.values():
            line.live = False

    def discard(self, peer: Peer) -> None:
        if peer in self.members:
            self.members.remove(peer)
            for line in self.lines.values():
                line.discard(peer)
            left = self.by_address[peer.address] - 1
            if left:
                self.by_address[peer.address] = left
            else:
                del self.by_address[peer.address]


class ScheduleShare:
    """Future events waiting in the audio side's schedule, counted by sender.

    The consumer's schedule (drain_block's heap) has a fixed capacity; once full of
    later events, anything behind them waits in the ring, an event due now included.
    So the server admits future events only up to half that capacity in all, and one
    sender only up to `per_sender` of them: what is due now always finds room, and one
    phone cannot take the schedule from the others. An event counts until its time
    (server clock), when the audio side takes it out of the schedule.
    """

    __slots__ = ("capacity", "per_sender", "total", "_heap", "_by", "_seq")

    def __init__(self, capacity: int, per_sender: int) -> None:
        self.capacity = capacity
        self.per_sender = per_sender
        self.total = 0
        self._heap: list[tuple[int, int, object]] = []  # (at_us, seq, sender)
        self._by: dict[object, int] = {}
        self._seq = 0  # ties in time: first admitted, first out

    def admit(self, sender: object, at_us: int, now_us: int) -> bool:
        """True if an event for `at_us` may go to the schedule (counted), else False."""
        if at_us <= now_us:
            return True  # due now: passes through the schedule at once
        heap, by = self._heap, self._by
        while heap and heap[0][0] <= now_us:
            _, _, done = heapq.heappop(heap)
            self.total -= 1
            left = by[done] - 1
            if left:
                by[done] = left
            else:
                del by[done]
        if self.total >= self.capacity or by.get(sender, 0) >= self.per_sender:
            return False
        self.total += 1
        by[sender] = by.get(sender, 0) + 1
        self._seq += 1
        heapq.heappush(heap, (at_us, self._seq, sender))
        return True


class _ErrorLog:
    """Internal errors, counted always and logged at most once per kind per minute."""

    def __init__(self) -> None:
        self.count = 0
        self._last: dict[str, tuple[int, int]] = {}  # kind -> (logged at µs, suppressed)

    def report(self, kind: str, now_us: int, exc_info: bool = True) -> None:
        self.count += 1
        last = self._last.get(kind)
        if last is not None and now_us - last[0] < _LOG_EVERY_US:
            self._last[kind] = (last[0], last[1] + 1)
            return
        more = f" (and {last[1]} more in the last minute)" if last and last[1] else ""
        logger.error("internal error: %s%s", kind, more, exc_info=exc_info)
        self._last[kind] = (now_us, 0)


class Session:
    """Every rule of one server, with time passed in.

    Args:
        config: the server's configuration.
        producer: the ring's producing end (pushed from the session's thread).
        now_us: the server clock now, in µs (rooms created later count from here).
    """

    def __init__(self, config: WsServerConfig, producer: NetBufferProducer, now_us: int) -> None:
        self.config = config
        self.producer = producer
        self.shutdown_requested = False
        self._specs: dict[str, ParamSpec] = {p.name: p for p in config.params}
        self._values: dict[str, float] = {p.name: float(p.value) for p in config.params}
        self._hashes: dict[str, int] = {p.name: hash_param_name(p.name) for p in config.params}
        self._rooms = RoomRegistry(config.room, config.resume_grace, config.max_rooms)
        self._throttle = JoinThrottle(config.join_burst, config.join_per_hour)
        self._guesses = GuessBudget(
            10**config.room.code_length, config.room.expiration, config.guess_burst
        )
        self._peers: set[Peer] = set()
        self._clock_queue: deque[Peer] = deque()  # estimators with samples to fit
        self._admins: set[Peer] = set()  # operator views, sent admin_state each tick
        self._shown: tuple[str, str, str | None] | None = None  # projector: code, link, QR
        page: dict[str, object] = {}
        if config.title:
            page["title"] = config.title
        if config.instruction:
            page["instruction"] = config.instruction
        if config.trigger_labels:
            page["trigger_labels"] = dict(config.trigger_labels)
        if config.xy_pad != "last":
            page["xy"] = config.xy_pad
        self._page = page
        share = producer.schedule_capacity // 2
        per = config.max_scheduled_per_client
        self._schedule = ScheduleShare(share, per if per is not None else max(1, share // 8))
        self._by_node: dict[NodeId, Peer] = {}
        self._live: dict[str, _Room] = {}  # rooms with a connected member
        self._holding: set[Peer] = set()  # outboxes with something waiting
        self._echoes: EchoClock[Peer] = EchoClock()  # echo lines owing a trailing edge
        # Connections not yet joined, oldest first (the join deadline), and per address.
        self._lobby: dict[Peer, None] = {}
        self._lobby_by_address: dict[str, int] = {}
        self._join_timeout_us = int(config.join_timeout * 1e6)
        self._listeners: list[Listener] = []
        self._horizon_us = int(config.schedule_horizon * 1e6)
        self._update_interval_us = int(1e6 / config.update_rate)
        self._budget_us = 1_000_000  # one error forgiven per second
        self._accepted = 0
        self._refused = 0
        self._errors = 0
        self._internal = _ErrorLog()
        self._debug = logger.isEnabledFor(logging.DEBUG)

    # ---- public: connections ----------------------------------------------------------

    def open(self, address: str, sink: Sink, now_us: int) -> Peer:
        """A connection finished its handshake. Over max_connections: SERVER_FULL, close."""
        outbox = Outbox(sink, self.config.broadcast_capacity)
        peer = Peer(address, outbox, self.config.error_budget, now_us)
        if len(self._peers) >= self.config.max_connections:
            peer.closing = True
            outbox.send(encode_error(SERVER_FULL, "Server is full, try again later"))
            outbox.close(CLOSE_TRY_LATER, "server full")
            return peer
        waiting = self._lobby_by_address.get(address, 0)
        if waiting >= self.config.max_unjoined_per_address:
            peer.closing = True
            message = "Too many connections from your address that have not joined"
            outbox.send(encode_error(SERVER_FULL, message))
            outbox.close(CLOSE_POLICY, "too many unjoined connections")
            return peer
        peer.registered = True
        self._peers.add(peer)
        self._lobby[peer] = None
        self._lobby_by_address[address] = waiting + 1
        return peer

    def receive(
        self,
        peer: Peer,
        data: bytes | bytearray | memoryview | str,
        now_us: int,
        binary: bool = False,
    ) -> None:
        """One complete message from `peer` (a text payload's bytes, or a binary one)."""
        if peer.closing:
            return
        peer.messages_in += 1
        try:
            obj = load_frame(data, binary=binary)
            if type(obj) is dict and obj.get("type") == "param":  # most of what arrives
                self._on_param(peer, *param_fields(obj), now_us)
                return
            message = message_from_json(obj)
            if isinstance(message, Trigger):
                self._on_trigger(peer, message, now_us)
            elif isinstance(message, Ping):
                self._on_ping(peer, message, now_us)
            elif isinstance(message, Join):
                self._on_join(peer, message, now_us)
            elif isinstance(message, Sync):
                self._require_joined(peer)
                self._send(peer, self._state_frame())
            elif isinstance(message, Leave):
                self._on_leave(peer)
            elif isinstance(message, Admin):
                self._on_admin(peer, message)
            elif isinstance(message, AdminCommand):
                self._on_admin_command(peer, message, now_us)
        except InvalidText:
            # RFC 6455 §8.1: a text frame that is not UTF-8 fails the connection.
            self._errors += 1
            peer.errors += 1
            self._close(peer, CLOSE_INVALID_DATA, "invalid UTF-8", fail=True)
        except ProtocolError as exc:
            self._on_error(peer, exc, now_us)
        except Exception:
            self._internal.report("handling a message", now_us)

    def pong(self, peer: Peer, payload: bytes, now_us: int) -> None:
        """A protocol pong arrived at `now_us` (stamped at receipt)."""
        if peer.ping_payload is not None and payload == peer.ping_payload:
            peer.ping_payload = None
            peer.rtt_us = float(now_us - peer.ping_sent_us)
            peer.last_pong_us = now_us

    def closed(self, peer: Peer, now_us: int) -> None:
        """The connection is gone: release the peer; a joined seat is held for resume."""
        peer.closing = True
        if not peer.registered:
            return
        peer.registered = False
        self._peers.discard(peer)
        self._holding.discard(peer)
        self._admins.discard(peer)
        self._leave_lobby(peer)
        if peer.seat is not None and not peer.replaced:
            self._rooms.drop(peer.seat.node_id, now_us * 1e-6)
        self._detach(peer)

    def paused(self, peer: Peer) -> None:
        """The peer's transport buffer rose above its high-water mark."""
        peer.outbox.pause()

    def resumed(self, peer: Peer, now_us: int) -> None:
        """The peer's transport buffer drained: write what waited."""
        if peer.outbox.resume():
            self._holding.add(peer)
        else:
            self._holding.discard(peer)

    # ---- public: time ---------------------------------------------------------------

    def flush(self, now_us: int) -> None:
        """Sends the echoes that are due and writes what waits in outboxes."""
        if self._echoes:
            for line in self._echoes.pop_due(now_us):
                self._echo(line, now_us)
        for peer in list(self._holding):
            if not peer.outbox.flush():
                self._holding.discard(peer)

    @property
    def is_holding(self) -> bool:
        """True while echoes or outbox messages wait (the transport keeps flushing)."""
        return bool(self._holding) or bool(self._echoes)

    @property
    def outboxes_holding(self) -> bool:
        """True while some outbox holds messages (echoes have `next_echo_us`)."""
        return bool(self._holding)

    @property
    def next_echo_us(self) -> int | None:
        """When the next echo is due (call `flush` then), or None."""
        return self._echoes.next_us

    def keepalive(self, now_us: int) -> None:
        """Pings every connection; drops those silent past connection_timeout.

        Never waits on anyone: a ping is queued on each sink and its pong, whenever
        it comes, goes to `pong`. A paused peer is not pinged (its buffer is full) but
        still times out.
        """
        timeout_us = int(self.config.connection_timeout * 1e6)
        for peer in list(self._peers):
            if peer.closing:
                continue
            silent_us = now_us - peer.last_pong_us
            if silent_us > timeout_us:
                logger.info("dropping %s: no pong for %.1f s", peer.address, silent_us / 1e6)
                peer.closing = True
                peer.outbox.sink.abort()
                continue
            if peer.outbox.paused:
                continue
            payload = now_us.to_bytes(8, "big")
            peer.ping_payload = payload
            peer.ping_sent_us = now_us
            peer.outbox.sink.ping(payload)

    def housekeeping(self, now_us: int) -> None:
        """Closes expired rooms, frees seats whose resume grace ran out, and closes
        connections that did not join within join_timeout (1008)."""
        deadline = now_us - self._join_timeout_us
        for peer in list(self._lobby):
            if peer.opened_us > deadline:
                break  # oldest first: the rest are younger
            self._leave_lobby(peer)
            if not peer.closing:
                self._close(peer, CLOSE_POLICY, "no join in time")
        now = now_us * 1e-6
        for code in self._rooms.expired(now):
            logger.info("room %s expired", code)
            self._close_room(code, "expired")
        self._rooms.purge(now)
        if self._admins:
            frame = self._admin_frame()
            for admin in list(self._admins):
                self._send(admin, frame)

    # ---- public: the host ---------------------------------------------------------------

    def command(self, command: Command, now_us: int) -> None:
        """Handles one host command (already validated and encoded by its sender)."""
        try:
            if isinstance(command, BroadcastParam):
                self._broadcast_param(command, now_us)
            elif isinstance(command, BroadcastVisualization):
                self._broadcast_visualization(command.frame, command.stream)
            elif isinstance(command, CreateRoom):
                self._create_room(command, now_us)
            elif isinstance(command, CloseRoom):
                self._close_room(command.code, "closed")
            elif isinstance(command, Shutdown):
                self.shutdown_requested = True
        except Exception:
            self._internal.report(f"command {type(command).__name__}", now_us)

    def shutdown(self) -> None:
        """Sends `closed` to every connection and starts closing each (1001)."""
        self.shutdown_requested = True
        frame = encode_closed("shutdown")
        for peer in list(self._peers):
            self._send(peer, frame)
            self._close(peer, CLOSE_GOING_AWAY, "server shutdown")

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def peers(self) -> list[Peer]:
        return list(self._peers)

    def param_values(self) -> dict[str, float]:
        return dict(self._values)

    def room_key(self, code: str) -> str | None:
        """Room `code`'s link key (for `?room=CODE&key=KEY`); None if no such room."""
        return self._rooms.key(code)

    def rooms(self) -> list[str]:
        return self._rooms.codes()

    def show(self, code: str | None, link: str | None = None) -> None:
        """The room the projector page shows (see WsServer.show); None: none."""
        if code is None:
            self._shown = None
            return
        link = link or f"?room={code}"
        svg = None
        with contextlib.suppress(ImportError):
            import segno

            svg = segno.make(link, error="m").svg_inline(omitsize=True, dark="#000", light="#fff")
        self._shown = (code, link, svg)

    def show_json(self) -> bytes | None:
        """The projector page's data (`/show.json`), or None when no room is shown."""
        if self._shown is None:
            return None
        code, link, svg = self._shown
        return orjson.dumps(
            {
                "code": code,
                "link": link,
                "qr_svg": svg,
                "phones": self.room_size(code),
                "open": self.room_key(code) is not None,
            }
        )

    def room_size(self, code: str) -> int:
        """Phones connected to room `code` now."""
        room = self._live.get(code)
        return 0 if room is None else len(room.members)

    def client_stats(self) -> list[ClientStats]:
        out = []
        for p in list(self._peers):
            seat = p.seat
            out.append(
                ClientStats(
                    node_id=p.node_str,
                    room_code=seat.room_code if seat else None,
                    client_name=seat.client_name if seat else None,
                    address=p.address,
                    round_trip_us=p.reported_rtt_us if p.reported else p.rtt_us,
                    clock_offset_us=p.clock_offset_us,
                    clock_error_us=p.clock_error_us,
                    reported_offset_us=p.reported_offset_us,
                    messages_in=p.messages_in,
                    messages_out=p.outbox.written,
                    dropped=p.outbox.dropped,
                    errors=p.errors,
                )
            )
        return out

    def stats(self) -> ServerStats:
        p = self.producer
        return ServerStats(
            connections=len(self._peers),
            clients=len(self._by_node),
            rooms=len(self._rooms),
            ring_len=len(p),
            ring_capacity=p.capacity,
            ring_dropped=p.dropped,
            accepted=self._accepted,
            refused=self._refused,
            errors=self._errors,
            internal_errors=self._internal.count,
        )

    # ---- client messages ------------------------------------------------------------

    def _on_error(self, peer: Peer, exc: ProtocolError, now_us: int) -> None:
        self._errors += 1
        peer.errors += 1
        if self._debug:
            logger.debug("%s: %s", peer.address, exc)
        self._send(peer, encode_error(exc.code, exc.message))
        budget = float(self.config.error_budget)
        regained = (now_us - peer.error_time_us) / self._budget_us
        peer.error_tokens = min(budget, peer.error_tokens + regained) - 1.0
        peer.error_time_us = now_us
        if peer.error_tokens < 0:
            # Failed (RFC 6455 §7.1.7), not closed politely: what it still sends is
            # discarded unparsed, so a flood past its budget costs nothing more.
            self._close(peer, CLOSE_POLICY, "too many invalid messages", fail=True)

    # ---- the operator view ----------------------------------------------------------

    def _on_admin(self, peer: Peer, msg: Admin) -> None:
        if peer.seat is not None or peer.admin:
            raise ProtocolError(ALREADY_JOINED, "Already joined")
        token = self.config.admin_token
        if not token or not hmac.compare_digest(token.encode(), msg.token.encode()):
            raise ProtocolError(FORBIDDEN, "Wrong admin token")
        peer.admin = True
        self._leave_lobby(peer)
        self._admins.add(peer)
        self._send(peer, self._admin_frame())

    def _on_admin_command(self, peer: Peer, msg: AdminCommand, now_us: int) -> None:
        if not peer.admin:
            raise ProtocolError(FORBIDDEN, "Only the operator view sends admin commands")
        result: dict[str, object] = {"type": "admin_result", "command": msg.command}
        if msg.command == "broadcast_param":
            assert msg.param is not None and msg.value is not None
            try:
                command = BroadcastParam(msg.param, msg.value)
            except ValueError as exc:
                raise ProtocolError(INVALID_VALUE, str(exc)) from None
            self._broadcast_param(command, now_us)
        elif msg.command == "close_room":
            assert msg.room_code is not None
            if self._rooms.key(msg.room_code) is None:
                raise ProtocolError(INVALID_ROOM, "No such room")
            self._close_room(msg.room_code, "closed")
            result["room_code"] = msg.room_code
        else:
            create = CreateRoom()
            self._create_room(create, now_us)
            try:
                result["room_code"] = create.response.result(0)
            except BbxNetError as exc:
                raise ProtocolError(SERVER_FULL, str(exc)) from None
        self._send(peer, orjson.dumps(result))
        self._send(peer, self._admin_frame())

    def _admin_frame(self) -> bytes:
        """What the operator view shows: rooms with their phones, the ring, values."""
        phones: dict[str, list[dict[str, object]]] = {}
        for st in self.client_stats():
            if st.room_code is not None:
                phones.setdefault(st.room_code, []).append(dataclasses.asdict(st))
        rooms = [
            {"code": code, "key": self._rooms.key(code), "phones": phones.get(code, [])}
            for code in self._rooms.codes()
        ]
        return orjson.dumps(
            {
                "type": "admin_state",
                "rooms": rooms,
                "stats": dataclasses.asdict(self.stats()),
                "values": self._values,
                "params": [p.name for p in self.config.params],
            }
        )

    def _require_joined(self, peer: Peer) -> Seat:
        if peer.seat is None:
            raise ProtocolError(NOT_JOINED, "Send join first")
        return peer.seat

    def _on_join(self, peer: Peer, msg: Join, now_us: int) -> None:
        if peer.seat is not None:
            raise ProtocolError(ALREADY_JOINED, "Already joined a room")
        now = now_us * 1e-6
        rooms = self._rooms
        # The link's key and a valid session token are proof enough: never throttled.
        typed = not (
            rooms.has_key(msg.room_code, msg.key)
            or rooms.has_token(msg.room_code, msg.session, now)
        )
        if typed:
            if not self._throttle.allows(peer.address, now):
                wait = self._throttle.retry_after(peer.address, now)
                raise ProtocolError(RATE_LIMITED, f"Too many failed joins; retry in {wait:.0f} s")
            if not self._guesses.allows(now):
                wait = self._guesses.retry_after(now)
                raise ProtocolError(
                    RATE_LIMITED,
                    f"Too many wrong room codes on this server; retry in {wait:.0f} s "
                    "or use the room's link or QR code",
                )
        try:
            result = rooms.join(msg.room_code, now, msg.session, msg.client_name)
        except ProtocolError as exc:
            if exc.code == INVALID_ROOM:
                self._throttle.failed(peer.address, now)
                self._guesses.failed(now)
            raise
        seat = result.seat
        limit = self.config.max_seats_per_address
        if limit is not None and not result.replaced:
            live = self._live.get(seat.room_code)
            if live is not None and live.by_address.get(peer.address, 0) >= limit:
                self._rooms.leave(seat.node_id)
                raise ProtocolError(ROOM_FULL, "Room is full for your address")
        if result.replaced:
            old = self._by_node.get(seat.node_id)
            if old is not None:
                old.replaced = True
                self._detach(old)
                self._close(old, CLOSE_NORMAL, "replaced by a newer connection")
        peer.seat = seat
        peer.node_str = str(seat.node_id)
        peer.estimator = OffsetEstimator(slew=False)  # fitted lazily, see _refit_clocks
        self._by_node[seat.node_id] = peer
        room = self._live.get(seat.room_code)
        if room is None:
            room = self._live[seat.room_code] = _Room(seat.room_code)
        room.add(peer)
        self._leave_lobby(peer)
        self._send(peer, encode_welcome(peer.node_str, now_us, seat.token))
        self._send(peer, self._state_frame())

    def _on_leave(self, peer: Peer) -> None:
        seat = self._require_joined(peer)
        self._rooms.leave(seat.node_id)
        self._detach(peer)
        self._close(peer, CLOSE_NORMAL, "left")

    def _on_param(self, peer: Peer, param: str, value: float, at: int | None, now_us: int) -> None:
        seat = peer.seat
        if seat is None:
            raise ProtocolError(NOT_JOINED, "Send join first")
        if self._specs:
            spec = self._specs.get(param)
            if spec is None:
                raise ProtocolError(UNKNOWN_PARAM, f"Unknown parameter {param[:64]!r}")
            value = spec.clamp(value)
        elif param not in self._values and len(self._values) >= self.config.max_undeclared_params:
            raise ProtocolError(UNKNOWN_PARAM, "Too many distinct parameter names")
        node = seat.node_id
        if at is None:
            ts = now_us
        else:
            check_at(at, now_us, self._horizon_us)
            if not self._schedule.admit(node, at, now_us):
                raise ProtocolError(SCHEDULE_FULL, "Too many events scheduled ahead")
            ts = at
        h = self._hashes.get(param)
        if h is None:
            h = hash_param_name(param)
        if self.producer.try_send_param(h, value, node.high, node.low, ts, at is not None):
            self._accepted += 1
            queued = True
        else:
            self._refused += 1
            queued = False
        self._values[param] = value
        room = self._live.get(seat.room_code)
        if room is not None and len(room.members) > 1:
            line = room.lines.get(param)
            if line is None:
                line = room.lines[param] = EchoLine(param, room.members)
            line.change(peer, value)
            self._echo(line, now_us)
        if self._listeners:
            self._notify(
                ParamEvent(param, value, peer.node_str, seat.room_code, at, ts, queued),
                now_us,
            )

    def _on_trigger(self, peer: Peer, msg: Trigger, now_us: int) -> None:
        seat = self._require_joined(peer)
        check_at(msg.at, now_us, self._horizon_us)
        if msg.at is not None and not self._schedule.admit(seat.node_id, msg.at, now_us):
            raise ProtocolError(SCHEDULE_FULL, "Too many events scheduled ahead")
        node = seat.node_id
        ts = msg.at if msg.at is not None else now_us
        queued = self.producer.try_send_trigger(
            msg.name, msg.x, msg.y, node.high, node.low, ts, msg.at is not None
        )
        if queued:
            self._accepted += 1
        else:
            self._refused += 1
        if self._listeners:
            event = TriggerEvent(
                msg.name, msg.x, msg.y, peer.node_str or "", seat.room_code, msg.at, ts, queued
            )
            self._notify(event, now_us)

    def _on_ping(self, peer: Peer, msg: Ping, now_us: int) -> None:
        self._require_joined(peer)
        self._send(peer, encode_pong(msg.client_time, now_us))
        est = peer.estimator
        if est is None:
            return
        times = peer.pong_times
        if msg.last is not None:
            # The client's last exchange, completed on our side: it stamped t1 and t4,
            # we stamped server_time at the frame's receipt. The same exchanges its own
            # filter uses, so both estimates agree (ours with the opposite sign).
            peer.reported = True
            t1, server_time, t4 = msg.last
            if server_time in times:  # a pong we sent, not a made-up time
                self._clock_sample(peer, est, server_time, (t1 + t4) / 2 - server_time, t4 - t1)
            if msg.offset is not None:
                peer.reported_offset_us = -msg.offset
            if msg.rtt is not None:
                peer.reported_rtt_us = msg.rtt
        elif not peer.reported and peer.rtt_us is not None:
            # An older client: client_time was stamped about half a keepalive round
            # trip before we received it.
            mid = now_us - peer.rtt_us / 2
            self._clock_sample(peer, est, mid, float(msg.client_time) - mid, peer.rtt_us)
        times.append(now_us)
        if len(times) > _PONGS_REMEMBERED:
            del times[0]

    def _clock_sample(
        self, peer: Peer, est: OffsetEstimator, t: float, offset: float, delay: float
    ) -> None:
        try:
            est.add(t, offset, delay)
        except ValueError:
            return  # out of order (a client's clock report is its own business)
        if est.samples <= _FIT_AT_ONCE:
            peer.clock_offset_us = est.offset_us  # a small window fits in microseconds
            peer.clock_error_us = est.error_us
        elif not peer.clock_queued:
            peer.clock_queued = True
            self._clock_queue.append(peer)

    def refit_clocks(self, budget: int = _FITS_PER_TICK) -> None:
        """Refits up to `budget` clock estimators that have new samples, oldest
        waiting first. A full window costs about a millisecond, so the transport calls
        this often with a small budget (the loop never pauses long for it)."""
        queue = self._clock_queue
        for _ in range(min(len(queue), budget)):
            peer = queue.popleft()
            peer.clock_queued = False
            est = peer.estimator
            if est is None or peer.closing:
                continue
            peer.clock_offset_us = est.offset_us
            peer.clock_error_us = est.error_us

    # ---- the host's commands ----------------------------------------------------------

    def _create_room(self, command: CreateRoom, now_us: int) -> None:
        try:
            code = self._rooms.create(now_us * 1e-6, command.code, command.key)
        except BbxNetError as exc:
            command.response.set_exception(exc)
        else:
            command.response.set_result(code)

    def _broadcast_param(self, command: BroadcastParam, now_us: int) -> None:
        name, value, frame = command.name, command.value, command.frame
        spec = self._specs.get(name)
        if spec is not None and spec.clamp(value) != value:
            value = spec.clamp(value)
            frame = encode_update(name, value)
        self._values[name] = value
        # The host sets its own pace: sent at once to every client that keeps up,
        # held for the rest; a phone's echo of this parameter not yet sent is older
        # than the host's value now, so it is dropped.
        for room in self._live.values():
            line = room.lines.get(name)
            if line is not None:
                line.set_all(value)
        holding = self._holding
        for peer in self._by_node.values():
            if peer.outbox.update(name, frame):
                holding.add(peer)
        self._notify(ParamEvent(name, value, None, None, None, now_us, True), now_us)

    def _broadcast_visualization(self, frame: bytes, stream: int = 0) -> None:
        holding = self._holding
        for peer in self._by_node.values():
            if peer.outbox.visualization(frame, stream):
                holding.add(peer)

    def _close_room(self, code: str, reason: str) -> None:
        room = self._live.pop(code, None)
        self._rooms.close(code)
        if room is None:
            return
        room.retire()
        frame = encode_closed(reason)
        for peer in room.members:
            self._send(peer, frame)
            self._detach(peer)
            self._close(peer, CLOSE_NORMAL, f"room {reason}")

    # ---- helpers ----------------------------------------------------------------------

    def _send(self, peer: Peer, message: bytes) -> None:
        if peer.outbox.send(message):
            self._holding.add(peer)

    def _close(self, peer: Peer, code: int, reason: str, fail: bool = False) -> None:
        peer.closing = True
        peer.outbox.close(code, reason, fail)
        if peer.outbox.is_holding:
            self._holding.add(peer)

    def _detach(self, peer: Peer) -> None:
        """Removes a peer from the room indexes (its seat is handled by the caller)."""
        seat = peer.seat
        if seat is None:
            return
        if self._by_node.get(seat.node_id) is peer:
            del self._by_node[seat.node_id]
        room = self._live.get(seat.room_code)
        if room is not None:
            room.discard(peer)
            if not room.members:
                del self._live[seat.room_code]
                room.retire()
        peer.seat = None

    def _leave_lobby(self, peer: Peer) -> None:
        if peer in self._lobby:
            del self._lobby[peer]
            left = self._lobby_by_address[peer.address] - 1
            if left:
                self._lobby_by_address[peer.address] = left
            else:
                del self._lobby_by_address[peer.address]

    def _echo(self, line: EchoLine[Peer], now_us: int) -> None:
        """Writes `line`'s newest value to the members due now; queues the rest."""
        due = line.due(now_us, self._update_interval_us)
        if due:
            name = line.name
            frame = encode_update(name, line.value)
            holding = self._holding
            for member in due:
                if member.outbox.update(name, frame):
                    holding.add(member)
        self._echoes.watch(line)

    def _state_frame(self) -> bytes:
        states = []
        for name, value in self._values.items():
            spec = self._specs.get(name)
            if spec is not None:
                states.append(ParamState(name, value, spec.min, spec.max, spec.display()))
        return encode_state(states, self.config.triggers, self._page)

    def _notify(self, event: ParamEvent | TriggerEvent, now_us: int) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                self._internal.report(f"listener {listener!r}", now_us)
