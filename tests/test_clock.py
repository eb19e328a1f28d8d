"""The server clock, NTP maths, the offset estimator and sample offsets."""

from __future__ import annotations

import math
import time

import pytest

from bbx_net import ClockSync, OffsetEstimator, ntp_offset, round_trip_delay, to_sample_offset
from bbx_net._clock import CLOCK_CAPSULE_NAME


def test_clock_counts_microseconds_from_creation() -> None:
    """now_us starts near 0, never goes back and tracks time.monotonic."""
    clock = ClockSync()
    t0 = time.monotonic()
    first = clock.now_us()
    assert 0 <= first < 1_000_000
    readings = [clock.now_us() for _ in range(1000)]
    assert readings == sorted(readings)
    time.sleep(0.05)
    elapsed_us = (time.monotonic() - t0) * 1e6
    assert abs((clock.now_us() - first) - elapsed_us) < 20_000


def test_tick_stores_the_cached_value() -> None:
    """cached_us is 0 before tick() and the tick's reading after."""
    clock = ClockSync()
    assert clock.cached_us == 0
    time.sleep(0.002)
    t = clock.tick()
    assert t > 0 and clock.cached_us == t
    assert clock.now_us() >= t


def test_clock_capsule_is_named() -> None:
    """The capsule carries the documented name and points at the clock."""
    clock = ClockSync()
    assert f'"{CLOCK_CAPSULE_NAME}"' in repr(clock.capsule)
    assert clock.address % 64 == 0


def test_ntp_maths_with_the_original_sign_convention() -> None:
    """Client 1 s ahead, 10 ms each way, 2 ms think time: offset +1 s, delay 20 ms."""
    # Server stamps t1 (send) and t4 (receive); the client stamps t2 and t3.
    t1 = 100_000
    t2 = t1 + 10_000 + 1_000_000
    t3 = t2 + 2_000
    t4 = t1 + 10_000 + 2_000 + 10_000
    assert ntp_offset(t1, t2, t3, t4) == 1_000_000
    assert round_trip_delay(t1, t2, t3, t4) == 20_000
    assert ntp_offset(0, -500, -500, 0) == -500  # client behind: negative


def test_ntp_maths_refuses_non_finite() -> None:
    """NaN or inf timestamps raise ValueError."""
    with pytest.raises(ValueError):
        ntp_offset(math.nan, 0, 0, 0)
    with pytest.raises(ValueError):
        round_trip_delay(0, 0, math.inf, 0)


def test_estimator_tracks_drift() -> None:
    """A client running 50 ppm fast shows a drift of 50 ppm and an extrapolated offset."""
    est = OffsetEstimator(window=16, track_drift=True)
    for i in range(16):
        t1 = i * 1_000_000.0
        offset = 1_000.0 + 50e-6 * t1
        est.add_sample(t1, t1 + 2_000 + offset, t1 + 2_000 + offset, t1 + 4_000)
    assert est.drift_ppm == pytest.approx(50.0, rel=1e-6)
    assert est.offset_at(30_000_000) == pytest.approx(1_000 + 50e-6 * (30_000_000 - 2_000))
    assert OffsetEstimator().drift_ppm is None


def test_estimator_refuses_bad_samples_and_keeps_good_ones() -> None:
    """Negative delay or NaN raises; earlier samples are kept."""
    est = OffsetEstimator()
    est.add_sample(0, 10, 10, 20)
    with pytest.raises(ValueError):
        est.add_sample(0, 100, 200, 50)
    with pytest.raises(ValueError):
        est.add_sample(0, math.nan, 0, 0)
    assert est.samples_seen == 1 and est.offset_us == 0
    with pytest.raises(ValueError):
        OffsetEstimator(window=0)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (0, 0),
        (999_999, 0),
        (1_000_000, 0),
        (1_000_001, 0),
        (1_000_021, 1),
        (1_005_000, 240),
        (1_005_312, 254),
        (1_005_333, 255),
        (1_005_334, None),
        (10**15, None),
    ],
)
def test_to_sample_offset(ts: int, expected: int | None) -> None:
    """Past → 0, inside the 256-frame block → its frame, later → None."""
    assert to_sample_offset(ts, 1_000_000, 48_000, 256) == expected


def test_to_sample_offset_huge_values_do_not_overflow() -> None:
    """Timestamps near 2**64 are simply later than the block."""
    assert to_sample_offset(2**64 - 1, 0, 768_000, 4096) is None
    with pytest.raises(ValueError):
        to_sample_offset(0, 0, 0, 256)
