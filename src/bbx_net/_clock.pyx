# cython: language_level=3, cdivision=True
"""The server clock, NTP-style offset maths and sample offsets.

The server clock counts monotonic microseconds since its creation. C code reads it
through ``bbx_clock_now_us`` / ``bbx_clock_cached_us`` in ``bbx_net.h`` without the GIL.
"""

from cpython.pycapsule cimport PyCapsule_New
from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc

from bbx_net._capi cimport (
    BBX_CLOCK_CAPSULE_NAME,
    bbx_clock,
    bbx_clock_cached_us,
    bbx_clock_init,
    bbx_clock_now_us,
    bbx_clock_tick,
    bbx_to_sample_offset,
)

__all__ = [
    "CLOCK_CAPSULE_NAME",
    "ClockSync",
    "OffsetEstimator",
    "ntp_offset",
    "round_trip_delay",
    "to_sample_offset",
]

CLOCK_CAPSULE_NAME = BBX_CLOCK_CAPSULE_NAME.decode()


cdef class ClockSync:
    """The server clock: monotonic microseconds since this object was created.

    `now_us()` reads the clock; `tick()` also stores the reading as `cached_us`, which
    the audio thread can read with one atomic load. From C, use the capsule or address
    with `bbx_clock_now_us` / `bbx_clock_cached_us` (any thread, no GIL, no allocation)
    and keep this object alive meanwhile.
    """

    cdef void *_mem
    cdef bbx_clock *_clock

    def __cinit__(self):
        # Aligned by hand: the cached value sits on its own cache line.
        self._mem = malloc(sizeof(bbx_clock) + 64)
        if self._mem == NULL:
            raise MemoryError()
        self._clock = <bbx_clock *>((<uintptr_t>self._mem + 63) & ~(<uintptr_t>63))
        bbx_clock_init(self._clock)

    def __dealloc__(self):
        free(self._mem)

    def now_us(self) -> int:
        """Microseconds since creation (monotonic, never goes back)."""
        return bbx_clock_now_us(self._clock)

    def tick(self) -> int:
        """Reads the clock, stores the reading as `cached_us` and returns it."""
        return bbx_clock_tick(self._clock)

    @property
    def cached_us(self) -> int:
        """The reading stored by the last `tick()` (0 before the first)."""
        return bbx_clock_cached_us(self._clock)

    @property
    def address(self) -> int:
        """The `bbx_clock *` as an integer. Valid while this object lives."""
        return <uintptr_t>self._clock

    @property
    def capsule(self):
        """The `bbx_clock *` in a PyCapsule named CLOCK_CAPSULE_NAME."""
        return PyCapsule_New(<void *>self._clock, BBX_CLOCK_CAPSULE_NAME, NULL)


cdef int _check_finite(double t1, double t2, double t3, double t4) except -1:
    for name, t in (("t1", t1), ("t2", t2), ("t3", t3), ("t4", t4)):
        if not isfinite(t):
            raise ValueError(f"{name} must be finite, got {t!r}")
    return 0


def ntp_offset(double t1, double t2, double t3, double t4) -> float:
    """Clock offset ((t2 - t1) + (t3 - t4)) / 2, in the unit of the timestamps.

    The side doing the computation (the server) stamps t1 when it sends and t4 when the
    answer arrives; the other side (the client) stamps t2 on receipt and t3 on reply.
    Positive means the client's clock is ahead of the server's.

    Raises:
        ValueError: a timestamp is not finite.
    """
    _check_finite(t1, t2, t3, t4)
    return ((t2 - t1) + (t3 - t4)) / 2.0


def round_trip_delay(double t1, double t2, double t3, double t4) -> float:
    """Network round trip (t4 - t1) - (t3 - t2): the exchange minus the reply's think time.

    Raises:
        ValueError: a timestamp is not finite.
    """
    _check_finite(t1, t2, t3, t4)
    return (t4 - t1) - (t3 - t2)


def to_sample_offset(uint64_t timestamp_us, uint64_t block_start_us, uint32_t sample_rate,
                     uint32_t block_size):
    """The frame at which an event falls in an audio block.

    Args:
        timestamp_us: the event's time, server-clock µs.
        block_start_us: the time of the block's first frame, server-clock µs.
        sample_rate: frames per second (Hz), at least 1.
        block_size: frames in the block.

    Returns:
        0 for an event in the past, its frame index for an event inside the block, and
        None for an event after the block.

    Raises:
        ValueError: sample_rate is 0.
    """
    if sample_rate == 0:
        raise ValueError("sample_rate must be positive")
    cdef int64_t off = bbx_to_sample_offset(timestamp_us, block_start_us, sample_rate,
                                            block_size)
    return None if off < 0 else off


cdef class OffsetEstimator:
    """Estimates a peer's clock offset from ping exchanges, NTP clock-filter style.

    Keeps the last `window` samples and trusts the one with the lowest round trip: the
    exchange least disturbed by queueing has the smallest offset error (at most half its
    delay). With `track_drift`, a least-squares slope over the good samples of the
    window estimates how fast the offset moves (ppm).

    Timestamps follow `ntp_offset`: t1/t4 on the estimating side, t2/t3 on the peer.
    """

    cdef readonly int window
    cdef readonly bint track_drift
    cdef list _samples  # (t_ref, offset, delay), oldest first
    cdef readonly long samples_seen

    def __init__(self, int window=8, bint track_drift=False):
        if window < 1 or window > 4096:
            raise ValueError(f"window must be 1..4096, got {window}")
        self.window = window
        self.track_drift = track_drift
        self._samples = []
        self.samples_seen = 0

    def add_sample(self, double t1, double t2, double t3, double t4):
        """Adds one exchange and returns its (offset, delay).

        Raises:
            ValueError: a timestamp is not finite, or the delay comes out negative
                (inconsistent timestamps; the sample is not kept).
        """
        offset = ntp_offset(t1, t2, t3, t4)
        delay = round_trip_delay(t1, t2, t3, t4)
        if delay < 0:
            raise ValueError(f"inconsistent timestamps: round trip {delay} < 0")
        self._samples.append(((t1 + t4) / 2.0, offset, delay))
        if len(self._samples) > self.window:
            del self._samples[0]
        self.samples_seen += 1
        return offset, delay

    cdef tuple _best(self):
        cdef tuple best = None
        for s in self._samples:
            if best is None or s[2] <= best[2]:  # ties: the newer sample
                best = s
        return best

    @property
    def offset_us(self):
        """Offset of the lowest-delay sample in the window, or None before any sample."""
        best = self._best()
        return None if best is None else best[1]

    @property
    def delay_us(self):
        """Lowest round trip in the window, or None before any sample."""
        best = self._best()
        return None if best is None else best[2]

    @property
    def latest_delay_us(self):
        """Round trip of the newest sample, or None before any sample."""
        return self._samples[len(self._samples) - 1][2] if self._samples else None

    @property
    def drift_ppm(self):
        """Offset change in µs per second (ppm), or None when not tracked or too few
        good samples spanning at least one second."""
        slope = self._slope()
        return None if slope is None else slope * 1e6

    cdef object _slope(self):
        if not self.track_drift or len(self._samples) < 2:
            return None
        best = self._best()
        limit = 2.0 * best[2] + 100.0
        good = [s for s in self._samples if s[2] <= limit]
        if len(good) < 2 or good[len(good) - 1][0] - good[0][0] < 1e6:
            return None
        n = len(good)
        mt = sum(s[0] for s in good) / n
        mo = sum(s[1] for s in good) / n
        num = sum((s[0] - mt) * (s[1] - mo) for s in good)
        den = sum((s[0] - mt) ** 2 for s in good)
        return num / den if den > 0 else None

    def offset_at(self, double t):
        """The offset expected at local time t (drift applied when tracked), or None."""
        best = self._best()
        if best is None:
            return None
        slope = self._slope()
        return best[1] if slope is None else best[1] + slope * (t - best[0])

    def reset(self):
        """Forgets every sample (after a reconnect, say)."""
        self._samples.clear()
