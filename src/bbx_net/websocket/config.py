"""Server configuration: WsServerConfig, RoomConfig and ParamSpec."""

from __future__ import annotations

import math
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from ..rooms import RoomConfig

__all__ = ["ParamSpec", "RoomConfig", "WsServerConfig", "parse_bind_addr"]


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """A declared parameter: phones get sliders for it, values are clamped to its range.

    Attributes:
        name: the parameter's name (hashed with FNV-1a for the audio thread).
        value: the initial value.
        min: the lowest accepted value.
        max: the highest accepted value.
        label: what the phone shows instead of the name.
        unit: shown after the value ("Hz", "dB").
        step: the slider's step (values sent are multiples of it from min).
        integer: whole numbers only (the server rounds what phones send too).
        log: a logarithmic slider (for frequencies; needs min > 0).
        group: a heading the phone shows the parameter under, with the others of
            that group, in the order groups first appear.
    """

    name: str
    value: float = 0.0
    min: float = 0.0
    max: float = 1.0
    label: str | None = None
    unit: str | None = None
    step: float | None = None
    integer: bool = False
    log: bool = False
    group: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or len(self.name) > 128:
            raise ValueError(f"a parameter name is a non-empty str of <= 128 chars: {self.name!r}")
        for what in ("value", "min", "max"):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"{self.name}: {what} must be a finite number, got {v!r}")
            object.__setattr__(self, what, float(v))
        if not self.min <= self.value <= self.max:
            raise ValueError(
                f"{self.name}: need min <= value <= max, got {self.min}, {self.value}, {self.max}"
            )
        for what in ("label", "unit", "group"):
            v = getattr(self, what)
            if v is not None and (not isinstance(v, str) or not v or len(v) > 128):
                raise ValueError(f"{self.name}: {what} must be a str of 1..128 characters")
        if self.step is not None:
            st = self.step
            if (
                isinstance(st, bool)
                or not isinstance(st, int | float)
                or not (math.isfinite(st) and st > 0)
            ):
                raise ValueError(f"{self.name}: step must be a positive number, got {st!r}")
            object.__setattr__(self, "step", float(st))
        for what in ("integer", "log"):
            if not isinstance(getattr(self, what), bool):
                raise ValueError(f"{self.name}: {what} must be true or false")
        if self.log and not self.min > 0:
            raise ValueError(f"{self.name}: a log scale needs min > 0, got {self.min}")
        if self.integer and self.clamp(self.value) != self.value:
            raise ValueError(f"{self.name}: an integer parameter needs a whole value")

    def clamp(self, value: float) -> float:
        """`value` limited to [min, max] (and rounded, for an integer parameter)."""
        if self.integer:
            value = float(round(value))
            lo, hi = math.ceil(self.min), math.floor(self.max)
            return float(min(hi, max(lo, value)))
        return min(self.max, max(self.min, value))

    def display(self) -> dict[str, object]:
        """The fields a phone shows, beyond name/value/min/max (only those set)."""
        out: dict[str, object] = {}
        for what in ("label", "unit", "step", "group"):
            v = getattr(self, what)
            if v is not None:
                out[what] = v
        if self.integer:
            out["integer"] = True
        if self.log:
            out["log"] = True
        return out


def parse_bind_addr(addr: str | tuple[str, int]) -> tuple[str, int]:
    """`"host:port"`, `"[::1]:port"` or `(host, port)` as a (host, port) pair.

    Raises:
        ValueError: not an address with a port in 0..65535.
    """
    if isinstance(addr, tuple):
        if len(addr) != 2:
            raise ValueError(f"bind_addr pair must be (host, port), got {addr!r}")
        host, port = addr
    elif isinstance(addr, str):
        host, sep, port_text = addr.rpartition(":")
        if not sep:
            raise ValueError(f"bind_addr must be 'host:port', got {addr!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"bind_addr port is not a number: {addr!r}") from None
    else:
        raise ValueError(f"bind_addr must be 'host:port' or (host, port), got {addr!r}")
    if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
        raise ValueError(f"bind_addr must be (str, int), got {addr!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0..65535, got {port}")
    return host, port


@dataclass(frozen=True, slots=True)
class WsServerConfig:
    """Everything the server needs to know. Durations are seconds.

    Attributes:
        bind_addr: `(host, port)` or `"host:port"`; port 0 picks a free port.
        ping_interval: seconds between keepalive pings to each client.
        connection_timeout: a client silent to pings this long is dropped.
        broadcast_capacity: frames queued per client before stale ones are dropped.
        room: room options (code length, expiration, max clients).
        params: declared parameters; when non-empty, other names are refused.
        triggers: trigger names to offer as pads on control pages (any name is still
            accepted from clients).
        max_message_size: largest frame accepted, in bytes (larger closes with 1009).
        max_connections: open WebSocket connections allowed (more get SERVER_FULL).
        max_rooms: rooms that may exist at once.
        allowed_origins: accepted Origin headers; None accepts any (and none). In the
            list, "" admits requests without an Origin header (scripts, native apps)
            and "null" the literal `Origin: null` (sandboxed frames, file:// pages).
        ssl_context: serve wss:// and https:// with this context; None for plain.
        handshake_timeout: seconds a client has to finish the opening handshake.
        resume_grace: seconds a dropped client's seat is kept for its session token.
        schedule_horizon: how far ahead (seconds) `at` may be.
        update_rate: most `update` echoes per second per client per parameter, with
            an allowance of one more: a change goes out at once unless the client's
            allowance is spent, then the latest value when it returns (see echo.py).
        error_budget: errors a client may cause in a burst before it is closed with
            1008; one error is forgiven per second.
        join_burst: failed joins one address may make in a burst.
        join_per_hour: failed joins one address regains per hour.
        backlog: listen backlog (a join storm of hundreds of phones).
        reuse_port: bind with SO_REUSEPORT (Linux, BSD), so that several server
            processes share one port and the kernel spreads new connections over them
            (`bbx_net.serve_pool` sets it). Each process has its own rooms: see
            serve_pool for what that means.
        serve_static: serve the phone page and the JS client over HTTP on the same port.
        static_dir: also serve the host's own pages from this folder, at their paths
            below it (read once at start; at most 2,000 files of 16 MiB in all). Its
            `index.html`, if any, replaces the phone page at `/`; the package's files
            (`/bbx-client.js`, `/app.js`, ...) keep their paths, so a host page can
            `import { BbxClient } from "/bbx-client.js"` on the same origin.
        join_timeout: seconds a connection may stay open without joining a room; then
            it is closed with 1008 (phones join within a second of connecting).
        max_unjoined_per_address: connections from one remote address that may be
            open without having joined, at once; more are refused (SERVER_FULL, 1008).
            A venue NAT of hundreds of phones stays far below it: they join at once.
        max_seats_per_address: seats one remote address may hold in one room (live or
            held for resume); None (the default) for no limit, since a whole venue
            often shares one address. A join beyond it gets ROOM_FULL.
        guess_burst: failed typed-code joins the whole server allows in a burst; they
            refill at the rate that keeps a distributed guesser below 0.45 of the code
            space in a room's lifetime (3.1 a minute at 4 digits and 24 h). While it is
            spent, typed codes get RATE_LIMITED; joins with the room's link key and
            resumes with a session token are never throttled.
        max_undeclared_params: distinct parameter names the server remembers when
            the host declared none (`params` empty); changes to further new names get
            UNKNOWN_PARAM. Names the host broadcasts count too.
        max_scheduled_per_client: future events (`at` ahead of now) one phone may
            have waiting in the audio side's schedule; beyond it, SCHEDULE_FULL. None:
            1/8 of the server's share, which is half the schedule's capacity (the other
            half stays free for events due now, so they never wait behind later ones).
        title: the show's name, shown at the top of the phone page (in `state`).
        instruction: one line for the audience under it ("Move the sliders together").
        trigger_labels: what the pads show instead of the trigger names.
        xy_pad: where the phone page puts its XY pad: "last" (below sliders and
            pads), "first" (at the top: on screen at once on a phone) or "off".
        admin_token: enables the operator view (`/admin?token=...`): a connection
            that sends `{"type": "admin", "token": ...}` with it gets `admin_state`
            every second and may broadcast values, close and open rooms. None: off.
    """

    bind_addr: str | tuple[str, int] = ("0.0.0.0", 8080)
    ping_interval: float = 5.0
    connection_timeout: float = 30.0
    broadcast_capacity: int = 256
    room: RoomConfig = field(default_factory=RoomConfig)
    params: tuple[ParamSpec, ...] | list[ParamSpec] = ()
    triggers: tuple[str, ...] | list[str] = ()
    max_message_size: int = 64 * 1024
    max_connections: int = 10_000
    max_rooms: int = 1000
    allowed_origins: tuple[str, ...] | None = None
    ssl_context: ssl.SSLContext | None = None
    handshake_timeout: float = 10.0
    resume_grace: float = 60.0
    schedule_horizon: float = 10.0
    update_rate: float = 60.0
    error_budget: int = 20
    join_burst: int = 10
    join_per_hour: float = 60.0
    backlog: int = 2048
    reuse_port: bool = False
    serve_static: bool = True
    static_dir: str | Path | None = None
    join_timeout: float = 15.0
    max_unjoined_per_address: int = 64
    max_seats_per_address: int | None = None
    max_undeclared_params: int = 256
    guess_burst: int = 60
    max_scheduled_per_client: int | None = None
    title: str | None = None
    instruction: str | None = None
    trigger_labels: dict[str, str] = field(default_factory=dict)
    xy_pad: str = "last"
    admin_token: str | None = None

    def __post_init__(self) -> None:
        parse_bind_addr(self.bind_addr)
        for name in (
            "ping_interval",
            "connection_timeout",
            "handshake_timeout",
            "update_rate",
            "join_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("resume_grace", "schedule_horizon"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in (
            "broadcast_capacity",
            "max_message_size",
            "max_connections",
            "max_rooms",
            "error_budget",
            "join_burst",
            "backlog",
            "max_unjoined_per_address",
            "guess_burst",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_undeclared_params < 0:
            n = self.max_undeclared_params
            raise ValueError(f"max_undeclared_params must be >= 0, got {n}")
        for what in ("title", "instruction"):
            v = getattr(self, what)
            if v is not None and (not isinstance(v, str) or len(v) > 200):
                raise ValueError(f"{what} must be a str of at most 200 characters")
        if self.xy_pad not in ("first", "last", "off"):
            raise ValueError(f"xy_pad is 'first', 'last' or 'off', got {self.xy_pad!r}")
        for name, label in self.trigger_labels.items():
            if name not in self.triggers:
                raise ValueError(f"trigger_labels names {name!r}, which is not a trigger")
            if not isinstance(label, str) or not label or len(label) > 128:
                raise ValueError(f"the label of {name!r} must be a str of 1..128 characters")
        if self.static_dir is not None and not Path(self.static_dir).is_dir():
            raise ValueError(f"static_dir {str(self.static_dir)!r} is not a folder")
        if self.reuse_port and not hasattr(socket, "SO_REUSEPORT"):
            raise ValueError("reuse_port: this platform has no SO_REUSEPORT")
        per = self.max_scheduled_per_client
        if per is not None and per < 1:
            raise ValueError(f"max_scheduled_per_client must be at least 1 or None, got {per}")
        seats = self.max_seats_per_address
        if seats is not None and seats < 1:
            raise ValueError(f"max_seats_per_address must be at least 1 or None, got {seats}")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"parameter names must be unique: {names}")
        object.__setattr__(self, "params", tuple(self.params))
        triggers = tuple(self.triggers)
        if not all(isinstance(t, str) and 0 < len(t) <= 128 for t in triggers):
            raise ValueError(f"trigger names must be non-empty strings: {triggers}")
        object.__setattr__(self, "triggers", triggers)

    @property
    def host(self) -> str:
        return parse_bind_addr(self.bind_addr)[0]

    @property
    def port(self) -> int:
        return parse_bind_addr(self.bind_addr)[1]
