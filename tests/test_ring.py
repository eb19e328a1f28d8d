"""The ring's behaviour, run against the native ring and the plain-Python model."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from bbx_net import (
    MESSAGE_DTYPE,
    RING_CAPSULE_NAME,
    MessageType,
    NetBufferConsumer,
    PayloadKind,
    ProducerThreadError,
    _ring,  # private self-test helpers
    hash_param_name,
    net_buffer,
    ring_address,
)

from conftest import TIMEOUT_SCALE
from ring_model import model_net_buffer

CAPACITIES = [1, 2, 3, 7, 64, 256]

Factory = Callable[[int], tuple[Any, Any]]


@pytest.fixture(params=["native", "model"])
def make_ring(request: pytest.FixtureRequest) -> Factory:
    """Builds a ring: the native one or the Python model, same contract."""
    return net_buffer if request.param == "native" else model_net_buffer


# ---- behaviour shared by the native ring and the model ------------------------------


@pytest.mark.parametrize("capacity", CAPACITIES)
def test_exactly_capacity_messages_fit(make_ring: Factory, capacity: int) -> None:
    """Exactly `capacity` sends succeed; the next is refused and counted."""
    p, c = make_ring(capacity)
    assert c.is_empty() and p.is_empty() and not p.is_full()
    for i in range(capacity):
        assert p.try_send_param("gain", float(i), timestamp_us=i)
    assert p.is_full() and len(p) == capacity and len(c) == capacity
    assert not p.try_send_param("gain", 99.0)
    assert not p.try_send_trigger("pad")
    assert p.dropped == 2
    assert [c.try_pop().timestamp_us for _ in range(capacity)] == list(range(capacity))
    assert c.try_pop() is None


@pytest.mark.parametrize("capacity", CAPACITIES)
def test_wraps_around_in_order(make_ring: Factory, capacity: int, rng: Any) -> None:
    """Many laps of random fill levels keep order and lose nothing."""
    p, c = make_ring(capacity)
    sent = received = 0
    out = np.zeros(max(1, capacity // 2 + 1), MESSAGE_DTYPE)
    for _ in range(capacity * 40 + 50):
        for _ in range(rng.randint(0, capacity)):
            if p.try_send_param("freq", 0.5, timestamp_us=sent):
                sent += 1
        if rng.random() < 0.5:
            m = c.try_pop()
            if m is not None:
                assert m.timestamp_us == received
                received += 1
        else:
            n = c.drain_into(out)
            assert list(out["timestamp_us"][:n]) == list(range(received, received + n))
            received += n
        assert len(c) == sent - received
    assert p.dropped >= 0 and sent > capacity * 10


def test_message_fields_round_trip(make_ring: Factory) -> None:
    """Every field sent comes back unchanged through try_pop and drain_into."""
    p, c = make_ring(8)
    assert p.try_send(
        MessageType.TRIGGER,
        0xDEADBEEF,
        PayloadKind.COORDINATES,
        0.25,
        -0.75,
        2**64 - 1,
        12345,
        2**63 + 7,
        scheduled=True,
    )
    m = c.try_pop()
    assert (m.type, m.param_hash, m.payload_kind) == (1, 0xDEADBEEF, 2)
    assert (m.value, m.y, m.node_id_hi, m.node_id_lo) == (0.25, -0.75, 2**64 - 1, 12345)
    assert m.timestamp_us == 2**63 + 7 and m.is_scheduled
    assert p.try_send_trigger("xy", 0.5, 1.5, node_id_lo=3, timestamp_us=9)
    out = np.zeros(4, MESSAGE_DTYPE)
    assert c.drain_into(out) == 1
    row = out[0]
    assert row["type"] == MessageType.TRIGGER and row["payload_kind"] == PayloadKind.COORDINATES
    assert row["param_hash"] == hash_param_name("xy")
    assert list(row["payload"]) == [0.5, 1.5] and row["node_id_lo"] == 3
    assert row["flags"] == 0 and row["timestamp_us"] == 9


def test_param_hash_given_as_int_or_name(make_ring: Factory) -> None:
    """A parameter can be named or given by its hash; both reach the ring the same."""
    p, c = make_ring(4)
    p.try_send_param("volume", 1.0)
    p.try_send_param(0x2EE0698F, 1.0)
    assert c.try_pop().param_hash == c.try_pop().param_hash == 0x2EE0698F


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e39])
def test_non_finite_values_are_refused_and_nothing_is_queued(
    make_ring: Factory, bad: float
) -> None:
    """NaN, inf and values beyond float32 raise ValueError and queue nothing."""
    p, c = make_ring(4)
    p.try_send_param("gain", 0.1)
    with pytest.raises(ValueError):
        p.try_send_param("gain", bad)
    with pytest.raises(ValueError):
        p.try_send_trigger("pad", bad, 0.0)
    with pytest.raises(ValueError):
        p.try_send(0, 1, 1, bad)
    assert len(c) == 1 and c.try_pop().value == pytest.approx(0.1)


@pytest.mark.parametrize("bad", [None, 1.5, b"gain", -1, 2**32, True])
def test_bad_parameter_names_raise(make_ring: Factory, bad: object) -> None:
    """Names must be str or a 32-bit int hash."""
    p, c = make_ring(4)
    with pytest.raises((TypeError, ValueError)):
        p.try_send_param(bad, 0.5)
    assert c.is_empty()


def test_trigger_needs_both_coordinates(make_ring: Factory) -> None:
    """x without y (or y without x) is refused."""
    p, c = make_ring(4)
    with pytest.raises(ValueError):
        p.try_send_trigger("pad", 0.5)
    with pytest.raises(ValueError):
        p.try_send_trigger("pad", None, 0.5)
    assert c.is_empty()


@pytest.mark.parametrize("capacity", [0, -1, (1 << 24) + 1, 10**12])
def test_absurd_capacities_are_refused(make_ring: Factory, capacity: int) -> None:
    """Capacities below 1 or above MAX_CAPACITY raise ValueError."""
    with pytest.raises(ValueError):
        make_ring(capacity)


def test_non_int_capacity_is_refused(make_ring: Factory) -> None:
    """A float or str capacity raises TypeError."""
    with pytest.raises(TypeError):
        make_ring("8")
    with pytest.raises(TypeError):
        make_ring(8.0)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(4, np.float64),
        np.zeros((4, 1), MESSAGE_DTYPE),
        np.zeros(8, MESSAGE_DTYPE)[::2],
        [0, 0, 0],
    ],
)
def test_drain_into_wrong_array_raises_and_consumes_nothing(make_ring: Factory, bad: Any) -> None:
    """Wrong dtype, shape or contiguity: TypeError, and the messages stay queued."""
    p, c = make_ring(4)
    p.try_send_param("gain", 0.5)
    with pytest.raises(TypeError):
        c.drain_into(bad)
    assert len(c) == 1


def test_drain_into_read_only_array_raises(make_ring: Factory) -> None:
    """A read-only array is refused before anything is consumed."""
    p, c = make_ring(4)
    p.try_send_param("gain", 0.5)
    out = np.zeros(4, MESSAGE_DTYPE)
    out.flags.writeable = False
    with pytest.raises(TypeError):
        c.drain_into(out)
    assert len(c) == 1


def test_second_producer_thread_is_detected(make_ring: Factory) -> None:
    """A send from another thread raises ProducerThreadError and queues nothing."""
    p, c = make_ring(4)
    p.try_send_param("gain", 0.5)
    errors: list[BaseException] = []

    def other() -> None:
        try:
            p.try_send_param("gain", 0.7)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join(10 * TIMEOUT_SCALE)
    assert len(errors) == 1 and isinstance(errors[0], ProducerThreadError)
    assert len(c) == 1


# ---- native only ------------------------------------------------------------------


def test_rebind_thread_hands_the_producer_over() -> None:
    """After rebind_thread() the new thread may send and the old one may not."""
    p, c = net_buffer(4)
    p.try_send_param("gain", 0.1)
    done: list[bool] = []

    def other() -> None:
        p.rebind_thread()
        done.append(p.try_send_param("gain", 0.2))

    t = threading.Thread(target=other)
    t.start()
    t.join(10 * TIMEOUT_SCALE)
    assert done == [True]
    with pytest.raises(ProducerThreadError):
        p.try_send_param("gain", 0.3)
    assert len(c) == 2


def test_ring_objects_cannot_be_built_directly() -> None:
    """Only net_buffer() makes ring ends (they need shared storage)."""
    with pytest.raises(TypeError):
        NetBufferConsumer()


def test_capsule_and_address_name_the_same_ring() -> None:
    """The capsule carries the documented name and the consumer's address."""
    _, c = net_buffer(4)
    cap = c.capsule
    assert f'"{RING_CAPSULE_NAME}"' in repr(cap)
    assert ring_address(cap) == ring_address(c) == c.ring_address != 0


def test_foreign_capsule_is_refused() -> None:
    """A capsule with another name (or any other object) raises TypeError."""
    import datetime

    foreign = datetime.datetime_CAPI  # a real PyCapsule named "datetime.datetime_CAPI"
    with pytest.raises(TypeError):
        ring_address(foreign)
    with pytest.raises(TypeError):
        ring_address(object())
    with pytest.raises(TypeError):
        _ring._SequenceChecker(foreign, 1, 1.0)


def test_python_producer_to_native_consumer_thread_exactly_once_in_order() -> None:
    """3,000,000 messages from a Python thread reach a C thread (no GIL) once, in order."""
    total = 3_000_000
    p, c = net_buffer(1024)
    checker = _ring._SequenceChecker(c, total, 120.0 * TIMEOUT_SCALE)
    deadline = time.monotonic() + 120.0 * TIMEOUT_SCALE
    send = p.try_send
    seq = 0
    refused = 0
    while seq < total:
        if send(0, seq & 0xFFFFFFFF, 1, 0.0, 0.0, 0, seq, seq):
            seq += 1
        else:
            refused += 1
            if refused & 0xFFFF == 0 and time.monotonic() > deadline:
                break
    result = checker.join()
    print(f"moved {result['received']} messages, producer saw the ring full {refused} times")
    assert result == {"received": total, "errors": 0, "first_bad": None, "timed_out": False}
    assert p.dropped == refused and c.is_empty()


def test_native_drain_releases_the_gil() -> None:
    """A drain loop in C receives what a Python thread sends *during* the loop.

    The ring holds 16; 20,000 messages can only arrive if the Python producer thread
    runs while the calling thread is inside the C loop, i.e. the GIL is released.
    """
    total = 20_000
    p, c = net_buffer(16)
    started = threading.Event()

    def produce() -> None:
        started.wait(10 * TIMEOUT_SCALE)
        seq = 0
        deadline = time.monotonic() + 30 * TIMEOUT_SCALE
        while seq < total and time.monotonic() < deadline:
            if p.try_send(0, seq, 1, 0.0, 0.0, 0, seq, seq):
                seq += 1

    t = threading.Thread(target=produce)
    t.start()
    started.set()
    received, in_order = _ring._drain_count_nogil(c, total, 30.0 * TIMEOUT_SCALE)
    t.join(40 * TIMEOUT_SCALE)
    assert (received, in_order) == (total, True)
