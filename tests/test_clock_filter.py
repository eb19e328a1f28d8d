"""The clock filter: its statistics, and the JS twin giving the same answers."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bbx_net import OffsetEstimator
from bbx_net.clock_filter import BURST_INTERVAL_US, BURST_SAMPLES, STEADY_INTERVAL_US

ROOT = Path(__file__).resolve().parents[1]
CLIENT_JS = ROOT / "src" / "bbx_net" / "web" / "bbx-client.js"
REPLAY = Path(__file__).parent / "js" / "clock_filter_replay.mjs"

Delays = Callable[[random.Random, float], tuple[float, float]]  # (up, down) µs at time t


def gaussian(mean_ms: float, sd_ms: float) -> Delays:
    def delays(rng: random.Random, t: float) -> tuple[float, float]:
        return (
            max(0.0, rng.gauss(mean_ms, sd_ms)) * 1e3,
            max(0.0, rng.gauss(mean_ms, sd_ms)) * 1e3,
        )

    return delays


def one_sided(floor_us: float, mean_us: float) -> Delays:
    def delays(rng: random.Random, t: float) -> tuple[float, float]:
        return floor_us + rng.expovariate(1 / mean_us), floor_us + rng.expovariate(1 / mean_us)

    return delays


def exchanges(
    delays: Delays,
    seconds: float,
    seed: int = 1,
    offset_us: Callable[[float], float] = lambda t: 12_345.0,
    interval_us: float | None = None,
) -> list[tuple[float, float, float, float]]:
    """Ping exchanges on the filter's own schedule (or a fixed interval), with the
    server's clock at local + offset_us(t)."""
    rng = random.Random(seed)
    est = OffsetEstimator(slew=False)
    out = []
    t = 0.0
    while t < seconds * 1e6:
        up, down = delays(rng, t)
        server = t + up + offset_us(t + up)
        t4 = t + up + down
        out.append((t, server, server, t4))
        est.add_sample(t, server, server, t4)
        t += interval_us or est.ping_interval_us
    return out


def errors(
    ex: list[tuple[float, float, float, float]],
    offset_us: Callable[[float], float],
    after_us: float,
) -> list[float]:
    """|estimate - truth| right after each exchange (and 100 ms later) past after_us."""
    est = OffsetEstimator()
    errs = []
    for t1, t2, t3, t4 in ex:
        est.add_sample(t1, t2, t3, t4)
        if t4 >= after_us:
            for q in (t4, t4 + 100e3):
                value = est.offset_at(q)
                assert value is not None
                errs.append(abs(value - offset_us(q)))
    return sorted(errs)


def p99(values: list[float]) -> float:
    return values[int(len(values) * 0.99)]


def min_filter_p99(ex: list[tuple[float, float, float, float]], truth: float) -> float:
    """The old filter: the lowest round trip of the last 8."""
    window: list[tuple[float, float]] = []
    errs = []
    for t1, t2, _t3, t4 in ex:
        window = [*window[-7:], (t4 - t1, t2 - (t1 + t4) / 2)]
        errs.append(abs(min(window)[1] - truth))
    return p99(sorted(errs[len(errs) // 4 :]))


# ---- statistics (simulated exchanges; bench/bench_clock.py runs the real ones) ----


def test_symmetric_jitter_is_averaged_far_below_one_ping() -> None:
    """(10, 5) ms each way: one ping is off by ~3.5 ms sd; the filter by well under 1."""
    ex = exchanges(gaussian(10, 5), 90)
    errs = errors(ex, lambda t: 12_345.0, after_us=30e6)
    assert p99(errs) < 1_000
    assert p99(errs) < min_filter_p99(ex, 12_345.0) / 3


def test_one_sided_jitter_trusts_the_fast_exchanges() -> None:
    """A floor plus queueing: the low round trips carry the truth."""
    ex = exchanges(one_sided(2_000, 5_000), 60)
    errs = errors(ex, lambda t: 12_345.0, after_us=20e6)
    assert p99(errs) < 500


def test_a_lost_packet_is_an_outlier_not_a_shift() -> None:
    """A retransmitted ping (200 ms late one way) moves the estimate by nothing."""
    ex = exchanges(gaussian(5, 0.2), 20, interval_us=STEADY_INTERVAL_US)
    before = OffsetEstimator()
    for e in ex:
        before.add_sample(*e)
    t1, t2, t3, t4 = ex[-1]
    late = (t4 + 250e3, t2 + 250e3 + 200e3, t2 + 250e3 + 200e3, t4 + 250e3 + 210e3)
    before_value = before.offset_at(late[3])
    before.add_sample(*late)
    assert before_value is not None
    assert abs(before.offset_at(late[3]) - before_value) < 20  # type: ignore[operator]
    assert before.route_changes == 0


def test_drift_is_tracked_when_there_is_drift_and_not_invented_when_there_is_none() -> None:
    drifting = lambda t: 5_000.0 + 100e-6 * t  # noqa: E731 - a 100 ppm fast server
    ex = exchanges(gaussian(0.05, 0.01), 120, offset_us=drifting)
    est = OffsetEstimator()
    for e in ex:
        est.add_sample(*e)
    assert est.drift_ppm == pytest.approx(100, abs=2)
    assert p99(errors(ex, drifting, after_us=10e6)) < 50

    steady = exchanges(gaussian(10, 5), 120, seed=3)
    est = OffsetEstimator()
    for e in steady:
        est.add_sample(*e)
    assert est.drift_ppm is not None and abs(est.drift_ppm) < 15


def test_a_route_change_is_detected_and_the_filter_re_converges() -> None:
    """The offset the path shows steps by 8 ms (a new, asymmetric route): within a
    few pings the old samples are dropped and the estimate follows."""
    step = lambda t: 12_345.0 if t < 30e6 else 20_345.0  # noqa: E731
    ex = exchanges(gaussian(2, 0.3), 45, offset_us=step)
    est = OffsetEstimator()
    settled_at = None
    for e in ex:
        est.add_sample(*e)
        value = est.offset_at(e[3])
        assert value is not None
        if e[0] > 30e6 and settled_at is None and abs(value - 20_345.0) < 500:
            settled_at = e[0]
    assert est.route_changes == 1
    assert settled_at is not None and settled_at - 30e6 < 3e6


def test_converges_within_two_seconds_of_the_first_pong() -> None:
    est = OffsetEstimator()
    assert est.offset_us is None and est.bursting
    ex = exchanges(gaussian(0.1, 0.03), 2.0)
    est.add_sample(*ex[0])
    assert est.offset_us == pytest.approx(12_345.0, abs=200)  # the first pong answers
    for e in ex[1:]:
        est.add_sample(*e)
    assert abs(est.offset_us - 12_345.0) < 1_000  # type: ignore[operator]


def test_ping_schedule_bursts_after_a_join_then_steadies() -> None:
    est = OffsetEstimator()
    intervals = []
    for e in exchanges(gaussian(1, 0.1), 10, interval_us=STEADY_INTERVAL_US):
        intervals.append(est.ping_interval_us)
        est.add_sample(*e)
    assert intervals[:BURST_SAMPLES] == [BURST_INTERVAL_US] * BURST_SAMPLES
    assert set(intervals[BURST_SAMPLES:]) == {STEADY_INTERVAL_US}


def test_downward_corrections_slew_so_scheduled_events_keep_their_order() -> None:
    """local + offset never goes back, even when the estimate drops by 8 ms."""
    step = lambda t: 20_345.0 if t < 20e6 else 12_345.0  # noqa: E731
    ex = exchanges(gaussian(2, 0.3), 30, offset_us=step)
    est = OffsetEstimator()
    last = -math.inf
    for e in ex:
        est.add_sample(*e)
        for k in range(10):  # queries between pongs, every 5 ms
            q = e[3] + k * 5e3
            server_time = q + est.offset_at(q)  # type: ignore[operator]
            assert server_time > last
            last = server_time
    assert est.route_changes == 1
    assert abs(est.offset_at(ex[-1][3]) - 12_345.0) < 500  # type: ignore[operator]


def test_bad_samples_are_refused_and_the_kept_ones_stay() -> None:
    est = OffsetEstimator()
    est.add_sample(0, 1_000, 1_000, 100)
    kept = est.offset_us
    with pytest.raises(ValueError, match="finite"):
        est.add_sample(0, math.nan, 1, 2)
    with pytest.raises(ValueError, match="round trip"):
        est.add_sample(1_000, 0, 5_000, 1_100)
    with pytest.raises(ValueError, match="time order"):
        est.add(-5.0, 0.0, 10.0)
    assert est.offset_us == kept and est.samples == 1
    with pytest.raises(ValueError, match="window"):
        OffsetEstimator(window=0)


def test_the_window_forgets_old_samples() -> None:
    est = OffsetEstimator(window=16)
    for e in exchanges(gaussian(1, 0.1), 10, interval_us=100e3):
        est.add_sample(*e)
    assert est.samples == 16
    est = OffsetEstimator(span_us=2e6)
    for e in exchanges(gaussian(1, 0.1), 10, interval_us=100e3):
        est.add_sample(*e)
    assert est.samples <= 21
    est.reset()
    assert est.samples == 0 and est.offset_us is None


# ---- the JS twin ----------------------------------------------------------------


def test_bbx_client_js_gives_the_same_answers_as_the_python_filter() -> None:
    """The same recorded exchanges through both: every answer equal, bit for bit."""
    node = shutil.which("node")
    assert node, "node is required (.ci/run installs it)"
    step = lambda t: 12_345.0 if t < 20e6 else 19_345.0  # noqa: E731
    cases = [
        {"exchanges": exchanges(gaussian(10, 5), 40, seed=7), "slew": True},
        {"exchanges": exchanges(one_sided(2_000, 5_000), 30, seed=8), "slew": True},
        {"exchanges": exchanges(gaussian(2, 0.3), 30, offset_us=step), "slew": True},
        {
            "exchanges": exchanges(
                gaussian(0.05, 0.01), 80, offset_us=lambda t: 100e-6 * t, seed=9
            ),
            "slew": False,
        },
    ]
    run = subprocess.run(
        [node, str(REPLAY), str(CLIENT_JS)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    js = json.loads(run.stdout)
    compared = 0
    for case, answers in zip(cases, js, strict=True):
        est = OffsetEstimator(slew=case["slew"])
        for (t1, t2, t3, t4), theirs in zip(case["exchanges"], answers, strict=True):
            est.add_sample(t1, t2, t3, t4)
            ours = [
                est.offset_us,
                est.offset_at(t4 + 100e3),
                est.drift_ppm,
                est.error_us,
                est.route_changes,
                est.bursting,
                est.samples,
                est.ping_interval_us,
            ]
            for a, b in zip(ours, theirs, strict=True):
                assert a == b  # the same operations in the same order: the same doubles
            compared += 1
    assert compared == sum(len(c["exchanges"]) for c in cases) > 500
    assert any(a[4] for a in js[2])  # the route change case did change route in JS too
