"""drain_block: events due in an audio block at their sample offsets."""

from __future__ import annotations

import numpy as np
import pytest

from bbx_net import EVENT_DTYPE, MESSAGE_DTYPE, net_buffer, to_sample_offset

RATE = 48_000
BLOCK = 480  # 10 ms


def events(n: int = 64) -> np.ndarray:
    return np.zeros(n, EVENT_DTYPE)


def test_unscheduled_and_past_events_are_due_at_offset_zero() -> None:
    """No `at`, or `at` before the block: sample_offset 0, arrival order kept."""
    p, c = net_buffer(16)
    p.try_send_param("a", 1.0, timestamp_us=50_000)  # receipt time, not a schedule
    p.try_send_param("b", 2.0, timestamp_us=1_000, scheduled=True)  # long past
    out = events()
    assert c.drain_block(out, 10_000, RATE, BLOCK) == 2
    assert list(out["sample_offset"][:2]) == [0, 0]
    assert list(out["payload"][:2, 0]) == [1.0, 2.0]


def test_events_inside_the_block_get_their_frame_ordered_by_time() -> None:
    """Scheduled events sent out of order come back sorted, each at its frame."""
    p, c = net_buffer(16)
    start = 1_000_000
    for at in (start + 9_000, start + 1_000, start + 5_000, start):
        p.try_send_param("f", float(at - start), timestamp_us=at, scheduled=True)
    out = events()
    n = c.drain_block(out, start, RATE, BLOCK)
    assert n == 4
    assert list(out["sample_offset"][:n]) == [0, 48, 240, 432]
    assert list(out["timestamp_us"][:n]) == [start, start + 1_000, start + 5_000, start + 9_000]


def test_future_events_are_held_across_blocks() -> None:
    """An event three blocks ahead stays pending until its block, then lands on its frame."""
    p, c = net_buffer(4)
    at = 30_000 + 2_500  # block 3 (30..40 ms), 2.5 ms in
    p.try_send_trigger("hit", timestamp_us=at, scheduled=True)
    out = events()
    for block in range(3):
        assert c.drain_block(out, block * 10_000, RATE, BLOCK) == 0
        assert c.pending == 1
    assert c.drain_block(out, 30_000, RATE, BLOCK) == 1
    assert out["sample_offset"][0] == 120 and c.pending == 0


def test_block_end_is_exclusive() -> None:
    """An event exactly at the next block's start belongs to the next block."""
    p, c = net_buffer(4)
    p.try_send_param("f", 1.0, timestamp_us=10_000, scheduled=True)
    out = events()
    assert c.drain_block(out, 0, RATE, BLOCK) == 0
    assert c.drain_block(out, 10_000, RATE, BLOCK) == 1 and out["sample_offset"][0] == 0


def test_equal_times_keep_arrival_order() -> None:
    """Ties at the same timestamp come out in the order they were sent."""
    p, c = net_buffer(64)
    for i in range(40):
        p.try_send_param("f", float(i), timestamp_us=5_000, scheduled=True)
    out = events()
    assert c.drain_block(out, 0, RATE, BLOCK) == 40
    assert list(out["payload"][:40, 0]) == [float(i) for i in range(40)]


def test_small_output_is_filled_then_continued() -> None:
    """When `out` is full the rest stays due: a second call for the block gets it."""
    p, c = net_buffer(16)
    for i in range(10):
        p.try_send_param("f", float(i))
    out = events(4)
    got = []
    for _ in range(3):
        n = c.drain_block(out, 0, RATE, BLOCK)
        got += list(out["payload"][:n, 0])
    assert got == [float(i) for i in range(10)]


def test_full_schedule_keeps_later_messages_in_the_ring_and_counts() -> None:
    """Schedule storage full of future events: nothing lost, nothing allocated, counted."""
    p, c = net_buffer(8, schedule_capacity=4)
    for i in range(4):
        p.try_send_param("late", float(i), timestamp_us=1_000_000 + i, scheduled=True)
    for i in range(3):
        p.try_send_param("now", float(10 + i))
    out = events()
    assert c.drain_block(out, 0, RATE, BLOCK) == 0
    assert c.pending == 4 and len(c) == 3 and c.schedule_full == 1
    # The future comes: the four held events, then what waited in the ring.
    assert c.drain_block(out, 1_000_000, RATE, BLOCK) == 7
    assert list(out["payload"][:7, 0]) == [0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0]
    assert list(out["sample_offset"][:7]) == [0, 0, 0, 0, 0, 0, 0]
    assert c.pending == 0 and c.is_empty()


def test_full_schedule_that_frees_room_pulls_more_in_the_same_call() -> None:
    """Due events leaving a full schedule make room for the rest of the ring at once."""
    p, c = net_buffer(16, schedule_capacity=2)
    for i in range(10):
        p.try_send_param("f", float(i))
    out = events()
    assert c.drain_block(out, 0, RATE, BLOCK) == 10
    assert c.schedule_full == 0


def test_zero_schedule_capacity_still_drains_unscheduled_messages() -> None:
    """schedule_capacity=0 makes drain_block hold nothing; it never loops forever."""
    p, c = net_buffer(4, schedule_capacity=0)
    p.try_send_param("f", 1.0)
    assert c.drain_block(events(), 0, RATE, BLOCK) == 0
    assert len(c) == 1 and c.schedule_full == 1


@pytest.mark.parametrize(
    "bad", [np.zeros(4, MESSAGE_DTYPE), np.zeros(4), np.zeros((2, 2), EVENT_DTYPE)]
)
def test_wrong_event_array_raises_and_consumes_nothing(bad: np.ndarray) -> None:
    """drain_block needs EVENT_DTYPE, 1-D, C-contiguous, writable."""
    p, c = net_buffer(4)
    p.try_send_param("f", 1.0)
    with pytest.raises(TypeError):
        c.drain_block(bad, 0, RATE, BLOCK)
    assert len(c) == 1


@pytest.mark.parametrize(("rate", "size"), [(0, 256), (48_000, 0)])
def test_zero_rate_or_block_size_raises(rate: int, size: int) -> None:
    """sample_rate and block_size must be positive."""
    _, c = net_buffer(4)
    with pytest.raises(ValueError):
        c.drain_block(events(), 0, rate, size)


def test_random_schedule_matches_a_sorted_reference(rng: object) -> None:
    """Random arrivals over many blocks: each event once, in its block, at its frame."""
    import random

    assert isinstance(rng, random.Random)
    p, c = net_buffer(256, schedule_capacity=4096)
    out = events(512)
    sent: list[tuple[int, int]] = []  # (at, id)
    got: list[tuple[int, int, int]] = []  # (block_start, offset, id)
    block_us = BLOCK * 1_000_000 // RATE
    next_id = 0
    for block in range(300):
        start = block * block_us
        for _ in range(rng.randint(0, 8)):
            at = start + rng.randint(-20_000, 200_000)
            at = max(at, 0)
            if p.try_send_param("f", 0.0, node_id_lo=next_id, timestamp_us=at, scheduled=True):
                sent.append((at, next_id))
                next_id += 1
        n = c.drain_block(out, start, RATE, BLOCK)
        offsets = list(out["sample_offset"][:n])
        assert offsets == sorted(offsets)
        idents = out["node_id_lo"][:n]
        got += [(start, int(o), int(i)) for o, i in zip(offsets, idents, strict=True)]
    at_of = dict((i, at) for at, i in sent)
    for start, offset, ident in got:
        at = at_of[ident]
        expected = to_sample_offset(at, start, RATE, BLOCK)
        assert expected == offset, (start, at, offset)
    delivered = {i for _, _, i in got}
    last_start = 299 * block_us
    assert delivered == {i for at, i in sent if at < last_start + block_us}
    assert len(got) == len(delivered)
