"""A plain-Python model of the ring, run through the same behavioural tests as the
native one (tests/test_ring.py). It is what the native ring must behave like."""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Any

import numpy as np

from bbx_net import FLAG_SCHEDULED, MESSAGE_DTYPE, ProducerThreadError, hash_param_name


class ModelMessage:
    """The fields of one message, compared with the native Message by `fields()`."""

    def __init__(self, row: tuple[Any, ...]) -> None:
        (
            self.type,
            self.param_hash,
            self.payload_kind,
            self.value,
            self.y,
            self.flags,
            self.node_id_hi,
            self.node_id_lo,
            self.timestamp_us,
        ) = row

    @property
    def is_scheduled(self) -> bool:
        return bool(self.flags & FLAG_SCHEDULED)


def _hash(param: object) -> int:
    if isinstance(param, str):
        return hash_param_name(param)
    if isinstance(param, int) and not isinstance(param, bool):
        if 0 <= param <= 0xFFFFFFFF:
            return param
        raise ValueError("hash out of range")
    raise TypeError("param must be str or int")


def _f32(value: float) -> float:
    if not math.isfinite(value) or abs(value) > float(np.finfo(np.float32).max):
        raise ValueError("not finite")
    narrowed = float(np.float32(value))
    if not math.isfinite(narrowed):
        raise ValueError("not finite")
    return narrowed


class _ModelEnd:
    """What both ends share: the deque, its capacity and the drop count."""

    def __init__(self, shared: _Shared) -> None:
        self._s = shared

    def __len__(self) -> int:
        return len(self._s.items)

    def is_empty(self) -> bool:
        return not self._s.items

    @property
    def capacity(self) -> int:
        return self._s.capacity

    @property
    def dropped(self) -> int:
        return self._s.dropped


class ModelProducer(_ModelEnd):
    def __init__(self, shared: _Shared) -> None:
        super().__init__(shared)
        self._owner: int | None = None

    def _check(self) -> None:
        me = threading.get_ident()
        if self._owner is None:
            self._owner = me
        elif self._owner != me:
            raise ProducerThreadError("second producer thread")

    def _push(self, row: tuple[Any, ...]) -> bool:
        if len(self._s.items) == self._s.capacity:
            self._s.dropped += 1
            return False
        self._s.items.append(row)
        return True

    def try_send(
        self,
        message_type: int,
        param_hash: int,
        payload_kind: int = 0,
        value: float = 0.0,
        y: float = 0.0,
        node_id_hi: int = 0,
        node_id_lo: int = 0,
        timestamp_us: int = 0,
        scheduled: bool = False,
    ) -> bool:
        if not 0 <= message_type <= 5 or not 0 <= payload_kind <= 2:
            raise ValueError("out of range")
        row = (
            message_type,
            param_hash,
            payload_kind,
            _f32(value),
            _f32(y),
            FLAG_SCHEDULED if scheduled else 0,
            node_id_hi,
            node_id_lo,
            timestamp_us,
        )
        self._check()
        return self._push(row)

    def try_send_param(
        self,
        param: object,
        value: float,
        node_id_hi: int = 0,
        node_id_lo: int = 0,
        timestamp_us: int = 0,
        scheduled: bool = False,
    ) -> bool:
        row = (
            0,
            _hash(param),
            1,
            _f32(value),
            0.0,
            FLAG_SCHEDULED if scheduled else 0,
            node_id_hi,
            node_id_lo,
            timestamp_us,
        )
        self._check()
        return self._push(row)

    def try_send_trigger(
        self,
        name: object,
        x: float | None = None,
        y: float | None = None,
        node_id_hi: int = 0,
        node_id_lo: int = 0,
        timestamp_us: int = 0,
        scheduled: bool = False,
    ) -> bool:
        h = _hash(name)
        if (x is None) != (y is None):
            raise ValueError("x and y come together")
        a, b, kind = (0.0, 0.0, 0) if x is None or y is None else (_f32(x), _f32(y), 2)
        self._check()
        return self._push(
            (
                1,
                h,
                kind,
                a,
                b,
                FLAG_SCHEDULED if scheduled else 0,
                node_id_hi,
                node_id_lo,
                timestamp_us,
            )
        )

    def is_full(self) -> bool:
        return len(self._s.items) == self._s.capacity


class ModelConsumer(_ModelEnd):
    def try_pop(self) -> ModelMessage | None:
        return ModelMessage(self._s.items.popleft()) if self._s.items else None

    def drain_into(self, out: np.ndarray) -> int:
        if (
            not isinstance(out, np.ndarray)
            or out.dtype != MESSAGE_DTYPE
            or out.ndim != 1
            or not out.flags.c_contiguous
            or not out.flags.writeable
        ):
            raise TypeError("drain_into needs a C-contiguous 1-D array of MESSAGE_DTYPE")
        n = min(len(out), len(self._s.items))
        for i in range(n):
            r = self._s.items.popleft()
            out[i] = (r[0], r[1], r[2], (r[3], r[4]), r[5], r[6], r[7], r[8])
        return n


class _Shared:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: deque[tuple[Any, ...]] = deque()
        self.dropped = 0


def model_net_buffer(capacity: int) -> tuple[ModelProducer, ModelConsumer]:
    """The model's net_buffer: same contract, a deque inside."""
    if not isinstance(capacity, int):
        raise TypeError("capacity must be an int")
    if not 1 <= capacity <= 1 << 24:
        raise ValueError("capacity out of range")
    shared = _Shared(capacity)
    return ModelProducer(shared), ModelConsumer(shared)
