"""The asyncio transport: moves bytes and timers between sockets and the session core.

Each connection is an `asyncio.Protocol` driving websockets' sans-I/O `ServerProtocol`
through its public API only: bytes in with `receive_data`, events out with
`events_received`, bytes to write with `data_to_send`. Every event is handled
synchronously inside `data_received`, in the order it arrived, so replies leave in
the order of their requests however the bytes were framed or split, and data that
arrives in the same TCP write as the handshake is answered. websockets does the
RFC 6455 work (control frames, close handshake, fragment order, sizes, reserved bits
and opcodes); this module joins fragments, lets the session core check that text is
UTF-8 (it closes with 1007 otherwise, as websockets' own asyncio server does), and
hands whole messages to the `Session`, which holds every rule. One fast path of our
own: whole, unfragmented, masked data frames within max_size (what phones send) are
cut from the stream and unmasked here, runs of text frames in C
(`_wsframes.unmask_run`); every other frame goes to websockets whole, so its parser
always stands at a frame boundary. tests/test_conformance.py proves the
outcome identical to websockets' own server, case by case.

Flow control: the transport's pause_writing / resume_writing signals switch the
client's outbox between writing and holding; nothing polls buffer sizes. Work per
read is bounded: after `_EVENTS_PER_TURN` events (control frames count) reading
pauses and the rest waits for a later loop turn.

Threading: everything runs on the event loop's thread, except the command wake-up
(any thread) and the read-only stats snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from .._clock import ClockSync
from .._ring import NetBufferProducer, VizReader
from .._wsframes import skip_frames, unmask_frame, unmask_run
from ..errors import BbxNetError
from .commands import BroadcastVisualization, CommandChannel
from .config import WsServerConfig
from .session import ClientStats, ParamEvent, Peer, ServerStats, Session, TriggerEvent
from .static import StaticFiles

__all__ = ["ClientStats", "ParamEvent", "ServerStats", "TriggerEvent", "WsServer"]

logger = logging.getLogger(__name__)

#: Bytes waiting in a client's transport above which its outbox holds messages.
_WRITE_HIGH = 64 * 1024
#: Work per connection per loop turn, in events (frames of any kind; see below).
_EVENTS_PER_TURN = 512
#: A control frame's share of that budget: each goes through websockets' parser and
#: most are answered, so a ping flood gets fewer frames per turn than phone messages.
_CONTROL_COST = 8
_CONTROL = frozenset({Opcode.PING, Opcode.PONG, Opcode.CLOSE})
#: Fragments one message may have (websockets' own server fails more with 1009).
_MAX_FRAGMENTS = 4096
#: Bytes of an opening handshake request before websockets alone handles it.
_MAX_REQUEST = 16 * 1024
#: Pings a client may send while its outgoing buffer is above the high-water mark
#: (their pongs pile up unread); one more fails the connection with 1008.
_MAX_PENDING_PONGS = 16
#: Seconds a closing client has to finish the close handshake before it is cut.
_CLOSE_GRACE = 2.0


def _method_not_allowed() -> Response:
    body = b"405 Method Not Allowed: GET or HEAD only\n"
    headers = Headers(
        [
            ("Allow", "GET, HEAD"),
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    return Response(405, "Method Not Allowed", headers, body)


class _Connection(asyncio.Protocol):
    """One TCP connection: a websockets ServerProtocol plus the session's Sink."""

    __slots__ = (
        "server",
        "ws",
        "transport",
        "peer",
        "address",
        "_fragments",
        "_binary",
        "_events",
        "_receiving",
        "_timer",
        "_loop",
        "_buffer",
        "_owed",
        "_fast",
        "_max_size",
        "_out",
        "_write_paused",
        "_pending_pongs",
        "_head",
        "_answered",
    )

    def __init__(self, server: WsServer) -> None:
        self.server = server
        self.ws = ServerProtocol(
            origins=server._origins,
            max_size=server.config.max_message_size,
            logger=logger,
        )
        self.transport: asyncio.Transport | None = None
        # Counted from creation to connection_lost: also while accepted but not yet
        # given its transport, which stop() must outwait.
        server._connections.add(self)
        self.peer: Peer | None = None
        self.address = "?"
        self._fragments: list[bytes | bytearray | memoryview] | None = (
            None  # a fragmented message so far
        )
        self._binary = False
        self._events: list[Any] | None = None  # events left for a later turn
        self._receiving = False  # inside data_received: writes are batched
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()  # made by the loop's server factory
        self._buffer = b""  # bytes not yet given to anyone: an incomplete frame or request
        self._owed = 0  # bytes of a frame already started inside websockets' parser
        self._fast = True  # False: every byte goes to websockets (see data_received)
        self._max_size = server.config.max_message_size
        self._out: list[bytes] = []  # replies to this read, written when it is done
        self._write_paused = False  # the transport's buffer is above _WRITE_HIGH
        self._pending_pongs = 0  # pings answered while _write_paused
        self._head = False  # the request is a HEAD: answered without a body
        self._answered = False  # the (first) HTTP request has its response

    # ---- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is duck-typed
        if self.server._stopping:
            # Accepted before stop() closed the listener but made only now: it goes
            # at once (stop() waits for its connection_lost).
            transport.abort()  # type: ignore[attr-defined]  # a Transport, as above
            return
        self.transport.set_write_buffer_limits(high=_WRITE_HIGH)  # type: ignore[union-attr]
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"
        timeout = self.server.config.handshake_timeout
        self._timer = self._loop.call_later(timeout, self._handshake_late)

    def data_received(self, data: bytes) -> None:
        # The fast path: whole, unfragmented, masked data frames are cut out of the
        # stream here, unmasked and handed to the session directly, without
        # websockets' generator-based parser. Every other frame is handed to
        # websockets whole (or, while it is incomplete, byte for byte as it arrives,
        # with `_owed` counting the rest), so websockets' parser is always at a frame
        # boundary when the fast path runs. The fast path only takes frames that
        # websockets would accept unchanged (FIN, no RSV bit, text or binary, masked,
        # within max_size, no fragmented message open); tests/test_conformance.py
        # proves the outcome identical to websockets' own server.
        if self._events is not None or not self._fast:
            if self._events is not None and self._fast:
                self._buffer += data  # paused with work left: keep the order
                return
            self.ws.receive_data(data)
            if self._events is None:
                self._handle(self.ws.events_received())
            return
        if self._buffer:
            data, self._buffer = self._buffer + data, b""
        if self.ws.state is State.CONNECTING:
            self._handshake(data)
        else:
            self._consume(data)

    def _handshake(self, data: bytes) -> None:
        """Feeds websockets the request once it is whole (bytes after it: see below)."""
        if self._answered:
            return  # more HTTP after the response that closes the connection: unread
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > _MAX_REQUEST:
                self._fast = False  # websockets refuses it; let it see everything
                self.ws.receive_data(data)
                self._handle(self.ws.events_received())
            else:
                self._buffer = data
            return
        # websockets parses GET requests only: HEAD is parsed as the GET it mirrors
        # (and answered without a body), other methods get 405 here.
        method = data[: data.find(b" ", 0, 16)]
        if method == b"HEAD":
            self._head = True
            data, end = b"GET" + data[4:], end - 1
        elif method != b"GET" and method.isalpha():
            self._answered = True
            self.ws.send_response(_method_not_allowed())
            self._fast = False
            self._send_data()
            return
        if end + 4 < len(data):
            if b"websocket" not in data[:end].lower():
                # Plain HTTP with more bytes behind it (pipelined requests): the first
                # is answered and the connection closes; the rest is not read.
                data = data[: end + 4]
            # Frames in the same write as the handshake: websockets parses them with
            # the request (and, as its own server does, drops a pong it would owe
            # before the handshake is answered). Rare (phones wait for the 101), so
            # this connection simply stays on websockets' parser.
            self._fast = False
        self.ws.receive_data(data)
        self._handle(self.ws.events_received())

    def _consume(self, data: bytes) -> None:
        """Handles the frames in `data` in order, within the per-turn budget."""
        server = self.server
        session = server._session
        receive = session.receive
        ws = self.ws
        now_us = server.clock.now_us()
        pos, n = 0, len(data)
        budget = _EVENTS_PER_TURN
        self._receiving = True
        try:
            while pos < n:
                if self._owed:
                    take = min(self._owed, n - pos)
                    self._owed -= take
                    budget -= self._feed(data[pos : pos + take], session, now_us)
                    pos += take
                    continue
                if ws.state is not State.OPEN or self.peer is None:
                    self._feed(data[pos:], session, now_us)  # closing: websockets reads
                    pos = n
                    break
                if budget <= 0:
                    self._buffer = data[pos:]
                    self._events = []
                    if self.transport is not None:
                        self.transport.pause_reading()
                    self._loop.call_soon(self._continue)
                    break
                if self._fragments is None:
                    # The common case, in C: a run of whole masked text frames.
                    run, after = unmask_run(data, pos, self._max_size, budget)
                    if run:
                        peer = self.peer
                        done = 0
                        for done, payload in enumerate(run, 1):  # noqa: B007 (read after)
                            receive(peer, payload, now_us)
                            if peer.closing:
                                break
                        budget -= done
                        if done < len(run):  # closed by one: websockets reads the rest
                            after = skip_frames(data, pos, done, self._max_size)
                        pos = after
                        continue
                if n - pos < 2:
                    break
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
                end = pos + head + 4 + length
                if (
                    (b0 == 0x81 or b0 == 0x82)
                    and b1 & 0x80
                    and length <= self._max_size
                    and self._fragments is None
                ):
                    if end > n:
                        break  # wait for the rest of this frame (at most max_size)
                    # A whole text frame here was the run's; what is left is binary.
                    budget -= 1
                    payload = unmask_frame(data, pos + head + 4, end)
                    receive(self.peer, payload, now_us, binary=True)
                    pos = end
                    continue
                # Anything else: websockets gets the frame as it is, as far as it came.
                if not b1 & 0x80 or length > self._max_size or end > n:
                    if b1 & 0x80 and length <= self._max_size:
                        self._owed = end - n
                    budget -= self._feed(data[pos:], session, now_us)
                    pos = n
                    break
                budget -= self._feed(data[pos:end], session, now_us)
                pos = end
            else:
                pos = n
            if pos < n and self._events is None:
                self._buffer = data[pos:]  # an incomplete frame: the rest comes later
        finally:
            self._receiving = False
        self._send_data()
        server._after_session()

    def _feed(self, data: bytes, session: Session, now_us: int) -> int:
        """Gives websockets `data`; handles its events now. Returns their cost.

        On the wire, replies to this read's earlier messages go before what websockets
        answers to `data` (a pong), unless `data` closed the connection: then they
        are dropped, as websockets' own server drops them.
        """
        ws = self.ws
        before = ws.data_to_send()
        ws.receive_data(data)
        events = ws.events_received()
        answers = ws.data_to_send()
        replies: list[bytes] = []
        if self._out:
            if ws.state is State.OPEN:
                for message in self._out:
                    ws.send_text(message)
                replies = ws.data_to_send()
            self._out.clear()
        self._write(before + replies + answers)
        cost = 0
        for event in events:
            if isinstance(event, Frame):
                cost += _CONTROL_COST if event.opcode in _CONTROL else 1
                self._on_frame(event, session, now_us)
            else:
                cost += 1
        return cost

    def eof_received(self) -> bool | None:
        if self._buffer and self._events is None:
            data, self._buffer = self._buffer, b""
            self.ws.receive_data(data)  # an incomplete frame or request, then EOF
            self._handle(self.ws.events_received())
        self.ws.receive_eof()
        if self._events is None:
            self._handle(self.ws.events_received())
        return None  # let asyncio close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.peer is not None:
            self.server._session.closed(self.peer, self.server.clock.now_us())
            self.server._after_session()
        self.transport = None

    def pause_writing(self) -> None:
        # A client that does not read is not read either: whatever it sends (pings
        # above all, whose pongs would pile up here) waits in its own socket buffers.
        self._write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()
        if self.peer is not None:
            self.server._session.paused(self.peer)

    def resume_writing(self) -> None:
        self._write_paused = False
        self._pending_pongs = 0
        if self.transport is not None and self._events is None:
            with contextlib.suppress(Exception):
                self.transport.resume_reading()
        if self.peer is not None:
            self.server._session.resumed(self.peer, self.server.clock.now_us())
            self._send_data()
            self.server._after_session()

    # ---- the session's Sink -------------------------------------------------------------

    def write(self, message: bytes) -> None:
        if self._receiving:
            # Replies wait for the end of the read: if the same read closed the
            # connection (a close frame, a protocol error), they are not sent, as
            # websockets' own server, whose handler runs after the read, cannot.
            self._out.append(message)
            return
        ws = self.ws
        if ws.state is State.OPEN:
            ws.send_text(message)
            self._send_data()

    def close(self, code: int, reason: str, fail: bool = False) -> None:
        self._write_out()
        ws = self.ws
        if ws.state is State.OPEN:
            if fail:
                ws.fail(code, reason)
            else:
                ws.send_close(code, reason)
            if not self._receiving:
                self._send_data()
        self._close_timer()

    def ping(self, payload: bytes) -> None:
        if self.ws.state is State.OPEN:
            self.ws.send_ping(payload)
            self._send_data()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # ---- private ------------------------------------------------------------------------

    def _handle(self, events: list[Any]) -> None:
        """Handles events in order, within _EVENTS_PER_TURN; the rest waits a turn."""
        server = self.server
        session = server._session
        now_us = server.clock.now_us()
        budget = _EVENTS_PER_TURN
        self._receiving = True
        try:
            for i, event in enumerate(events):
                if budget <= 0:
                    self._events = events[i:]
                    if self.transport is not None:
                        self.transport.pause_reading()
                    self._loop.call_soon(self._continue)
                    break
                if isinstance(event, Frame):
                    budget -= _CONTROL_COST if event.opcode in _CONTROL else 1
                    self._on_frame(event, session, now_us)
                elif isinstance(event, Request):
                    self._on_request(event, session, now_us)
        finally:
            self._receiving = False
        self._send_data()
        server._after_session()

    def _continue(self) -> None:
        events, self._events = self._events, None
        if events is None:
            return
        if self._fast:
            data, self._buffer = self._buffer, b""
            if data:
                self._consume(data)
        else:
            events.extend(self.ws.events_received())  # what arrived meanwhile, in order
            self._handle(events)
        if self._events is None and self.transport is not None and not self._write_paused:
            with contextlib.suppress(Exception):
                self.transport.resume_reading()

    def _on_request(self, request: Request, session: Session, now_us: int) -> None:
        server = self.server
        ws = self.ws
        if self._answered:
            return  # a pipelined request after the first: that one's answer closes
        self._answered = True
        if server._static is not None:
            response = server._static.respond(request)
            if response is not None:
                if self._head:
                    response = dataclasses.replace(response, body=b"")
                ws.send_response(response)
                return
        if self._head:  # HEAD cannot open a WebSocket
            ws.send_response(_method_not_allowed())
            return
        response = ws.accept(request)
        ws.send_response(response)
        if ws.state is not State.OPEN:
            return  # refused (origin, bad handshake): websockets closes
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.peer = session.open(self.address, self, now_us)

    def _on_frame(self, frame: Frame, session: Session, now_us: int) -> None:
        peer = self.peer
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not frame.fin:
                self._fragments = [frame.data]
                self._binary = opcode is Opcode.BINARY
                return
            data, binary = frame.data, opcode is Opcode.BINARY
        elif opcode is Opcode.CONT:
            fragments = self._fragments
            if fragments is None:
                return  # websockets fails the connection (1002) before this
            if len(fragments) >= _MAX_FRAGMENTS:
                self.close(1009, "too many fragments", fail=True)
                self._fragments = None
                return
            fragments.append(frame.data)
            if not frame.fin:
                return
            self._fragments = None
            data, binary = b"".join(fragments), self._binary
        elif opcode is Opcode.PONG:
            if peer is not None:
                session.pong(peer, bytes(frame.data), now_us)
            return
        else:
            # PING is answered and CLOSE echoed by websockets itself.
            if opcode is Opcode.CLOSE:
                self._close_timer()
            elif opcode is Opcode.PING and self._write_paused:
                self._pending_pongs += 1
                if self._pending_pongs > _MAX_PENDING_PONGS:
                    self.close(1008, "too many pings unread", fail=True)
            return
        if peer is None:
            return
        # Messages that arrived before a close frame are still handled, as websockets'
        # own server hands them to its handler; replies to them are not sent (the sink
        # writes only while the connection is open), as there.
        session.receive(peer, data, now_us, binary=binary)

    def _write_out(self) -> None:
        out = self._out
        if out:
            ws = self.ws
            if ws.state is State.OPEN:
                for message in out:
                    ws.send_text(message)
            out.clear()

    def _send_data(self) -> None:
        self._write_out()
        self._write(self.ws.data_to_send())

    def _write(self, chunks: list[bytes]) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in chunks:
            if data:
                transport.write(data)
            else:
                # websockets asks for the end of the stream: the server closes TCP.
                transport.close()
                return

    def _close_timer(self) -> None:
        if self._timer is None and self.transport is not None:
            self._timer = self._loop.call_later(_CLOSE_GRACE, self.abort)

    def _handshake_late(self) -> None:
        self._timer = None
        if self.ws.state is State.CONNECTING:
            self.abort()


class WsServer:
    """Room-based WebSocket server feeding a NetBufferProducer.

    Args:
        config: the server's configuration.
        producer: the ring's producing end; this server becomes its producer thread.
        commands: where the host's commands come from (a CommandChannel). None
            creates one, available as `server.commands`.
        clock: the server clock; None makes one. A server in another process than
            its audio host takes the clock of its shared segment
            (`ClockSync(origin_ns=segment.clock_origin_ns)`).
        viz: the reading end of a visualization ring (`viz_buffer()`, or a shared
            segment's): the frames the audio thread writes are sent to every joined
            client as `visualization`, up to `update_rate` times a second, newest
            frame of each stream only.

    Attributes:
        clock: the server clock (`ClockSync`); the whole session, timestamps and `at`
            use it.
        commands: the CommandChannel this server listens to.
    """

    def __init__(
        self,
        config: WsServerConfig,
        producer: NetBufferProducer,
        commands: CommandChannel | None = None,
        clock: ClockSync | None = None,
        viz: VizReader | None = None,
    ) -> None:
        self.config = config
        self.producer = producer
        self.commands = commands if commands is not None else CommandChannel()
        self.clock = clock if clock is not None else ClockSync()
        self.viz = viz
        self._session = Session(config, producer, self.clock.now_us())
        self._origins: Any = None
        if config.allowed_origins is not None:
            # "" stands for a request without an Origin header; "null" is the literal
            # `Origin: null` that sandboxed frames and file:// pages send.
            self._origins = [None if o == "" else o for o in config.allowed_origins]
        self._static = StaticFiles(config.static_dir) if config.serve_static else None
        if self._static is not None:
            self._static.dynamic["/show.json"] = self._show_json
        self._connections: set[_Connection] = set()  # every protocol until connection_lost
        self._lock = threading.Lock()  # guards _loop against the command wake-up
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._flushing = False
        self._echo_timer: asyncio.TimerHandle | None = None  # at the next echo's due time
        self._echo_due: int | None = None
        self._stopping = False  # stop() began: connections made from now are refused
        self._port: int | None = None
        self._viz_rejected = 0  # frames with NaN/inf from the host, not sent
        self.commands.bind(self._wake)

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

        Keep it quick: it runs inline with message handling. Exceptions are counted as
        internal errors and logged (at most once a minute).
        """
        self._session.add_listener(listener)

    def remove_listener(self, listener: Callable[[ParamEvent | TriggerEvent], None]) -> None:
        self._session.remove_listener(listener)

    def param_values(self) -> dict[str, float]:
        """Current value of every parameter the server knows."""
        return self._session.param_values()

    def rooms(self) -> list[str]:
        """Codes of the open rooms."""
        return self._session.rooms()

    def show(self, code: str | None, link: str | None = None) -> None:
        """Puts room `code` on the projector page (`/show`): the code in big digits,
        `link` as text and as a QR code (with segno installed), and how many phones
        are in. The page follows when it is called again (a new room); None takes it
        off. Call on the server's loop (or before start)."""
        self._session.show(code, link)

    def _show_json(self) -> tuple[bytes, str] | None:
        body = self._session.show_json()
        return None if body is None else (body, "application/json")

    def room_key(self, code: str) -> str | None:
        """Room `code`'s link key, for links and QR codes: `?room=CODE&key=KEY`.

        A join that presents it is never throttled (typed codes are). None if there is
        no such room.
        """
        return self._session.room_key(code)

    def client_stats(self) -> list[ClientStats]:
        """A snapshot of every connection (joined or not)."""
        return self._session.client_stats()

    def stats(self) -> ServerStats:
        """A snapshot of the server's counters."""
        return self._session.stats()

    async def start(self) -> None:
        """Binds the port and starts serving; returns once listening."""
        if self._server is not None:
            raise BbxNetError("server already started")
        loop = asyncio.get_running_loop()
        self.producer.rebind_thread()  # the loop thread is the ring's producer from now
        with self._lock:
            self._loop = loop
        host, port = self.config.host, self.config.port
        self._server = await loop.create_server(
            lambda: _Connection(self),
            host or None,
            port,
            ssl=self.config.ssl_context,
            backlog=self.config.backlog,
            reuse_port=self.config.reuse_port or None,
            ssl_handshake_timeout=self.config.handshake_timeout
            if self.config.ssl_context is not None
            else None,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._stop = asyncio.Event()
        self._stopping = False
        self._run_commands()  # anything sent before start
        self._every(self.config.ping_interval, self._keepalive)
        every = min(1.0, self.config.room.expiration / 4, self.config.join_timeout / 4)
        self._every(every, self._housekeeping)
        self._every(0.1, self._refit_clocks)  # a few clock fits at a time: no long pause
        if self.viz is not None:
            self._every(1.0 / self.config.update_rate, self._pump_viz)
        logger.info("listening on %s:%d", host, self._port)

    async def stop(self) -> None:
        """Sends `closed` to every client, closes every connection, stops listening.

        Clients get a moment (`_CLOSE_GRACE`) to answer the close; stalled ones are
        then cut off, so a phone that stopped reading cannot hold the shutdown up.
        """
        if self._server is None:
            return
        server, self._server = self._server, None
        self._stopping = True
        server.close()
        await asyncio.sleep(0.01)  # accepts already in flight reach connection_made
        self._session.shutdown()
        self._after_session()
        for conn in list(self._connections):
            if conn.peer is None:
                conn.abort()  # handshake in progress
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * _CLOSE_GRACE
        while self._connections and loop.time() < deadline:
            await asyncio.sleep(0.01)
        # abort() finishes in a later loop turn: wait for every connection_lost, so
        # no transport outlives stop() (and the loop may close right after). That
        # includes connections accepted just before the listener closed, whose
        # connection_made (which aborts them) is still a few loop turns away.
        deadline = loop.time() + _CLOSE_GRACE
        while self._connections and loop.time() < deadline:
            for conn in list(self._connections):
                conn.abort()
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), _CLOSE_GRACE)
        for timer in self._timers:
            timer.cancel()
        self._timers = []
        if self._echo_timer is not None:
            self._echo_timer.cancel()
            self._echo_timer = self._echo_due = None
        with self._lock:
            self._loop = None

    async def run(self) -> None:
        """Serves until a Shutdown command (or cancellation), then closes everything."""
        if self._server is None:
            await self.start()
        assert self._stop is not None
        if self._session.shutdown_requested:
            self._stop.set()
        try:
            await self._stop.wait()
        finally:
            await asyncio.shield(self.stop())

    # ---- commands ----------------------------------------------------------------------

    def _wake(self) -> None:
        """Any thread: a command is waiting in the channel."""
        with self._lock:
            loop = self._loop
            if loop is None:
                # Not serving: no connection exists and no loop owns the session, so
                # the commands are plain state changes, handled here under the lock.
                self._run_commands()
                return
        loop.call_soon_threadsafe(self._run_commands)

    def _run_commands(self) -> None:
        session = self._session
        for command in self.commands.drain():
            session.command(command, self.clock.now_us())
        if session.shutdown_requested and self._stop is not None:
            self._stop.set()
        if self._loop is not None:
            self._after_session()

    # ---- timers ------------------------------------------------------------------------

    def _every(self, interval: float, job: Callable[[], None]) -> None:
        loop = self._loop
        assert loop is not None
        index = len(self._timers)

        def tick() -> None:
            try:
                job()
            finally:
                if self._server is not None:
                    self._timers[index] = loop.call_later(interval, tick)

        self._timers.append(loop.call_later(interval, tick))

    def _keepalive(self) -> None:
        self._session.keepalive(self.clock.now_us())

    def _housekeeping(self) -> None:
        self._session.housekeeping(self.clock.now_us())
        self._after_session()

    def _refit_clocks(self) -> None:
        self._session.refit_clocks()

    def _pump_viz(self) -> None:
        """Fans the audio thread's newest frame of each stream out to the clients."""
        assert self.viz is not None
        frames = self.viz.newest()
        if not frames:
            return
        now = self.clock.now_us()
        for stream, (_, data) in frames.items():
            try:
                command = BroadcastVisualization(data, stream)
            except ValueError:
                self._viz_rejected += 1  # NaN or infinity from the host: not JSON
                continue
            self._session.command(command, now)
        self._after_session()

    def _after_session(self) -> None:
        """Keeps a timer at the next echo's due time, and a flush timer running while
        some outbox holds messages."""
        loop = self._loop
        if loop is None:
            return
        session = self._session
        due = session.next_echo_us
        if due is not None and (self._echo_due is None or due < self._echo_due):
            if self._echo_timer is not None:
                self._echo_timer.cancel()
            self._echo_due = due
            delay = max(0.0, (due - self.clock.now_us()) * 1e-6)
            self._echo_timer = loop.call_later(delay, self._echo_tick)
        if self._flushing or not session.outboxes_holding:
            return
        self._flushing = True
        loop.call_later(0.5 / self.config.update_rate, self._flush)

    def _echo_tick(self) -> None:
        self._echo_timer = None
        self._echo_due = None
        self._session.flush(self.clock.now_us())
        self._after_session()

    def _flush(self) -> None:
        self._flushing = False
        self._session.flush(self.clock.now_us())
        self._after_session()
