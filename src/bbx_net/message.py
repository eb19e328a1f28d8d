"""The message that crosses to the audio thread, as numpy sees it, and node ids."""

from __future__ import annotations

import enum
import secrets
from collections.abc import Container
from dataclasses import dataclass

import numpy as np

from ._ring import hash_param_name

__all__ = [
    "EVENT_DTYPE",
    "MESSAGE_DTYPE",
    "MessageType",
    "NodeId",
    "PayloadKind",
    "hash_param_name",
]


class MessageType(enum.IntEnum):
    """`bbx_message.type`; the numbering of the original."""

    PARAMETER_CHANGE = 0
    TRIGGER = 1
    STATE_REQUEST = 2
    STATE_RESPONSE = 3
    PING = 4
    PONG = 5


class PayloadKind(enum.IntEnum):
    """What `bbx_message.payload` holds."""

    NONE = 0
    VALUE = 1  # payload[0]
    COORDINATES = 2  # payload[0] = x, payload[1] = y


#: Flag bit in `flags`: `timestamp_us` is a requested time (`at`), not receipt time.
FLAG_SCHEDULED = 1

_MESSAGE_FIELDS: list[tuple[str, str] | tuple[str, str, tuple[int, ...]]] = [
    ("type", "<u4"),
    ("param_hash", "<u4"),
    ("payload_kind", "<u4"),
    ("payload", "<f4", (2,)),
    ("flags", "<u4"),
    ("node_id_hi", "<u8"),
    ("node_id_lo", "<u8"),
    ("timestamp_us", "<u8"),
]

#: One `bbx_message` (48 bytes): the C layout, checked against the compiler by a test.
MESSAGE_DTYPE = np.dtype(_MESSAGE_FIELDS, align=True)

#: One `bbx_event` (56 bytes): a message's fields plus the frame it is due at.
EVENT_DTYPE = np.dtype(
    [*_MESSAGE_FIELDS, ("sample_offset", "<u4"), ("reserved", "<u4")], align=True
)

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True, order=True)
class NodeId:
    """A 128-bit connection id, printed UUID-style (8-4-4-4-12 lowercase hex)."""

    high: int
    low: int

    def __post_init__(self) -> None:
        for half in (self.high, self.low):
            if not isinstance(half, int) or isinstance(half, bool) or not 0 <= half <= _MASK64:
                raise ValueError(f"NodeId halves are 64-bit unsigned ints, got {half!r}")

    @classmethod
    def generate(cls, live: Container[NodeId] = ()) -> NodeId:
        """A new id from the OS's cryptographic random source, not among `live`."""
        while True:
            bits = secrets.randbits(128)
            node = cls(bits >> 64, bits & _MASK64)
            if node not in live:
                return node

    @classmethod
    def parse(cls, text: str) -> NodeId:
        """Parses the `8-4-4-4-12` form.

        Raises:
            ValueError: `text` is not a UUID-style string of 32 hex digits.
        """
        if not isinstance(text, str):
            raise TypeError(f"NodeId.parse takes a str, not {type(text).__name__}")
        parts = text.split("-")
        if [len(p) for p in parts] != [8, 4, 4, 4, 12]:
            raise ValueError(f"not a node id (8-4-4-4-12 hex): {text!r}")
        digits = "".join(parts)
        try:
            value = int(digits, 16)
        except ValueError:
            raise ValueError(f"not a node id (8-4-4-4-12 hex): {text!r}") from None
        if not all(c in "0123456789abcdefABCDEF" for c in digits):
            raise ValueError(f"not a node id (8-4-4-4-12 hex): {text!r}")
        return cls(value >> 64, value & _MASK64)

    @property
    def value(self) -> int:
        """The id as one 128-bit integer."""
        return (self.high << 64) | self.low

    def __str__(self) -> str:
        h = f"{self.value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
