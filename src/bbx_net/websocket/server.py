"""The asyncio WebSocket server: composes the protocol, the rooms and the ring.

Threading: everything here runs on the event loop's thread, except `_submit` (any
thread; it hands commands to the loop) and the read-only stats snapshots.

Sending never awaits a phone: frames are written with `websockets.broadcast`, which
queues bytes on the transport without waiting. A client whose transport buffer is
above the high-water mark is "slow": its parameter updates coalesce to the latest
value, its visualization frames are replaced by the newest, and other frames wait in
a bounded per-client queue that drops the oldest when full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, State

try:  # websockets' C routine when it was built, its Python one otherwise
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

from .._clock import ClockSync, OffsetEstimator
from .._ring import NetBufferProducer, hash_param_name
from ..errors import BbxNetError
from ..message import NodeId
from ..protocol import (
    ALREADY_JOINED,
    INVALID_ROOM,
    NOT_JOINED,
    RATE_LIMITED,
    SERVER_FULL,
    UNKNOWN_PARAM,
    Join,
    Leave,
    Param,
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
    encode_visualization,
    encode_welcome,
    parse_client_message,
)
from ..rooms import JoinThrottle, RoomRegistry, Seat
from .commands import (
    BroadcastParam,
    BroadcastVisualization,
    CloseRoom,
    Command,
    CommandChannel,
    CreateRoom,
    Shutdown,
)
from .config import ParamSpec, WsServerConfig
from .static import StaticFiles

__all__ = ["ClientStats", "ParamEvent", "ServerStats", "TriggerEvent", "WsServer"]

logger = logging.getLogger(__name__)

#: Bytes waiting in a client's transport above which the client counts as slow.
_WRITE_HIGH = 64 * 1024
#: Frames handled per connection per loop turn before the rest waits its turn.
_FRAMES_PER_TURN = 512
#: Seconds a closing client has to answer before its connection is cut.
_CLOSE_GRACE = 2.0
#: Close codes (RFC 6455).
_NORMAL, _GOING_AWAY, _POLICY, _TRY_LATER = 1000, 1001, 1008, 1013


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
    round_trip_us: float | None  # latest WebSocket ping round trip
    clock_offset_us: float | None  # client clock minus server clock (+ = client ahead)
    messages_in: int
    messages_out: int
    dropped: int  # outgoing frames dropped or coalesced because the client was slow
    errors: int


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


class _Connection(ServerConnection):
    """A connection that reads the common frames itself and hands them over at once.

    A phone sends small, whole, masked text frames. Those are cut out of the incoming
    bytes here, unmasked with websockets' own C routine and passed straight to
    `WsServer._on_frame`, in order, without websockets' generator-based parser and
    without a task switch per message. Every other frame (ping, pong, close,
    fragments, anything malformed or too large) is handed to websockets whole and in
    order, so it keeps doing the protocol work: answering pings, closing, failing bad
    connections with the right code. Bytes of an incomplete frame wait here until the
    rest arrives, so websockets always sees whole frames.

    Work per read is bounded: after `_FRAMES_PER_TURN` frames the rest waits, reading
    pauses (TCP pushes back on a flooding client) and the rest is handled in later
    loop turns, so one busy phone cannot starve the others, timers or host commands.
    """

    bbx_server: WsServer | None = None  # set by the factory in WsServer.start
    bbx_client: _Client | None = None
    _bbx_partial: bytes = b""  # an incomplete frame's first bytes
    _bbx_waiting: bytes | None = None  # whole frames left for the next loop turn

    def data_received(self, data: bytes) -> None:
        if self.bbx_server is None or self.request is None or self.protocol.state is not OPEN:
            # The handshake, or closing: websockets handles everything.
            data, self._bbx_partial = self._bbx_partial + data, b""
            super().data_received(data)
        elif self._bbx_waiting is not None:
            self._bbx_waiting += data  # paused with work left: keep the order
        else:
            data, self._bbx_partial = self._bbx_partial + data, b""
            self._bbx_consume(data)

    def process_event(self, event: Any) -> None:
        # Whole data frames that still reach websockets' parser (rare: see the class
        # docstring) are handed over the same way.
        server = self.bbx_server
        if (
            server is not None
            and self.request is not None
            and isinstance(event, Frame)
            and event.fin
            and event.opcode in (Opcode.TEXT, Opcode.BINARY)
        ):
            self._bbx_handle(event.data, event.opcode is Opcode.BINARY)
            return
        super().process_event(event)

    def _bbx_handle(self, payload: bytes | bytearray | memoryview, binary: bool) -> None:
        server = self.bbx_server
        assert server is not None
        client = server._client_for(self)
        if not client.closing and not client.rejected:
            server._on_frame(client, payload, binary)

    def _bbx_consume(self, data: bytes) -> None:
        """Handles the whole frames in `data`; keeps an incomplete tail for later."""
        assert self.bbx_server is not None
        max_size = self.bbx_server.config.max_message_size
        budget = _FRAMES_PER_TURN
        pos, n = 0, len(data)
        while n - pos >= 2:
            b0, b1 = data[pos], data[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
            if not b1 & 0x80 or length > max_size:
                # Unmasked or oversize: websockets fails the connection (1002 / 1009).
                super().data_received(data[pos:])
                return
            head += 4
            end = pos + head + length
            if end > n:
                break
            if b0 == 0x81 or b0 == 0x82:  # FIN, no RSV bits, text or binary
                if budget == 0:
                    self._bbx_waiting = data[pos:]
                    self.transport.pause_reading()
                    self.loop.call_soon(self._bbx_continue)
                    return
                budget -= 1
                mask = data[pos + head - 4 : pos + head]
                self._bbx_handle(apply_mask(data[pos + head : end], mask), b0 == 0x82)
            else:
                super().data_received(data[pos:end])  # control frames, fragments
                if self.protocol.state is not OPEN:
                    if end < n:
                        super().data_received(data[end:])
                    return
            pos = end
        self._bbx_partial = data[pos:]

    def _bbx_continue(self) -> None:
        data, self._bbx_waiting = self._bbx_waiting, None
        if data is None:
            return
        if self.protocol.state is OPEN:
            self._bbx_consume(data)
        else:
            super().data_received(data)  # closing meanwhile: websockets reads the rest
        if self._bbx_waiting is None:
            with contextlib.suppress(Exception):
                self.transport.resume_reading()


def _abort_if_open(ws: ServerConnection) -> None:
    """The close handshake did not finish in time: drop the TCP connection."""
    if ws.protocol.state is not State.CLOSED and ws.transport is not None:
        ws.transport.abort()


class _Client:
    """Per-connection state. Slotted: hundreds of these live at once."""

    __slots__ = (
        "ws",
        "address",
        "seat",
        "node_str",
        "error_tokens",
        "error_time",
        "errors",
        "messages_in",
        "messages_out",
        "dropped",
        "pending",
        "viz",
        "queue",
        "last_flush",
        "last_pong",
        "rtt_us",
        "estimator",
        "closing",
        "replaced",
        "rejected",
    )

    def __init__(self, ws: ServerConnection, address: str, budget: int, now: float) -> None:
        self.ws = ws
        self.address = address
        self.seat: Seat | None = None
        self.node_str: str | None = None
        self.error_tokens = float(budget)
        self.error_time = now
        self.errors = 0
        self.messages_in = 0
        self.messages_out = 0
        self.dropped = 0
        self.pending: dict[str, bytes] | None = None  # param -> coalesced update frame
        self.viz: bytes | None = None  # newest visualization frame not yet sent
        self.queue: deque[bytes] | None = None  # other frames waiting for a slow client
        self.last_flush = -math.inf  # loop time of the last update frame
        self.last_pong = now
        self.rtt_us: float | None = None
        self.estimator: OffsetEstimator | None = None
        self.closing = False
        self.replaced = False
        self.rejected = False  # over max_connections: told SERVER_FULL, then closed

    def is_slow(self) -> bool:
        transport = self.ws.transport
        return transport is None or transport.get_write_buffer_size() > _WRITE_HIGH


class WsServer:
    """Room-based WebSocket server feeding a NetBufferProducer.

    Args:
        config: the server's configuration.
        producer: the ring's producing end; this server becomes its producer thread.
        commands: where the host's commands come from (a CommandChannel). None
            creates one, available as `server.commands`.

    Attributes:
        clock: the server clock (`ClockSync`); timestamps and `at` use it.
        commands: the CommandChannel this server listens to.
    """

    def __init__(
        self,
        config: WsServerConfig,
        producer: NetBufferProducer,
        commands: CommandChannel | None = None,
    ) -> None:
        self.config = config
        self.producer = producer
        self.commands = commands if commands is not None else CommandChannel()
        self.clock = ClockSync()
        self._specs: dict[str, ParamSpec] = {p.name: p for p in config.params}
        self._values: dict[str, float] = {p.name: float(p.value) for p in config.params}
        self._hashes: dict[str, int] = {p.name: hash_param_name(p.name) for p in config.params}
        self._rooms = RoomRegistry(config.room, config.resume_grace, config.max_rooms)
        self._throttle = JoinThrottle(config.join_burst, config.join_per_hour)
        self._connections: set[_Client] = set()
        self._by_node: dict[NodeId, _Client] = {}
        self._room_clients: dict[str, set[_Client]] = {}
        self._dirty: set[_Client] = set()
        self._listeners: list[Callable[[ParamEvent | TriggerEvent], None]] = []
        self._horizon_us = int(config.schedule_horizon * 1e6)
        self._flush_interval = 1.0 / config.update_rate
        self._accepted = 0
        self._refused = 0
        self._errors = 0
        self._internal_errors = 0
        self._lock = threading.Lock()  # guards _loop / _stopping against _submit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._shutdown_requested = False
        self._server: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._port: int | None = None
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self.commands._attach(self)

    # ---- public ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port (after start); the configured one before."""
        return self._port if self._port is not None else self.config.port

    @property
    def sockets(self) -> list[Any]:
        """The listening sockets (after start)."""
        return [] if self._server is None else list(self._server.sockets)

    def add_listener(self, listener: Callable[[ParamEvent | TriggerEvent], None]) -> None:
        """Calls `listener(event)` on the loop thread for every accepted param/trigger.

        Keep it quick: it runs inline with message handling. Exceptions are logged.
        """
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[ParamEvent | TriggerEvent], None]) -> None:
        self._listeners.remove(listener)

    def param_values(self) -> dict[str, float]:
        """Current value of every parameter the server knows."""
        return dict(self._values)

    def rooms(self) -> list[str]:
        """Codes of the open rooms."""
        return self._rooms.codes()

    def client_stats(self) -> list[ClientStats]:
        """A snapshot of every connection (joined or not)."""
        out = []
        for c in list(self._connections):
            est = c.estimator
            out.append(
                ClientStats(
                    node_id=c.node_str,
                    room_code=c.seat.room_code if c.seat else None,
                    client_name=c.seat.client_name if c.seat else None,
                    address=c.address,
                    round_trip_us=c.rtt_us,
                    clock_offset_us=None if est is None else est.offset_us,
                    messages_in=c.messages_in,
                    messages_out=c.messages_out,
                    dropped=c.dropped,
                    errors=c.errors,
                )
            )
        return out

    def stats(self) -> ServerStats:
        """A snapshot of the server's counters."""
        p = self.producer
        return ServerStats(
            connections=len(self._connections),
            clients=len(self._by_node),
            rooms=len(self._rooms),
            ring_len=len(p),
            ring_capacity=p.capacity,
            ring_dropped=p.dropped,
            accepted=self._accepted,
            refused=self._refused,
            errors=self._errors,
            internal_errors=self._internal_errors,
        )

    async def start(self) -> None:
        """Binds the port and starts serving; returns once listening."""
        if self._server is not None:
            raise BbxNetError("server already started")
        loop = asyncio.get_running_loop()
        self.producer.rebind_thread()  # the loop thread is the ring's producer from now

        static = StaticFiles() if self.config.serve_static else None
        host, port = self.config.host, self.config.port
        origins: Any = None
        if self.config.allowed_origins is not None:
            origins = [None if o in ("", "null") else o for o in self.config.allowed_origins]
        owner = self

        class Connection(_Connection):
            bbx_server = owner

        self._server = await serve(
            self._handle,
            host or None,
            port,
            create_connection=Connection,
            process_request=static.process_request if static else None,
            origins=origins,
            compression=None,  # tiny JSON: deflate costs memory and CPU for nothing
            open_timeout=self.config.handshake_timeout,
            ping_interval=None,  # one keepalive task for all (see _keepalive)
            ping_timeout=None,
            close_timeout=min(5.0, self.config.connection_timeout),
            max_size=self.config.max_message_size,
            max_queue=16,
            write_limit=_WRITE_HIGH,
            ssl=self.config.ssl_context,
            backlog=self.config.backlog,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._stop = asyncio.Event()
        with self._lock:
            self._loop = loop
            stop_now = self._shutdown_requested
        if stop_now:
            self._stop.set()
        self._tasks = [
            loop.create_task(self._keepalive(), name="bbx-keepalive"),
            loop.create_task(self._housekeeping(), name="bbx-housekeeping"),
            loop.create_task(self._flusher(), name="bbx-flusher"),
        ]
        logger.info("listening on %s:%d", host, self._port)

    async def stop(self) -> None:
        """Sends `closed` to every client, closes every connection, stops listening.

        Clients get a moment (`_CLOSE_GRACE`) to answer the close; stalled ones are
        then cut off, so a phone that stopped reading cannot hold the shutdown up.
        """
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close(close_connections=False)
        with self._lock:
            self._shutdown_requested = True
        frame = encode_closed("shutdown")
        for c in list(self._connections):
            self._send(c, frame)
            self._close(c, _GOING_AWAY, "server shutdown")
        try:
            await asyncio.wait_for(server.wait_closed(), _CLOSE_GRACE)
        except TimeoutError:
            for c in list(self._connections):
                if c.ws.transport is not None:
                    c.ws.transport.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), _CLOSE_GRACE)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        with self._lock:
            self._loop = None

    async def run(self) -> None:
        """Serves until a Shutdown command (or cancellation), then closes everything."""
        if self._server is None:
            await self.start()
        assert self._stop is not None
        try:
            await self._stop.wait()
        finally:
            await asyncio.shield(self.stop())

    # ---- commands --------------------------------------------------------------------

    def _submit(self, command: Command) -> None:
        """Any thread: runs `command` on the loop, or at once if not serving yet."""
        with self._lock:
            loop = self._loop
            if loop is None:
                # Not serving: no connection exists, so commands are plain state changes.
                try:
                    self._dispatch(command)
                finally:
                    self.commands._done()
                return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.call_soon(self._dispatch_and_release, command)
        else:
            loop.call_soon_threadsafe(self._dispatch_and_release, command)

    def _dispatch_and_release(self, command: Command) -> None:
        try:
            self._dispatch(command)
        except Exception:  # a host's bad command must not kill the loop
            self._internal_errors += 1
            logger.exception("command %r failed", command)
        finally:
            self.commands._done()

    def _dispatch(self, command: Command) -> None:
        if isinstance(command, BroadcastParam):
            self._broadcast_param(command.name, command.value)
        elif isinstance(command, BroadcastVisualization):
            self._broadcast_visualization(command.data)
        elif isinstance(command, CreateRoom):
            try:
                code = self._rooms.create(time.monotonic())
            except BbxNetError as exc:
                command.response.set_exception(exc)
            else:
                command.response.set_result(code)
        elif isinstance(command, CloseRoom):
            self._close_room(command.code, "closed")
        elif isinstance(command, Shutdown):
            self._shutdown_requested = True
            if self._stop is not None:
                self._stop.set()

    def _broadcast_param(self, name: str, value: float) -> None:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"BroadcastParam {name}: value must be finite")
        spec = self._specs.get(name)
        if spec is not None:
            value = spec.clamp(value)
        self._values[name] = value
        frame = encode_update(name, value)
        # The host sets its own pace: sent at once to every client that keeps up
        # (superseding any older coalesced echo of this parameter), coalesced for
        # slow ones.
        fast = []
        for c in self._by_node.values():
            if c.queue or c.is_slow():
                self._coalesce(c, name, frame)
            else:
                if c.pending is not None:
                    c.pending.pop(name, None)
                fast.append(c)
                c.messages_out += 1
        if fast:
            broadcast([c.ws for c in fast], frame, text=True)
        self._notify(ParamEvent(name, value, None, None, None, self.clock.now_us(), True))

    def _broadcast_visualization(self, data: Any) -> None:
        frame = encode_visualization(data)
        fast = []
        for c in self._by_node.values():
            if c.queue or c.is_slow():
                if c.viz is not None:
                    c.dropped += 1  # the older frame is stale now
                c.viz = frame
                self._dirty.add(c)
            else:
                fast.append(c)
                c.messages_out += 1
        if fast:
            broadcast([c.ws for c in fast], frame, text=True)

    def _close_room(self, code: str, reason: str) -> None:
        members = self._room_clients.pop(code, set())
        self._rooms.close(code)
        frame = encode_closed(reason)
        for c in members:
            self._send(c, frame)
            self._detach(c)
            self._close(c, _NORMAL, f"room {reason}")

    # ---- connections -----------------------------------------------------------------

    def _client_for(self, ws: ServerConnection) -> _Client:
        """The per-connection state, created on the connection's first event."""
        client = getattr(ws, "bbx_client", None)
        if client is None:
            peer = ws.remote_address
            address = str(peer[0]) if peer else "?"
            client = _Client(ws, address, self.config.error_budget, self._now())
            if len(self._connections) >= self.config.max_connections:
                client.rejected = True
            else:
                self._connections.add(client)
            ws.bbx_client = client  # type: ignore[attr-defined]
        return client

    async def _handle(self, ws: ServerConnection) -> None:
        client = self._client_for(ws)
        if client.rejected:
            self._send(client, encode_error(SERVER_FULL, "Server is full, try again later"))
            await ws.close(_TRY_LATER, "server full")
            return
        try:
            # Complete frames are handled in _Connection.process_event; only
            # fragmented messages arrive here.
            async for frame in ws:
                if client.closing:
                    break
                self._on_frame(client, frame, not isinstance(frame, str))
        except ConnectionClosed:
            pass
        except Exception:
            self._internal_errors += 1
            logger.exception("connection handler failed for %s", client.address)
        finally:
            await self._closed(client)

    async def _closed(self, client: _Client) -> None:
        """The connection is over: wait for the socket, then release the client."""
        with contextlib.suppress(Exception):
            await client.ws.wait_closed()
        self._connections.discard(client)
        self._dirty.discard(client)
        if client.seat is not None and not client.replaced:
            self._rooms.drop(client.seat.node_id, time.monotonic())
        self._detach(client)

    def _on_frame(
        self, client: _Client, frame: str | bytes | bytearray | memoryview, binary: bool
    ) -> None:
        client.messages_in += 1
        try:
            message = parse_client_message(frame, binary=binary)
            if isinstance(message, Param):
                self._on_param(client, message)
            elif isinstance(message, Trigger):
                self._on_trigger(client, message)
            elif isinstance(message, Ping):
                self._on_ping(client, message)
            elif isinstance(message, Join):
                self._on_join(client, message)
            elif isinstance(message, Sync):
                self._require_joined(client)
                self._send(client, self._state_frame())
            elif isinstance(message, Leave):
                self._on_leave(client)
        except ProtocolError as exc:
            self._on_error(client, exc)
        except Exception:
            self._internal_errors += 1
            logger.exception("failed to handle a frame from %s", client.address)

    def _on_error(self, client: _Client, exc: ProtocolError) -> None:
        self._errors += 1
        client.errors += 1
        if self._debug:
            logger.debug("%s: %s", client.address, exc)
        self._send(client, encode_error(exc.code, exc.message))
        now = self._now()
        tokens = (
            min(float(self.config.error_budget), client.error_tokens + (now - client.error_time))
            - 1.0
        )
        client.error_tokens, client.error_time = tokens, now
        if tokens < 0:
            self._close(client, _POLICY, "too many invalid messages")

    def _require_joined(self, client: _Client) -> Seat:
        if client.seat is None:
            raise ProtocolError(NOT_JOINED, "Send join first")
        return client.seat

    def _on_join(self, client: _Client, msg: Join) -> None:
        if client.seat is not None:
            raise ProtocolError(ALREADY_JOINED, "Already joined a room")
        now = time.monotonic()
        if not self._throttle.allows(client.address, now):
            wait = self._throttle.retry_after(client.address, now)
            raise ProtocolError(RATE_LIMITED, f"Too many failed joins; retry in {wait:.0f} s")
        try:
            result = self._rooms.join(msg.room_code, now, msg.session, msg.client_name)
        except ProtocolError as exc:
            if exc.code == INVALID_ROOM:
                self._throttle.failed(client.address, now)
            raise
        seat = result.seat
        if result.replaced:
            old = self._by_node.get(seat.node_id)
            if old is not None:
                old.replaced = True
                self._detach(old)
                self._close(old, _NORMAL, "replaced by a newer connection")
        client.seat = seat
        client.node_str = str(seat.node_id)
        client.estimator = OffsetEstimator(window=8)
        self._by_node[seat.node_id] = client
        self._room_clients.setdefault(seat.room_code, set()).add(client)
        self._send(client, encode_welcome(client.node_str, self.clock.now_us(), seat.token))
        self._send(client, self._state_frame())

    def _on_leave(self, client: _Client) -> None:
        seat = self._require_joined(client)
        self._rooms.leave(seat.node_id)
        self._detach(client)
        self._close(client, _NORMAL, "left")

    def _on_param(self, client: _Client, msg: Param) -> None:
        seat = self._require_joined(client)
        spec = self._specs.get(msg.param)
        value = msg.value
        if spec is not None:
            value = spec.clamp(value)
        elif self._specs:
            raise ProtocolError(UNKNOWN_PARAM, f"Unknown parameter {msg.param[:64]!r}")
        now_us = self.clock.now_us()
        check_at(msg.at, now_us, self._horizon_us)
        h = self._hashes.get(msg.param)
        if h is None:
            h = hash_param_name(msg.param)
        node = seat.node_id
        ts = msg.at if msg.at is not None else now_us
        queued = self.producer.try_send_param(h, value, node.high, node.low, ts, msg.at is not None)
        if queued:
            self._accepted += 1
        else:
            self._refused += 1
        self._values[msg.param] = value
        members = self._room_clients.get(seat.room_code)
        if members is not None and len(members) > 1:
            frame = encode_update(msg.param, value)
            now = self._now()
            for other in members:
                if other is not client:
                    self._queue_update(other, msg.param, frame, now)
        if self._listeners:
            self._notify(
                ParamEvent(msg.param, value, client.node_str, seat.room_code, msg.at, ts, queued)
            )

    def _on_trigger(self, client: _Client, msg: Trigger) -> None:
        seat = self._require_joined(client)
        now_us = self.clock.now_us()
        check_at(msg.at, now_us, self._horizon_us)
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
            self._notify(
                TriggerEvent(
                    msg.name,
                    msg.x,
                    msg.y,
                    client.node_str or "",
                    seat.room_code,
                    msg.at,
                    ts,
                    queued,
                )
            )

    def _on_ping(self, client: _Client, msg: Ping) -> None:
        self._require_joined(client)
        now_us = self.clock.now_us()
        self._send(client, encode_pong(msg.client_time, now_us))
        # Offset from one message: the client stamped client_time (µs) about half a
        # round trip before we received it. Modelled as an exchange the server
        # started rtt ago, so the estimator's lowest-delay filter applies.
        if client.rtt_us is not None and client.estimator is not None:
            rtt = client.rtt_us
            ct = float(msg.client_time)
            with contextlib.suppress(ValueError):
                client.estimator.add_sample(now_us - rtt, ct, ct, now_us)

    # ---- sending ---------------------------------------------------------------------

    def _send(self, client: _Client, frame: bytes) -> None:
        """Queues one frame for one client without waiting."""
        if client.queue or client.is_slow():
            q = client.queue
            if q is None:
                q = client.queue = deque()
            if len(q) >= self.config.broadcast_capacity:
                q.popleft()
                client.dropped += 1
            q.append(frame)
            self._dirty.add(client)
            return
        client.messages_out += 1
        broadcast((client.ws,), frame, text=True)

    def _queue_update(self, client: _Client, name: str, frame: bytes, now: float) -> None:
        """An `update` for one client: now if allowed, else coalesced to the latest."""
        pending = client.pending
        if (
            pending is None
            and now - client.last_flush >= self._flush_interval
            and not client.queue
            and not client.is_slow()
        ):
            client.last_flush = now
            client.messages_out += 1
            broadcast((client.ws,), frame, text=True)
            return
        self._coalesce(client, name, frame)

    def _coalesce(self, client: _Client, name: str, frame: bytes) -> None:
        """Keeps only the newest `update` per parameter until the client can take it."""
        pending = client.pending
        if pending is None:
            pending = client.pending = {}
        if name in pending:
            client.dropped += 1  # the older value is superseded
        pending[name] = frame
        self._dirty.add(client)

    def _flush(self, now: float) -> None:
        """Writes what slow or rate-limited clients are owed, as far as they can take."""
        for c in list(self._dirty):
            if c.ws.protocol.state is not State.OPEN:
                self._dirty.discard(c)
                continue
            q = c.queue
            while q and not c.is_slow():
                c.messages_out += 1
                broadcast((c.ws,), q.popleft(), text=True)
            if q or c.is_slow():
                continue
            if c.pending is not None and now - c.last_flush >= self._flush_interval:
                frames = list(c.pending.values())
                c.pending = None
                c.last_flush = now
                c.messages_out += len(frames)
                for frame in frames:
                    broadcast((c.ws,), frame, text=True)
            if c.viz is not None and not c.is_slow():
                c.messages_out += 1
                broadcast((c.ws,), c.viz, text=True)
                c.viz = None
            if c.pending is None and c.viz is None and not c.queue:
                self._dirty.discard(c)

    def _close(self, client: _Client, code: int, reason: str) -> None:
        """Starts a clean close without waiting; cuts the connection if it stalls."""
        client.closing = True
        ws = client.ws
        if ws.protocol.state is State.OPEN:
            with contextlib.suppress(Exception):
                ws.protocol.send_close(code, reason)
                ws.send_data()
        if self._loop is not None and ws.transport is not None:
            self._loop.call_later(_CLOSE_GRACE, _abort_if_open, ws)

    def _detach(self, client: _Client) -> None:
        """Removes a client from the room indexes (its seat is handled by the caller)."""
        seat = client.seat
        if seat is None:
            return
        if self._by_node.get(seat.node_id) is client:
            del self._by_node[seat.node_id]
        members = self._room_clients.get(seat.room_code)
        if members is not None:
            members.discard(client)
        client.seat = None
        client.pending = None
        client.viz = None

    def _state_frame(self) -> bytes:
        states = []
        for name, value in self._values.items():
            spec = self._specs.get(name)
            if spec is not None:
                states.append(ParamState(name, value, spec.min, spec.max))
        return encode_state(states, self.config.triggers)

    def _notify(self, event: ParamEvent | TriggerEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                self._internal_errors += 1
                logger.exception("listener %r failed", listener)

    def _now(self) -> float:
        loop = self._loop
        return loop.time() if loop is not None else time.monotonic()

    # ---- background tasks (one each for the whole server) ----------------------------

    async def _keepalive(self) -> None:
        """Pings every client each ping_interval; drops those silent past the timeout."""
        interval = self.config.ping_interval
        timeout = self.config.connection_timeout
        while True:
            await asyncio.sleep(interval)
            now = self._now()
            for c in list(self._connections):
                if c.closing:
                    continue
                if now - c.last_pong > timeout:
                    logger.info("dropping %s: no pong for %.1f s", c.address, now - c.last_pong)
                    c.closing = True
                    if c.ws.transport is not None:
                        c.ws.transport.abort()
                    continue
                if c.is_slow() or c.ws.protocol.state is not State.OPEN:
                    continue
                try:
                    waiter = await c.ws.ping()
                except ConnectionClosed:
                    continue
                asyncio.ensure_future(waiter).add_done_callback(self._pong_callback(c))

    def _pong_callback(self, client: _Client) -> Callable[[asyncio.Future[float]], None]:
        def on_pong(fut: asyncio.Future[float]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                return
            client.last_pong = self._now()
            client.rtt_us = fut.result() * 1e6

        return on_pong

    async def _housekeeping(self) -> None:
        """Closes expired rooms and frees seats whose resume grace ran out."""
        while True:
            await asyncio.sleep(min(1.0, self.config.room.expiration / 4))
            now = time.monotonic()
            for code in self._rooms.expired(now):
                logger.info("room %s expired", code)
                self._close_room(code, "expired")
            self._rooms.purge(now)

    async def _flusher(self) -> None:
        """Writes coalesced updates and queued frames at the update rate."""
        interval = self._flush_interval
        while True:
            await asyncio.sleep(interval / 2)
            if self._dirty:
                try:
                    self._flush(self._now())
                except Exception:
                    self._internal_errors += 1
                    logger.exception("flush failed")
