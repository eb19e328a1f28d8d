"""bbx_net: phones and browser control surfaces steer a live audio process.

The native core (`net_buffer`, `ClockSync`, the C header under `get_include()`) moves
messages to the audio thread without the GIL; `bbx_net.websocket` serves the phones.
"""

from __future__ import annotations

import os

from ._clock import (
    ClockSync,
    ntp_offset,
    round_trip_delay,
    to_sample_offset,
)
from ._ring import (
    ABI_VERSION,
    RING_CAPSULE_NAME,
    BlockDrain,
    BoundVizWriter,
    MergedBlockDrain,
    Message,
    NetBufferConsumer,
    NetBufferProducer,
    SharedSegment,
    VizReader,
    VizWriter,
    bind_blocks,
    net_buffer,
    ring_address,
    viz_buffer,
)
from .block_clock import BlockClock
from .clock_filter import OffsetEstimator
from .errors import BbxNetError, ProducerThreadError
from .message import (
    EVENT_DTYPE,
    FLAG_SCHEDULED,
    MESSAGE_DTYPE,
    MessageType,
    NodeId,
    PayloadKind,
    hash_param_name,
)

__version__ = "0.1.0"

__all__ = [
    "ABI_VERSION",
    "EVENT_DTYPE",
    "FLAG_SCHEDULED",
    "MESSAGE_DTYPE",
    "RING_CAPSULE_NAME",
    "BbxNetError",
    "BlockDrain",
    "BoundVizWriter",
    "MergedBlockDrain",
    "SharedSegment",
    "VizReader",
    "VizWriter",
    "viz_buffer",
    "ClockSync",
    "Message",
    "MessageType",
    "NetBufferConsumer",
    "NetBufferProducer",
    "NodeId",
    "OffsetEstimator",
    "BlockClock",
    "PayloadKind",
    "ProducerThreadError",
    "__version__",
    "bind_blocks",
    "get_include",
    "hash_param_name",
    "net_buffer",
    "ntp_offset",
    "ring_address",
    "round_trip_delay",
    "serve_pool",
    "serve_process",
    "to_sample_offset",
]


def __getattr__(name: str) -> object:
    # serve_process / serve_pool without importing the server (websockets) on `import bbx_net`.
    if name == "serve_process":
        from .websocket.process import serve_process

        return serve_process
    if name == "serve_pool":
        from .websocket.pool import serve_pool

        return serve_pool
    raise AttributeError(f"module 'bbx_net' has no attribute {name!r}")


def get_include() -> str:
    """The directory to add to a C compiler's include path for `bbx_net/bbx_net.h`."""
    return os.path.join(os.path.dirname(__file__), "include")
