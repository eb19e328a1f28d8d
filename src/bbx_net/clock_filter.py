"""The clock-offset estimator shared by every client and the server.

One algorithm, written twice: here and in ``web/bbx-client.js`` (``ClockFilter``),
operation for operation, so that both give the same estimate from the same exchanges
(tests/test_clock_filter.py feeds both the same recorded exchanges and compares).

Each ping/pong exchange gives a sample: the time of its midpoint on the local clock,
the offset it measures (peer clock minus local clock, assuming the two directions
took equally long) and its round trip. How wrong one sample is depends on the path:

- With jitter on both directions alike (Wi-Fi), a sample's error is half the
  difference of the two one-way delays, independent of its round trip: only averaging
  many samples helps (N samples of jitter sd J give about J/sqrt(2N)).
- With one-sided jitter (a floor plus queueing), a sample's error is at most half its
  excess round trip, so the fastest exchanges are nearly exact.
- A path that is slower one way than the other is invisible to any two-way method:
  the estimate is off by half the difference, whatever the filter.

So the filter fits offset = a + b * t over a long window (256 samples, at most 64 s)
after a robust start (medians and a two-group slope), with outliers (a lost and
retransmitted packet, say) rejected. The weights favour low round trips only as much
as the data says: mildly (1 / (1 + (excess / typical excess)^2)) unless slow exchanges
scatter clearly more than fast ones, when they are inverse-variance weights from
residual^2 ~ alpha + beta * excess^2 (queueing: the fastest count most).
The drift b is used only in proportion to how well the data determines it (shrunk
towards 0 by b^2 / (b^2 + (2 SE)^2)), so a clock that does not drift is not made to.
A sustained shift (K samples in a row on one side, beyond 3 scales and 100 µs: a new
route) drops the old samples and re-converges; a jump in round trip alone asks for a
burst of pings. Downward corrections are slewed (at most SLEW µs per µs), so a client
that schedules events by ``local + offset`` never schedules a later event before an
earlier one.

Times are µs (floats); the ping schedule it asks for is in `ping_interval_us`.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence

__all__ = ["OffsetEstimator"]

# (t_mean, offset at t_mean, drift used, drift fitted, SE of the offset, robust scale)
_Fit = tuple[float, float, float, float, float, float]

WINDOW = 256  # samples kept at most
SPAN_US = 64e6  # and at most this old (µs before the newest)
MIN_SLOPE_SPAN_US = 0.5e6  # a drift needs samples spanning at least this long
MIN_SLOPE_SAMPLES = 8
EXCESS_FLOOR_US = 20.0  # round-trip spread below this is timer noise, not queueing
SCALE_FLOOR_US = 5.0
REJECT = 3.5  # residuals beyond REJECT robust scales are outliers
SHRINK = 2.0  # drift is used as b^2 / (b^2 + (SHRINK * SE)^2) of itself
ONE_SIDED = 2.5  # slow exchanges scatter this much more than fast ones: queueing
CHANGE_RUN = 6  # this many samples in a row on one side of the fit ...
CHANGE_SCALES = 3.0  # ... each beyond this many scales ...
CHANGE_FLOOR_US = 100.0  # ... and this many µs is a route change
SLEW = 0.05  # the reported offset falls at most 50 ms per second
BURST_INTERVAL_US = 50e3
BURST_SAMPLES = 20  # after a join or a route change
STEADY_INTERVAL_US = 250e3
NOISY_INTERVAL_US = 100e3  # steady, on a path whose samples scatter by ...
NOISY_SCALE_US = 1_000.0  # ... more than this (averaging needs more of them)


def _wmedian(values: Sequence[float], weights: Sequence[float]) -> float:
    """The lower weighted median: the first value, in sorted order, where the running
    weight reaches half the total."""
    order = sorted(range(len(values)), key=values.__getitem__)
    half = 0.0
    for i in order:
        half += weights[i]
    half *= 0.5
    acc = 0.0
    for i in order:
        acc += weights[i]
        if acc >= half:
            return values[i]
    return values[order[len(order) - 1]]


class OffsetEstimator:
    """Estimates a peer's clock offset (peer minus local, µs) from ping exchanges.

    Timestamps follow `ntp_offset`: t1/t4 on the local (estimating) side, t2/t3 on the
    peer. The fit (about a millisecond for a full window in CPython) runs on each
    sample with `slew`, else when an estimate is read after new samples; route
    changes are checked then. Unlike the JS twin, which ignores a bad sample, this
    one raises ValueError for it.

    Args:
        window: samples kept at most (1..4096).
        track_drift: fit a drift (used only as far as the data supports it).
        span_us: samples older than this (before the newest) are forgotten.
        slew: report downward corrections slewed, not at once (a client scheduling by
            the estimate wants this; it refits on every sample). Without it the fit
            runs only when an estimate is read (the server's per-client view).
    """

    __slots__ = (
        "window",
        "track_drift",
        "slew",
        "span_us",
        "samples_seen",
        "route_changes",
        "_t",
        "_o",
        "_r",
        "_dirty",
        "_fit",
        "_lag_us",
        "_lag_t",
        "_burst_left",
    )

    def __init__(
        self,
        window: int = WINDOW,
        track_drift: bool = True,
        span_us: float = SPAN_US,
        slew: bool = True,
    ) -> None:
        if not 1 <= window <= 4096:
            raise ValueError(f"window must be 1..4096, got {window}")
        if not span_us > 0:
            raise ValueError(f"span_us must be positive, got {span_us}")
        self.window = window
        self.track_drift = track_drift
        self.span_us = float(span_us)
        self.slew = slew
        self.samples_seen = 0
        self.route_changes = 0
        # Doubles in arrays (6 KiB for a full window, against 24 as lists of floats).
        self._t = array("d")  # sample midpoints, local clock
        self._o = array("d")  # offsets
        self._r = array("d")  # round trips
        self._dirty = False
        self._fit: _Fit | None = None
        self._lag_us = 0.0  # slew: how far above the fit the report still is ...
        self._lag_t = 0.0  # ... at this local time
        self._burst_left = BURST_SAMPLES

    # ---- input --------------------------------------------------------------------

    def add_sample(self, t1: float, t2: float, t3: float, t4: float) -> tuple[float, float]:
        """Adds one exchange and returns its (offset, round trip).

        Raises:
            ValueError: a timestamp is not finite, or the round trip comes out negative
                (inconsistent timestamps; the sample is not kept).
        """
        for name, t in (("t1", t1), ("t2", t2), ("t3", t3), ("t4", t4)):
            if not math.isfinite(t):
                raise ValueError(f"{name} must be finite, got {t!r}")
        offset = ((t2 - t1) + (t3 - t4)) / 2.0
        delay = (t4 - t1) - (t3 - t2)
        if delay < 0:
            raise ValueError(f"inconsistent timestamps: round trip {delay} < 0")
        self.add(0.5 * (t1 + t4), offset, delay)
        return offset, delay

    def add(self, t: float, offset: float, delay: float) -> None:
        """Adds a sample already reduced to (local midpoint, offset, round trip)."""
        if self._t and t < self._t[len(self._t) - 1]:
            raise ValueError("samples must come in time order")
        before = self._report_at(t) if self.slew and self._t else None
        self._t.append(t)
        self._o.append(offset)
        self._r.append(delay)
        self.samples_seen += 1
        if self._burst_left > 0:
            self._burst_left -= 1
        while len(self._t) > self.window or t - self._t[0] > self.span_us:
            del self._t[0], self._o[0], self._r[0]
        self._dirty = True
        if before is not None:
            self._refit()
            # Slew: the report may rise at once, but falls at most SLEW per µs.
            now = self._line_at(t)
            self._lag_us = before - now if before > now else 0.0
            self._lag_t = t

    def reset(self) -> None:
        """Forgets every sample (after a reconnect, say)."""
        del self._t[:], self._o[:], self._r[:]
        self._fit = None
        self._dirty = False
        self._lag_us = 0.0
        self._burst_left = BURST_SAMPLES

    # ---- output -------------------------------------------------------------------

    @property
    def offset_us(self) -> float | None:
        """The estimate at the newest sample's time, or None before any sample."""
        if not self._t:
            return None
        return self._report_at(self._t[len(self._t) - 1])

    def offset_at(self, t: float) -> float | None:
        """The estimate at local time t (drift and slew applied), or None."""
        if not self._t:
            return None
        return self._report_at(t)

    @property
    def drift_ppm(self) -> float | None:
        """The drift in use, µs per s (ppm): None when not tracked or not yet fitted."""
        if not self.track_drift or not self._t:
            return None
        fit = self._get_fit()
        return fit[2] * 1e6

    @property
    def error_us(self) -> float | None:
        """The standard error of the estimate at the window's centre, or None."""
        if not self._t:
            return None
        return self._get_fit()[4]

    @property
    def delay_us(self) -> float | None:
        """The lowest round trip in the window, or None before any sample."""
        return min(self._r) if self._r else None

    @property
    def latest_delay_us(self) -> float | None:
        """The round trip of the newest sample, or None before any sample."""
        return self._r[len(self._r) - 1] if self._r else None

    @property
    def samples(self) -> int:
        """Samples in the window."""
        return len(self._t)

    @property
    def bursting(self) -> bool:
        """True while the filter wants pings at the burst rate (after a join or a
        suspected route change)."""
        return self._burst_left > 0

    @property
    def ping_interval_us(self) -> float:
        """When to ping next: a burst after a join or a suspected change, then steady
        (faster on a noisy path, where only more samples bring the error down)."""
        if self._burst_left > 0:
            return BURST_INTERVAL_US
        if self._t and self._get_fit()[5] > NOISY_SCALE_US:
            return NOISY_INTERVAL_US
        return STEADY_INTERVAL_US

    # ---- the fit ------------------------------------------------------------------

    def _report_at(self, t: float) -> float:
        value = self._line_at(t)
        if self._lag_us > 0.0:
            left = self._lag_us - SLEW * (t - self._lag_t)
            if left > 0.0:
                value += left
        return value

    def _line_at(self, t: float) -> float:
        fit = self._get_fit()
        return fit[1] + fit[2] * (t - fit[0])

    def _get_fit(self) -> _Fit:
        if self._dirty or self._fit is None:
            self._refit()
        assert self._fit is not None
        return self._fit

    def _refit(self) -> None:
        self._dirty = False
        self._fit = _fit(self._t, self._o, self._r, self.track_drift)
        if self._change():
            self.route_changes += 1
            keep = len(self._t) - CHANGE_RUN
            del self._t[:keep], self._o[:keep], self._r[:keep]
            self._fit = _fit(self._t, self._o, self._r, self.track_drift)
            self._burst_left = BURST_SAMPLES
        elif self._rtt_jump():
            self._burst_left = max(self._burst_left, BURST_SAMPLES // 2)

    def _change(self) -> bool:
        """The last CHANGE_RUN samples all sit on one side of the fit, far from it."""
        n = len(self._t)
        if n < 2 * CHANGE_RUN:
            return False
        fit = self._fit
        assert fit is not None
        limit = max(CHANGE_SCALES * fit[5], CHANGE_FLOOR_US)
        side = 0
        for i in range(n - CHANGE_RUN, n):
            e = self._o[i] - (fit[1] + fit[2] * (self._t[i] - fit[0]))
            s = 1 if e > limit else (-1 if e < -limit else 0)
            if s == 0 or (side != 0 and s != side):
                return False
            side = s
        return True

    def _rtt_jump(self) -> bool:
        """The last CHANGE_RUN round trips are all far above the window's best."""
        n = len(self._r)
        if n < 2 * CHANGE_RUN:
            return False
        lo = min(self._r)
        recent = min(self._r[n - CHANGE_RUN :])
        return recent - lo > max(4.0 * _typical_excess(self._r, lo), 4.0 * CHANGE_FLOOR_US)


def _typical_excess(r: Sequence[float], lo: float) -> float:
    """The median round trip above the best, at least EXCESS_FLOOR_US."""
    x = sorted(v - lo for v in r)
    return max(x[len(x) // 2], EXCESS_FLOOR_US)


def _weights(
    r: Sequence[float],
    lo: float,
    median_excess: float,
    e: Sequence[float],
    c: float,
    scale: float,
    start: list[float],
) -> list[float]:
    """Inverse-variance weights from how the scatter grows with the excess round trip.

    Models residual^2 ~ alpha + beta * excess^2, with alpha and beta from the inliers
    at or below and above the median excess. Jitter alike both ways gives beta ~ 0:
    equal weights. One-sided queueing gives alpha ~ 0: weights ~ 1 / excess^2 (the
    fastest exchanges are nearly exact). Too few samples: the start's weights.
    """
    n = len(r)
    v_lo = q_lo = v_hi = q_hi = 0.0
    n_lo = n_hi = 0
    limit = REJECT * scale
    for i in range(n):
        d = e[i] - c
        if d > limit or -d > limit:
            continue
        x = r[i] - lo
        if x <= median_excess:
            v_lo += d * d
            q_lo += x * x
            n_lo += 1
        else:
            v_hi += d * d
            q_hi += x * x
            n_hi += 1
    if n_lo < MIN_SLOPE_SAMPLES or n_hi < MIN_SLOPE_SAMPLES:
        return start
    v_lo /= n_lo
    q_lo /= n_lo
    v_hi /= n_hi
    q_hi /= n_hi
    if v_hi < ONE_SIDED * v_lo:
        return start  # scatter hardly grows with the round trip: keep the mild weights
    beta = (v_hi - v_lo) / (q_hi - q_lo) if q_hi > q_lo else 0.0
    if beta < 0.0:
        beta = 0.0
    alpha = v_lo - beta * q_lo
    if alpha < SCALE_FLOOR_US * SCALE_FLOOR_US:
        alpha = SCALE_FLOOR_US * SCALE_FLOOR_US
    out = []
    for v in r:
        x = v - lo
        out.append(alpha / (alpha + beta * x * x))
    return out


def _fit(t: Sequence[float], o: Sequence[float], r: Sequence[float], track_drift: bool) -> _Fit:
    """Weighted, outlier-rejecting fit of offset = a + b (t - t_mean)."""
    n = len(t)
    if n == 1:
        return (t[0], o[0], 0.0, 0.0, r[0] / 2.0, SCALE_FLOOR_US)
    lo = min(r)
    s = _typical_excess(r, lo)
    w = []
    for v in r:
        q = (v - lo) / s
        w.append(1.0 / (1.0 + q * q))
    slope_ok = track_drift and n >= MIN_SLOPE_SAMPLES and t[n - 1] - t[0] >= MIN_SLOPE_SPAN_US
    # A robust start: the two halves' weighted medians give the slope, the weighted
    # median of what is left the centre, the weighted median deviation the scale.
    b = 0.0
    if slope_ok:
        h = n // 2
        s1 = 0.0
        for i in range(h):
            s1 += t[i]
        s2 = 0.0
        for i in range(n - h, n):
            s2 += t[i]
        t1 = s1 / h
        t2 = s2 / h
        if t2 > t1:
            b = (_wmedian(o[n - h :], w[n - h :]) - _wmedian(o[:h], w[:h])) / (t2 - t1)
    e = [o[i] - b * (t[i] - t[0]) for i in range(n)]
    c = _wmedian(e, w)
    scale = max(1.4826 * _wmedian([abs(v - c) for v in e], w), SCALE_FLOOR_US)
    w = _weights(r, lo, s, e, c, scale, w)
    a = c
    tm = t[0]
    se = scale
    b_fit = b
    for _ in range(2):
        # Weighted least squares over the inliers of the current fit.
        sw = swt = swo = 0.0
        keep = []
        for i in range(n):
            if abs(e[i] - c) <= REJECT * scale:
                keep.append(i)
                sw += w[i]
                swt += w[i] * t[i]
                swo += w[i] * o[i]
        if not keep:
            break
        tm = swt / sw
        a = swo / sw
        b_fit = 0.0
        if slope_ok:
            stt = sto = 0.0
            for i in keep:
                dt = t[i] - tm
                stt += w[i] * dt * dt
                sto += w[i] * dt * (o[i] - a)
            if stt > 0.0:
                b_fit = sto / stt
        # Residual scale, the standard errors, and the drift actually used.
        see = 0.0
        for i in keep:
            d = o[i] - a - b_fit * (t[i] - tm)
            see += w[i] * d * d
        m = len(keep)
        dof = m - 2 if slope_ok else m - 1
        unit = see / dof if dof > 0 else scale * scale
        se = math.sqrt(unit / sw) if sw > 0.0 else scale
        b = b_fit
        if slope_ok:
            stt = 0.0
            for i in keep:
                dt = t[i] - tm
                stt += w[i] * dt * dt
            var_b = unit / stt if stt > 0.0 else math.inf
            if math.isinf(var_b) or b_fit == 0.0:
                b = 0.0
            else:
                b = b_fit * b_fit * b_fit / (b_fit * b_fit + SHRINK * SHRINK * var_b)
        # The next pass rejects against this fit.
        e = [o[i] - b_fit * (t[i] - tm) for i in range(n)]
        c = a
        scale = max(1.4826 * _wmedian([abs(v - c) for v in e], w), SCALE_FLOOR_US)
    return (tm, a, b, b_fit, se, scale)
