"""The JSON protocol between phones and the server, without any I/O.

`parse_client_message` turns one WebSocket frame into a typed client message or raises
`ProtocolError` with a stable code (in two halves, `load_frame` then
`message_from_json`, for a caller that takes params by `param_fields` without making
a `Param`); the `encode_*` functions turn server messages into
the UTF-8 bytes of one text frame. Everything here is a plain function of its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from .errors import BbxNetError

__all__ = [
    "ALREADY_JOINED",
    "ERROR_CODES",
    "INVALID_MESSAGE",
    "INVALID_ROOM",
    "INVALID_TIME",
    "INVALID_VALUE",
    "NOT_JOINED",
    "RATE_LIMITED",
    "SCHEDULE_FULL",
    "FORBIDDEN",
    "Admin",
    "AdminCommand",
    "ROOM_FULL",
    "SERVER_FULL",
    "UNKNOWN_PARAM",
    "UNKNOWN_TYPE",
    "FLOAT32_MAX",
    "ClientMessage",
    "InvalidText",
    "Join",
    "Leave",
    "Param",
    "ParamState",
    "Ping",
    "ProtocolError",
    "Sync",
    "Trigger",
    "check_at",
    "encode_closed",
    "encode_error",
    "encode_pong",
    "encode_state",
    "encode_update",
    "encode_visualization",
    "encode_welcome",
    "load_frame",
    "message_from_json",
    "param_fields",
    "parse_client_message",
]

# ---- error codes (stable strings: clients switch on them) ----------------------------

INVALID_ROOM: Final = "INVALID_ROOM"
ROOM_FULL: Final = "ROOM_FULL"
NOT_JOINED: Final = "NOT_JOINED"
ALREADY_JOINED: Final = "ALREADY_JOINED"
INVALID_MESSAGE: Final = "INVALID_MESSAGE"
UNKNOWN_TYPE: Final = "UNKNOWN_TYPE"
INVALID_VALUE: Final = "INVALID_VALUE"
UNKNOWN_PARAM: Final = "UNKNOWN_PARAM"
INVALID_TIME: Final = "INVALID_TIME"
RATE_LIMITED: Final = "RATE_LIMITED"
SERVER_FULL: Final = "SERVER_FULL"
SCHEDULE_FULL: Final = "SCHEDULE_FULL"
FORBIDDEN: Final = "FORBIDDEN"

ERROR_CODES: Final = frozenset(
    {
        INVALID_ROOM,
        ROOM_FULL,
        NOT_JOINED,
        ALREADY_JOINED,
        INVALID_MESSAGE,
        UNKNOWN_TYPE,
        INVALID_VALUE,
        UNKNOWN_PARAM,
        INVALID_TIME,
        RATE_LIMITED,
        SERVER_FULL,
        SCHEDULE_FULL,
        FORBIDDEN,
    }
)

#: Longest parameter / trigger / client name accepted, in characters.
MAX_NAME_LENGTH: Final = 128
#: Largest `at` that is still an exact JSON integer (2**53).
_MAX_EXACT = 2**53
#: Largest finite float32: values and coordinates travel to the audio thread as f32.
FLOAT32_MAX: Final = 3.4028234663852886e38
#: Largest integer orjson can write back (a `client_time` is echoed exactly).
_MAX_ECHO_INT = 2**64 - 1


class ProtocolError(BbxNetError):
    """A client message the server refuses; `code` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class InvalidText(ProtocolError):
    """A text frame whose payload is not UTF-8 (encoded surrogates included).

    RFC 6455 §8.1 makes this a connection failure (close 1007), not a reply; the code
    is INVALID_MESSAGE for callers that only parse.
    """

    def __init__(self) -> None:
        super().__init__(INVALID_MESSAGE, "text frame is not valid UTF-8")


# ---- client messages ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    """`{"type": "join", "room_code", "client_name"?, "session"?, "key"?}`.

    `key` is the room's long random key from its link or QR code (`&key=`).
    """

    room_code: str
    client_name: str | None = None
    session: str | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Param:
    """`{"type": "param", "param", "value", "at"?}`; `at` is server-clock µs."""

    param: str
    value: float
    at: int | None = None


@dataclass(frozen=True, slots=True)
class Trigger:
    """`{"type": "trigger", "name", "x"?, "y"?, "at"?}` (or the name `"pad:x,y"`)."""

    name: str
    x: float | None = None
    y: float | None = None
    at: int | None = None


@dataclass(frozen=True, slots=True)
class Sync:
    """`{"type": "sync"}`: asks for a `state` message."""


@dataclass(frozen=True, slots=True)
class Ping:
    """`{"type": "ping", "client_time"}`; client_time is echoed back exactly.

    Optional, from clients that report their clock filter (bbx-client.js does):
    `last` = [client_time, server_time, receive_time] of the last pong they got (the
    server completes that exchange on its side), `offset` = their estimate of server
    minus client clock (µs) and `rtt` = their last round trip (µs).
    """

    client_time: int | float
    last: tuple[float, float, float] | None = None
    offset: float | None = None
    rtt: float | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    """`{"type": "leave"}`: leave the room and close."""


@dataclass(frozen=True, slots=True)
class Admin:
    """`{"type": "admin", "token"}`: the operator view, instead of join (first)."""

    token: str


@dataclass(frozen=True, slots=True)
class AdminCommand:
    """`{"type": "admin_command", "command", ...}` from an operator connection:
    `broadcast_param` (param, value), `close_room` (room_code) or `new_room`."""

    command: str
    param: str | None = None
    value: float | None = None
    room_code: str | None = None


ADMIN_COMMANDS: Final = frozenset({"broadcast_param", "close_room", "new_room"})

ClientMessage = Join | Param | Trigger | Sync | Ping | Leave | Admin | AdminCommand


def _loads(frame: str | bytes | bytearray | memoryview) -> Any:
    """orjson, and only orjson: one parser decides what is JSON.

    orjson refuses invalid UTF-8, encoded and escaped lone surrogates, a byte order
    mark, nesting deeper than 1024, NaN / Infinity (not JSON, RFC 8259 §6) and number
    literals that overflow a double. All of those are INVALID_MESSAGE, except bytes
    that are not UTF-8 at all, which are InvalidText (the transport closes with 1007).
    """
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError:
        pass
    if not isinstance(frame, str):
        try:
            bytes(frame).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidText() from None
    raise ProtocolError(INVALID_MESSAGE, "frame is not valid JSON")


def _name(obj: dict[str, Any], key: str, kind: str) -> str:
    value = obj.get(key)
    if value is None:
        raise ProtocolError(INVALID_MESSAGE, f"{kind} needs a string field {key!r}")
    if not isinstance(value, str):
        raise ProtocolError(INVALID_MESSAGE, f"{key!r} must be a string")
    if not value or len(value) > MAX_NAME_LENGTH:
        raise ProtocolError(INVALID_MESSAGE, f"{key!r} must be 1..{MAX_NAME_LENGTH} characters")
    return value


def _float(value: Any, key: str) -> float:
    """Any finite JSON number, as a double."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(INVALID_MESSAGE, f"{key!r} must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise ProtocolError(INVALID_VALUE, f"{key!r} is too large") from None
    if not math.isfinite(number):
        raise ProtocolError(INVALID_VALUE, f"{key!r} must be finite")
    return number


def _parse_ping_report(obj: dict[str, Any], t: int | float) -> Ping:
    """The optional clock report of a ping (see Ping)."""
    last = obj.get("last")
    exchange = None
    if last is not None:
        if not isinstance(last, list) or len(last) != 3:
            raise ProtocolError(
                INVALID_MESSAGE, "'last' must be [client_time, server_time, receive_time]"
            )
        t1, t2, t4 = (_float(v, "last") for v in last)
        if t4 < t1:
            raise ProtocolError(INVALID_VALUE, "'last' ends before it starts")
        exchange = (t1, t2, t4)
    offset = obj.get("offset")
    rtt = obj.get("rtt")
    rtt_value = None if rtt is None else _float(rtt, "rtt")
    if rtt_value is not None and rtt_value < 0:
        raise ProtocolError(INVALID_VALUE, "'rtt' must not be negative")
    return Ping(t, exchange, None if offset is None else _float(offset, "offset"), rtt_value)


def _number(value: Any, key: str) -> float:
    """A value or coordinate: a JSON number that float32 holds (the ring's payload)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(INVALID_MESSAGE, f"{key!r} must be a number")
    return _finite32(value, key)


def _finite32(value: int | float, key: str) -> float:
    try:
        number = float(value)
    except OverflowError:  # an integer literal beyond any double
        raise ProtocolError(INVALID_VALUE, f"{key!r} is too large") from None
    if not math.isfinite(number):
        raise ProtocolError(INVALID_VALUE, f"{key!r} must be finite")
    if abs(number) > FLOAT32_MAX:
        raise ProtocolError(INVALID_VALUE, f"{key!r} is outside the float32 range")
    return number


def _at(obj: dict[str, Any]) -> int | None:
    at = obj.get("at")
    if at is None:
        return None
    if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at <= _MAX_EXACT:
        raise ProtocolError(INVALID_TIME, "'at' must be a non-negative integer (server µs)")
    return at


def _parse_trigger(obj: dict[str, Any]) -> Trigger:
    name = _name(obj, "name", "trigger")
    x_raw, y_raw = obj.get("x"), obj.get("y")
    if ":" in name and x_raw is None and y_raw is None:
        # The original's compact form "name:x,y".
        base, _, coords = name.partition(":")
        parts = coords.split(",")
        if not base or len(parts) != 2:
            raise ProtocolError(INVALID_MESSAGE, "trigger name form is 'name:x,y'")
        try:
            x, y = float(parts[0]), float(parts[1])
        except ValueError:
            raise ProtocolError(INVALID_VALUE, "trigger coordinates must be numbers") from None
        return Trigger(base, _finite32(x, "x"), _finite32(y, "y"), _at(obj))
    if (x_raw is None) != (y_raw is None):
        raise ProtocolError(INVALID_MESSAGE, "trigger needs both 'x' and 'y' or neither")
    if x_raw is None:
        return Trigger(name, None, None, _at(obj))
    return Trigger(name, _number(x_raw, "x"), _number(y_raw, "y"), _at(obj))


def parse_client_message(
    frame: str | bytes | bytearray | memoryview, *, binary: bool = False
) -> ClientMessage:
    """Parses one frame from a client.

    Args:
        frame: the frame's payload (str for text frames).
        binary: the frame was a binary frame (always refused: the protocol is JSON text).

    Returns:
        The typed message.

    Raises:
        InvalidText: a bytes frame that is not UTF-8 (a ProtocolError, INVALID_MESSAGE).
        ProtocolError: with INVALID_MESSAGE (not JSON, not an object, binary, missing or
            mistyped field, NaN / Infinity, lone surrogates), UNKNOWN_TYPE,
            INVALID_VALUE (a number float32 cannot hold) or INVALID_TIME.
    """
    return message_from_json(load_frame(frame, binary=binary))


def load_frame(frame: str | bytes | bytearray | memoryview, *, binary: bool = False) -> Any:
    """The first half of parse_client_message: the frame's JSON value, not yet checked.

    Raises:
        InvalidText, ProtocolError: as parse_client_message, for a frame that is binary,
            not UTF-8 or not JSON.
    """
    if binary:
        raise ProtocolError(INVALID_MESSAGE, "binary frames are not accepted; send JSON text")
    return _loads(frame)


def param_fields(obj: dict[str, Any]) -> tuple[str, float, int | None]:
    """`(param, value, at)` of a `{"type": "param", ...}` object, checked as
    parse_client_message checks a Param (which is `Param(*param_fields(obj))`).

    The session's hot path: every phone's slider moves arrive here, so the common
    shape (a short name, a float within float32, no `at`) is decided in a few
    comparisons and anything else goes through the same checks as the other fields.
    """
    name = obj.get("param")
    if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH:
        name = _name(obj, "param", "param")  # raises what is wrong with it
    value = obj.get("value")
    if type(value) is not float or not -FLOAT32_MAX <= value <= FLOAT32_MAX:  # NaN fails
        if "value" not in obj:
            raise ProtocolError(INVALID_MESSAGE, "param needs a number field 'value'")
        value = _number(value, "value")
    at = obj.get("at")
    if at is not None:
        at = _at(obj)
    return name, value, at


def message_from_json(obj: Any) -> ClientMessage:
    """The second half of parse_client_message: a loaded JSON value as a typed message.

    Raises:
        ProtocolError: as parse_client_message, for what the value holds.
    """
    if not isinstance(obj, dict):
        raise ProtocolError(INVALID_MESSAGE, "a message is a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(INVALID_MESSAGE, "a message needs a string field 'type'")
    if kind == "param":
        return Param(*param_fields(obj))
    if kind == "trigger":
        return _parse_trigger(obj)
    if kind == "ping":
        t = obj.get("client_time")
        if isinstance(t, bool) or not isinstance(t, int | float):
            raise ProtocolError(INVALID_MESSAGE, "ping needs a number field 'client_time'")
        if not math.isfinite(t) or t < 0 or (isinstance(t, int) and t > _MAX_ECHO_INT):
            raise ProtocolError(INVALID_VALUE, "'client_time' must be a non-negative number")
        if len(obj) == 2:
            return Ping(t)
        return _parse_ping_report(obj, t)
    if kind == "join":
        code = obj.get("room_code")
        if not isinstance(code, str):
            raise ProtocolError(INVALID_MESSAGE, "join needs a string field 'room_code'")
        client_name = obj.get("client_name")
        if client_name is not None and (
            not isinstance(client_name, str) or len(client_name) > MAX_NAME_LENGTH
        ):
            raise ProtocolError(INVALID_MESSAGE, "'client_name' must be a short string")
        session = obj.get("session")
        if session is not None and (not isinstance(session, str) or len(session) > 256):
            raise ProtocolError(INVALID_MESSAGE, "'session' must be a string token")
        key = obj.get("key")
        if key is not None and (not isinstance(key, str) or len(key) > 256):
            raise ProtocolError(INVALID_MESSAGE, "'key' must be a string")
        return Join(code, client_name, session, key)
    if kind == "sync":
        return Sync()
    if kind == "leave":
        return Leave()
    if kind == "admin":
        token = obj.get("token")
        if not isinstance(token, str) or len(token) > 256:
            raise ProtocolError(INVALID_MESSAGE, "admin needs a string field 'token'")
        return Admin(token)
    if kind == "admin_command":
        command = obj.get("command")
        if command not in ADMIN_COMMANDS:
            raise ProtocolError(
                INVALID_MESSAGE, "'command' must be one of " + ", ".join(sorted(ADMIN_COMMANDS))
            )
        if command == "broadcast_param":
            name = _name(obj, "param", "param")
            if "value" not in obj:
                raise ProtocolError(INVALID_MESSAGE, "broadcast_param needs 'value'")
            return AdminCommand(command, name, _number(obj["value"], "value"))
        if command == "close_room":
            code = obj.get("room_code")
            if not isinstance(code, str) or len(code) > 16:
                raise ProtocolError(INVALID_MESSAGE, "close_room needs 'room_code'")
            return AdminCommand(command, room_code=code)
        return AdminCommand(command)
    raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}")


def check_at(at: int | None, now_us: int, horizon_us: int) -> None:
    """Refuses an `at` further ahead than the scheduling horizon.

    Raises:
        ProtocolError: INVALID_TIME when at > now_us + horizon_us.
    """
    if at is not None and at > now_us + horizon_us:
        raise ProtocolError(
            INVALID_TIME, f"'at' is more than {horizon_us / 1e6:g} s ahead of the server clock"
        )


# ---- server messages ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParamState:
    """One entry of a `state` message."""

    name: str
    value: float
    min: float
    max: float
    display: Mapping[str, object] | None = None  # label, unit, step, ... (ParamSpec)


def encode_welcome(node_id: str, server_time: int, session: str | None = None) -> bytes:
    """`welcome`: the node id, the server clock (µs) and the private resume token."""
    msg: dict[str, Any] = {"type": "welcome", "node_id": node_id, "server_time": server_time}
    if session is not None:
        msg["session"] = session
    return orjson.dumps(msg)


def encode_state(
    params: Iterable[ParamState],
    triggers: Sequence[str] = (),
    page: Mapping[str, object] | None = None,
) -> bytes:
    """`state`: every declared parameter with its current value and range.

    Extra fields, for control pages (clients that predate them ignore them): each
    parameter's display fields (label, unit, step, integer, log, group), `triggers`
    (the declared trigger names) and `page` (title, instruction, trigger labels).
    """
    entries = []
    for p in params:
        entry: dict[str, Any] = {"name": p.name, "value": p.value, "min": p.min, "max": p.max}
        if p.display:
            entry.update(p.display)
        entries.append(entry)
    msg: dict[str, Any] = {"type": "state", "params": entries}
    if triggers:
        msg["triggers"] = list(triggers)
    if page:
        msg["page"] = dict(page)
    return orjson.dumps(msg)


def encode_update(param: str, value: float) -> bytes:
    """`update`: exactly the seed's fields."""
    return orjson.dumps({"type": "update", "param": param, "value": value})


def encode_pong(client_time: int | float, server_time: int) -> bytes:
    """`pong`: client_time echoed as received, the server clock in µs."""
    return orjson.dumps({"type": "pong", "client_time": client_time, "server_time": server_time})


def encode_error(code: str, message: str) -> bytes:
    """`error` with a stable code and a human-readable message."""
    return orjson.dumps({"type": "error", "code": code, "message": message})


def encode_closed(reason: str | None = None) -> bytes:
    """`closed`: the room was closed (by the host or by expiry)."""
    if reason is None:
        return b'{"type":"closed"}'
    return orjson.dumps({"type": "closed", "reason": reason})


def encode_visualization(data: Sequence[float], stream: int = 0) -> bytes:
    """`visualization`: `{"type": "visualization", "data": [float, ...]}`, with
    `"stream": n` added for streams other than 0 (the page's default view).

    Raises:
        ValueError: a value is not a finite number (JSON has no NaN).
    """
    values = [float(v) for v in data]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("visualization data must be finite numbers")
    if stream:
        return orjson.dumps({"type": "visualization", "data": values, "stream": stream})
    return orjson.dumps({"type": "visualization", "data": values})
