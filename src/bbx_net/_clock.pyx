# cython: language_level=3, cdivision=True
"""The server clock, NTP-style offset maths and sample offsets (the offset estimator
is plain Python: bbx_net.clock_filter).

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
    bbx_clock_init_at,
    bbx_clock_now_us,
    bbx_clock_tick,
    bbx_to_sample_offset,
)

__all__ = [
    "CLOCK_CAPSULE_NAME",
    "ClockSync",
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

    def __cinit__(self, origin_ns=None):
        # Aligned by hand: the cached value sits on its own cache line.
        self._mem = malloc(sizeof(bbx_clock) + 64)
        if self._mem == NULL:
            raise MemoryError()
        self._clock = <bbx_clock *>((<uintptr_t>self._mem + 63) & ~(<uintptr_t>63))
        if origin_ns is None:
            bbx_clock_init(self._clock)
        else:
            # Another process's clock (the monotonic clock is the machine's): the
            # server in its own process and the audio host read the same time.
            bbx_clock_init_at(self._clock, <int64_t>origin_ns)

    @property
    def origin_ns(self) -> int:
        """The raw monotonic reading (ns) this clock counts from; `ClockSync(origin_ns=
        clock.origin_ns)` in another process reads the same clock."""
        return self._clock.origin_ns

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
