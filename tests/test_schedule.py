"""drain_block: events due in an audio block at their sample offsets."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from bbx_net import EVENT_DTYPE, MESSAGE_DTYPE, bind_blocks, net_buffer, to_sample_offset

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


# ---- several rings drained together (bind_blocks / bbx_rings_drain_block) -----------


def _twin_rings(
    rng: random.Random, n_rings: int, per_ring: int, span_us: int
) -> tuple[list[Any], list[Any]]:
    """Two identical sets of rings holding the same random events (tagged ring, index)."""
    sets: list[list[Any]] = [[], []]
    plans = []
    for _ in range(n_rings):
        plan = []
        for k in range(per_ring):
            if rng.random() < 0.3:
                plan.append((k, 0, False))  # unscheduled: offset 0
            else:
                plan.append((k, rng.randint(0, span_us), True))
        plans.append(plan)
    for rings in sets:
        for r, plan in enumerate(plans):
            p, c = net_buffer(per_ring + 1, schedule_capacity=per_ring + 1)
            for k, at, scheduled in plan:
                assert p.try_send_param(
                    "f", float(k), node_id_hi=r, node_id_lo=k, timestamp_us=at, scheduled=scheduled
                )
            rings.append((p, c))
    return sets[0], sets[1]


def _merge_model(runs: list[list[tuple[int, int, int]]]) -> list[tuple[int, int, int]]:
    """The merge as specified: the least offset first; among equal offsets the rings
    take turns, starting after the ring that emitted last (ring 0 to begin with)."""
    runs = [list(r) for r in runs]
    merged = []
    last = len(runs) - 1
    while any(runs):
        order = [(last + step) % len(runs) for step in range(1, len(runs) + 1)]
        best = min((i for i in order if runs[i]), key=lambda i: runs[i][0][0])
        merged.append(runs[best].pop(0))
        last = best
    return merged


def _tags(out: np.ndarray, n: int) -> list[tuple[int, int, int]]:
    return [(int(e["sample_offset"]), int(e["node_id_hi"]), int(e["node_id_lo"])) for e in out[:n]]


@pytest.mark.parametrize("seed", range(20))
def test_merged_drain_is_each_rings_drain_merged_by_offset(seed: int) -> None:
    """Block after block, the merged drain gives what draining each ring alone gives,
    merged by sample offset, the rings taking turns among equal offsets."""
    rng = random.Random(seed)
    n_rings = rng.randint(1, 4)
    block_us = BLOCK * 1_000_000 // RATE
    merged_rings, single_rings = _twin_rings(rng, n_rings, rng.randint(0, 40), 6 * block_us)
    out = events(256)
    merged = bind_blocks([c for _, c in merged_rings], out, RATE, BLOCK)
    for block in range(8):
        start = block * block_us
        runs = []
        for _, c in single_rings:
            alone = events(256)
            runs.append(_tags(alone, c.drain_block(alone, start, RATE, BLOCK)))
        expected = _merge_model(runs)
        assert sorted(expected) == sorted(t for run in runs for t in run)
        n = merged.drain(start)
        assert _tags(out, n) == expected, block
    assert all(c.pending == 0 and c.is_empty() for _, c in merged_rings)


def test_merged_drain_shares_a_small_array_and_loses_nothing() -> None:
    """A busy ring cannot starve the others: at equal offsets the rings take turns;
    calling again for the same block gives the rest."""
    p0, c0 = net_buffer(128)
    p1, c1 = net_buffer(128)
    for k in range(100):
        assert p0.try_send_param("busy", float(k), node_id_lo=k)
    for k in range(5):
        assert p1.try_send_param("quiet", float(k), node_id_lo=100 + k)
    out = events(8)
    merged = bind_blocks([c0, c1], out, RATE, BLOCK)
    n = merged.drain(0)
    assert n == 8
    assert [int(i) for i in out["node_id_lo"][:n]] == [0, 100, 1, 101, 2, 102, 3, 103]
    seen = [int(i) for i in out["node_id_lo"][:n]]
    for _ in range(100):
        n = merged.drain(0)
        seen += [int(i) for i in out["node_id_lo"][:n]]
        if n < len(out):
            break
    assert sorted(seen) == list(range(105))
    assert len(seen) == 105


def test_merged_drain_checks_what_it_is_bound_to() -> None:
    _, c = net_buffer(4)
    with pytest.raises(TypeError):
        bind_blocks([], events(4), RATE, BLOCK)
    with pytest.raises(TypeError):
        bind_blocks([c, "ring"], events(4), RATE, BLOCK)
    with pytest.raises(TypeError):
        bind_blocks([c], np.zeros(4, MESSAGE_DTYPE), RATE, BLOCK)
    with pytest.raises(TypeError):
        bind_blocks([c], events(0), RATE, BLOCK)
    with pytest.raises(ValueError):
        bind_blocks([c], events(4), 0, BLOCK)
    merged = bind_blocks((c,), events(4), RATE, BLOCK)
    assert merged.consumers == (c,) and len(merged.out) == 4


@pytest.mark.parametrize("seed", range(10))
def test_merged_drain_of_one_ring_is_drain_block_even_when_the_schedule_fills(
    seed: int,
) -> None:
    """One ring, a schedule smaller than what arrives and a small `out`: the merged
    drain gives exactly drain_block's events and counts the same stalls."""
    rng = random.Random(seed)
    block_us = BLOCK * 1_000_000 // RATE
    schedule = rng.randint(1, 6)
    twins = [net_buffer(64, schedule_capacity=schedule) for _ in range(2)]
    size = rng.randint(1, 5)
    outs = [events(size), events(size)]
    merged = bind_blocks([twins[0][1]], outs[0], RATE, BLOCK)
    for block in range(40):
        start = block * block_us
        for k in range(rng.randint(0, 5)):
            at = max(0, start + rng.randint(-block_us, 4 * block_us))
            scheduled = rng.random() < 0.9
            sent = [
                p.try_send_param(
                    "f", float(k), node_id_lo=block * 10 + k, timestamp_us=at, scheduled=scheduled
                )
                for p, _ in twins
            ]
            assert sent[0] == sent[1]
        for _ in range(20):
            a = merged.drain(start)
            b = twins[1][1].drain_block(outs[1], start, RATE, BLOCK)
            assert _tags(outs[0], a) == _tags(outs[1], b), (block, a, b)
            if a < size:
                break
    assert twins[0][1].schedule_full == twins[1][1].schedule_full > 0  # it did fill
    assert twins[0][1].pending == twins[1][1].pending
