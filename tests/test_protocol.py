"""The JSON protocol as plain functions: frames in, typed messages or errors out."""

from __future__ import annotations

import math

import orjson
import pytest

from bbx_net.protocol import (
    ERROR_CODES,
    FLOAT32_MAX,
    INVALID_MESSAGE,
    INVALID_TIME,
    INVALID_VALUE,
    UNKNOWN_TYPE,
    InvalidText,
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
    param_fields,
    parse_client_message,
)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            '{"type": "join", "room_code": "1234", "client_name": "Phone 1"}',
            Join("1234", "Phone 1"),
        ),
        ('{"type": "join", "room_code": "0042", "session": "tok"}', Join("0042", None, "tok")),
        ('{"type": "param", "param": "freq", "value": 0.5}', Param("freq", 0.5)),
        (
            '{"type": "param", "param": "freq", "value": 1, "at": 1234567890}',
            Param("freq", 1.0, 1234567890),
        ),
        ('{"type": "trigger", "name": "note_on"}', Trigger("note_on")),
        (
            '{"type": "trigger", "name": "pad", "x": 0.25, "y": 1, "at": 7}',
            Trigger("pad", 0.25, 1.0, 7),
        ),
        ('{"type": "trigger", "name": "pad:0.5,-0.75"}', Trigger("pad", 0.5, -0.75)),
        ('{"type": "sync"}', Sync()),
        ('{"type": "ping", "client_time": 1234567890}', Ping(1234567890)),
        ('{"type": "ping", "client_time": 12.5}', Ping(12.5)),
        ('{"type": "leave"}', Leave()),
    ],
)
def test_every_client_message_of_the_seed_parses(frame: str, expected: object) -> None:
    """The seed's client messages (and our additions) become typed messages."""
    assert parse_client_message(frame) == expected
    assert parse_client_message(frame.encode()) == expected


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", INVALID_MESSAGE),
        ("", INVALID_MESSAGE),
        ("[1, 2]", INVALID_MESSAGE),
        ('"join"', INVALID_MESSAGE),
        ("{}", INVALID_MESSAGE),
        ('{"type": 5}', INVALID_MESSAGE),
        ('{"type": "dance"}', UNKNOWN_TYPE),
        ('{"type": "join"}', INVALID_MESSAGE),
        ('{"type": "join", "room_code": 1234}', INVALID_MESSAGE),
        ('{"type": "join", "room_code": "1", "client_name": 5}', INVALID_MESSAGE),
        ('{"type": "param", "value": 0.5}', INVALID_MESSAGE),
        ('{"type": "param", "param": "", "value": 0.5}', INVALID_MESSAGE),
        ('{"type": "param", "param": "gain"}', INVALID_MESSAGE),
        ('{"type": "param", "param": "gain", "value": "0.5"}', INVALID_MESSAGE),
        ('{"type": "param", "param": "gain", "value": null}', INVALID_MESSAGE),
        ('{"type": "param", "param": "gain", "value": true}', INVALID_MESSAGE),
        # NaN and Infinity are not JSON (RFC 8259 §6); one parser decides: orjson.
        ('{"type": "param", "param": "gain", "value": NaN}', INVALID_MESSAGE),
        ('{"type": "param", "param": "gain", "value": Infinity}', INVALID_MESSAGE),
        ('{"type": "param", "param": "gain", "value": -Infinity}', INVALID_MESSAGE),
        ('{"type": "param", "param": "gain", "value": 1e999}', INVALID_MESSAGE),
        # Finite doubles that float32 (the ring's payload) cannot hold.
        ('{"type": "param", "param": "gain", "value": 1e300}', INVALID_VALUE),
        ('{"type": "param", "param": "gain", "value": -3.5e38}', INVALID_VALUE),
        ('{"type": "param", "param": "gain", "value": 1' + "0" * 39 + "}", INVALID_VALUE),
        ('{"type": "trigger", "name": "pad", "x": 3.5e38, "y": 0}', INVALID_VALUE),
        ('{"type": "trigger", "name": "pad", "x": 0, "y": -1e300}', INVALID_VALUE),
        ('{"type": "trigger", "name": "pad:3.5e38,0"}', INVALID_VALUE),
        # Lone surrogates, escaped or encoded, never reach a name.
        ('{"type": "trigger", "name": "\\ud800"}', INVALID_MESSAGE),
        ('{"type": "trigger", "name": "a\\udc00b"}', INVALID_MESSAGE),
        ('{"type": "param", "param": "\\udfff", "value": 0.5}', INVALID_MESSAGE),
        ('{"type": "join", "room_code": "\\ud800"}', INVALID_MESSAGE),
        ('{"type": "param", "param": "gain", "value": 0.5, "at": -1}', INVALID_TIME),
        ('{"type": "param", "param": "gain", "value": 0.5, "at": 1.5}', INVALID_TIME),
        ('{"type": "param", "param": "gain", "value": 0.5, "at": "soon"}', INVALID_TIME),
        ('{"type": "param", "param": "gain", "value": 0.5, "at": true}', INVALID_TIME),
        ('{"type": "param", "param": "gain", "value": 0.5, "at": 1e300}', INVALID_TIME),
        ('{"type": "trigger"}', INVALID_MESSAGE),
        ('{"type": "trigger", "name": "pad", "x": 0.5}', INVALID_MESSAGE),
        ('{"type": "trigger", "name": "pad", "x": NaN, "y": 0}', INVALID_MESSAGE),
        ('{"type": "trigger", "name": "pad:1"}', INVALID_MESSAGE),
        ('{"type": "trigger", "name": "pad:a,b"}', INVALID_VALUE),
        ('{"type": "trigger", "name": "pad:inf,0"}', INVALID_VALUE),
        ('{"type": "ping"}', INVALID_MESSAGE),
        ('{"type": "ping", "client_time": "now"}', INVALID_MESSAGE),
        ('{"type": "ping", "client_time": -5}', INVALID_VALUE),
        ('{"type": "ping", "client_time": NaN}', INVALID_MESSAGE),
    ],
)
def test_bad_frames_get_their_stable_code(frame: str, code: str) -> None:
    """Every kind of bad input maps to one documented error code."""
    with pytest.raises(ProtocolError) as info:
        parse_client_message(frame)
    assert info.value.code == code
    assert info.value.code in ERROR_CODES and info.value.message


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type": "trigger", "name": "\xed\xa0\x80"}',  # an encoded surrogate (CESU-8)
        b'{"type": "trigger", "name": "\xff"}',
        b'{"type": "sync"}\xc0\xaf',  # overlong encoding
        '{"type": "sync"}'.encode("utf-16"),
        '{"type": "sync"}'.encode("utf-32"),
    ],
)
def test_text_that_is_not_utf8_is_invalid_text(payload: bytes) -> None:
    """Bytes that are not UTF-8 raise InvalidText (the transport's 1007), never parse."""
    with pytest.raises(InvalidText) as info:
        parse_client_message(payload)
    assert info.value.code == INVALID_MESSAGE


def test_a_utf8_byte_order_mark_is_invalid_json() -> None:
    """A BOM is valid UTF-8 but not JSON text (RFC 8259 §8.1): INVALID_MESSAGE."""
    with pytest.raises(ProtocolError) as info:
        parse_client_message(b'\xef\xbb\xbf{"type": "sync"}')
    assert info.value.code == INVALID_MESSAGE and not isinstance(info.value, InvalidText)


def test_an_integer_literal_beyond_any_double_is_an_error() -> None:
    """10**400 is refused with a code (orjson refuses the document or hands back an int)."""
    for frame in (
        '{"type": "param", "param": "gain", "value": 1' + "0" * 400 + "}",
        '{"type": "trigger", "name": "pad", "x": -1' + "0" * 400 + ', "y": 0}',
        '{"type": "ping", "client_time": 1' + "0" * 400 + "}",
    ):
        with pytest.raises(ProtocolError) as info:
            parse_client_message(frame)
        assert info.value.code in (INVALID_VALUE, INVALID_MESSAGE)


def test_the_largest_float32_passes() -> None:
    """FLOAT32_MAX itself is a usable value; the next double up is not."""
    msg = parse_client_message(orjson.dumps({"type": "param", "param": "g", "value": FLOAT32_MAX}))
    assert isinstance(msg, Param) and msg.value == FLOAT32_MAX
    above = math.nextafter(FLOAT32_MAX, math.inf)
    with pytest.raises(ProtocolError) as info:
        parse_client_message(orjson.dumps({"type": "param", "param": "g", "value": above}))
    assert info.value.code == INVALID_VALUE


def test_binary_frames_are_refused() -> None:
    """Binary frames are INVALID_MESSAGE, even if they hold valid JSON."""
    with pytest.raises(ProtocolError) as info:
        parse_client_message(b'{"type": "sync"}', binary=True)
    assert info.value.code == INVALID_MESSAGE


def test_overlong_names_are_refused() -> None:
    """Names beyond 128 characters are INVALID_MESSAGE (bounded memory per param)."""
    frame = orjson.dumps({"type": "param", "param": "x" * 129, "value": 1})
    with pytest.raises(ProtocolError):
        parse_client_message(frame)


def test_deeply_nested_json_is_an_error_not_a_crash() -> None:
    """Pathological nesting is INVALID_MESSAGE."""
    with pytest.raises(ProtocolError) as info:
        parse_client_message("[" * 100_000 + "]" * 100_000)
    assert info.value.code == INVALID_MESSAGE


def test_scheduling_horizon() -> None:
    """`at` up to the horizon is fine; beyond it is INVALID_TIME; None always passes."""
    check_at(None, 0, 10)
    check_at(1_010, 1_000, 10)
    with pytest.raises(ProtocolError) as info:
        check_at(1_011, 1_000, 10)
    assert info.value.code == INVALID_TIME


def test_server_messages_have_the_seed_fields() -> None:
    """Every server message encodes with exactly the seed's fields (plus documented extras)."""
    assert orjson.loads(encode_welcome("n", 5, "tok")) == {
        "type": "welcome",
        "node_id": "n",
        "server_time": 5,
        "session": "tok",
    }
    assert orjson.loads(encode_state([ParamState("freq", 0.5, 0.0, 1.0)])) == {
        "type": "state",
        "params": [{"name": "freq", "value": 0.5, "min": 0.0, "max": 1.0}],
    }
    assert orjson.loads(encode_update("freq", 0.7)) == {
        "type": "update",
        "param": "freq",
        "value": 0.7,
    }
    assert orjson.loads(encode_pong(1234567890, 1234567891)) == {
        "type": "pong",
        "client_time": 1234567890,
        "server_time": 1234567891,
    }
    assert orjson.loads(encode_error("INVALID_ROOM", "Invalid room code")) == {
        "type": "error",
        "code": "INVALID_ROOM",
        "message": "Invalid room code",
    }
    assert orjson.loads(encode_closed()) == {"type": "closed"}
    assert orjson.loads(encode_closed("expired"))["type"] == "closed"
    assert orjson.loads(encode_visualization([0.5, 1, -2.25])) == {
        "type": "visualization",
        "data": [0.5, 1.0, -2.25],
    }


def test_client_time_is_echoed_exactly() -> None:
    """Whatever number the client sent comes back unchanged in the pong."""
    for t in (0, 1, 2**53, 1234.5678, 1e-7):
        sent = orjson.dumps({"type": "ping", "client_time": t})
        ping = parse_client_message(sent)
        assert isinstance(ping, Ping)
        assert orjson.loads(encode_pong(ping.client_time, 1))["client_time"] == t


def test_visualization_refuses_non_finite() -> None:
    """NaN cannot be encoded as JSON: ValueError."""
    with pytest.raises(ValueError):
        encode_visualization([1.0, float("nan")])


def _param_reference(obj: dict[str, object]) -> tuple[str, float, int | None]:
    """A param's checks one field at a time, as the protocol states them."""
    name = obj.get("param")
    if name is None:
        raise ProtocolError(INVALID_MESSAGE, "param needs a string field 'param'")
    if not isinstance(name, str):
        raise ProtocolError(INVALID_MESSAGE, "'param' must be a string")
    if not 1 <= len(name) <= 128:
        raise ProtocolError(INVALID_MESSAGE, "'param' must be 1..128 characters")
    if "value" not in obj:
        raise ProtocolError(INVALID_MESSAGE, "param needs a number field 'value'")
    value = obj["value"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(INVALID_MESSAGE, "'value' must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise ProtocolError(INVALID_VALUE, "'value' is too large") from None
    if not math.isfinite(number):
        raise ProtocolError(INVALID_VALUE, "'value' must be finite")
    if abs(number) > FLOAT32_MAX:
        raise ProtocolError(INVALID_VALUE, "'value' is outside the float32 range")
    at = obj.get("at")
    if at is not None and (isinstance(at, bool) or not isinstance(at, int) or not 0 <= at <= 2**53):
        raise ProtocolError(INVALID_TIME, "'at' must be a non-negative integer (server µs)")
    return name, number, at  # type: ignore[return-value]


def test_param_fields_decide_every_field_as_the_plain_checks_do() -> None:
    """The hot path's shortcut (a float in range, a short name) changes no outcome:
    every combination of edge values gives the same fields, or the same code and text."""
    big = 2.0**128
    names: list[object] = ["gain", "x" * 128, "x" * 129, "", 5, None, "MISSING", ["a"]]
    values: list[object] = [
        0.5, -0.0, FLOAT32_MAX, -FLOAT32_MAX, math.nextafter(FLOAT32_MAX, math.inf),
        -big, math.inf, -math.inf, math.nan, 3, 10**400, True, None, "1", "MISSING",
    ]  # fmt: skip
    ats: list[object] = [None, 0, 2**53, 2**53 + 1, -1, True, 1.5, "MISSING"]
    for name in names:
        for value in values:
            for at in ats:
                obj: dict[str, object] = {"type": "param"}
                for key, v in (("param", name), ("value", value), ("at", at)):
                    if v != "MISSING":
                        obj[key] = v
                try:
                    want: object = _param_reference(obj)
                except ProtocolError as exc:
                    want = (exc.code, exc.message)
                try:
                    got: object = param_fields(obj)
                    message: object = parse_client_message(orjson.dumps(obj))
                except ProtocolError as exc:
                    got = message = (exc.code, exc.message)
                except (TypeError, orjson.JSONEncodeError):  # NaN / 10**400: not JSON
                    got, message = param_fields(obj), None
                assert got == want, obj
                if isinstance(want, tuple) and isinstance(message, Param):
                    assert (message.param, message.value, message.at) == want
                    assert type(want[1]) is float
