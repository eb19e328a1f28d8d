"""Block start times for an audio callback that do not inherit wake-up lateness.

Reading the server clock at the top of every callback (`clock.tick()`) makes each
block start whenever the thread happened to wake. A wake-up 2 ms late moves every
event scheduled in that block 2 ms (96 samples at 48 kHz) late. The audio device
itself runs at a steady rate, so the honest block start is the previous one plus
exactly block_size / sample_rate.

`BlockClock` counts frames from an anchor on the server clock. Its time for frame n is
`anchor + n * 1e6 // sample_rate` (integer µs), so rounding never accumulates. Each
block compares that with the clock reading:

- if they differ by more than `max_error_us` (an xrun, a stall, a device that was
  stopped), it re-anchors at the reading;
- otherwise, once a second, it moves the anchor by a quarter of the smallest
  difference seen in that second, plus the drift rate learnt so far (a PI loop).
  Lateness only ever adds to a difference, so the smallest one is the device's own
  drift against the server clock, which is then followed without ever jumping.

The C twin is `bbx_block_clock` in bbx_net.h (same arithmetic, integers only; a test
runs both on the same wake-up times).
"""

from __future__ import annotations

from ._clock import ClockSync

__all__ = ["BlockClock"]


class BlockClock:
    """Start times (server-clock µs) of consecutive audio blocks.

    Args:
        sample_rate: frames per second.
        block_size: frames per block. Hosts whose block size varies pass the frames
            of each block to `next_block`.
        max_error_us: a reading further than this from the frame count re-anchors.
            Default: 4 blocks, and at least 10 ms.
        clock: read by `next_block()` when no time is passed (the server's clock).
    """

    __slots__ = (
        "sample_rate",
        "block_size",
        "max_error_us",
        "clock",
        "anchor_us",
        "frames",
        "reanchors",
        "error_us",
        "_window",
        "_seen",
        "_min_err",
        "_rate_us",
        "_started",
    )

    def __init__(
        self,
        sample_rate: int,
        block_size: int,
        max_error_us: int | None = None,
        clock: ClockSync | None = None,
    ) -> None:
        if sample_rate < 1 or block_size < 1:
            raise ValueError("sample_rate and block_size must be positive")
        self.sample_rate = int(sample_rate)
        self.block_size = int(block_size)
        block_us = self.block_size * 1_000_000 // self.sample_rate
        self.max_error_us = (
            int(max_error_us) if max_error_us is not None else max(4 * block_us, 10_000)
        )
        self.clock = clock
        self.anchor_us = 0
        self.frames = 0  # frames since the anchor
        self.reanchors = 0  # times the reading was too far off (the first start excluded)
        self.error_us = 0  # reading minus frame time, at the last block
        self._window = max(1, self.sample_rate // self.block_size)  # blocks per servo step
        self._seen = 0
        self._min_err = 0
        self._rate_us = 0  # drift learnt: µs the anchor moves per step
        self._started = False

    def next_block(self, now_us: int | None = None, frames: int | None = None) -> int:
        """The start time of the block about to be rendered; call once per block.

        Args:
            now_us: the server clock read at the top of the callback (default: read
                `clock` now).
            frames: this block's length if it is not `block_size`.
        """
        if now_us is None:
            if self.clock is None:
                raise ValueError("pass now_us, or give the BlockClock a clock")
            now_us = self.clock.now_us()
        n = self.block_size if frames is None else int(frames)
        if not self._started:
            self._started = True
            self._anchor(now_us)
        start = self.anchor_us + self.frames * 1_000_000 // self.sample_rate
        err = now_us - start
        self.error_us = err
        if err > self.max_error_us or -err > self.max_error_us:
            self.reanchors += 1
            self._anchor(now_us)
            start = now_us
        else:
            if self._seen == 0 or err < self._min_err:
                self._min_err = err
            self._seen += 1
            if self._seen >= self._window:
                # Follow the device's drift: a quarter of the least lateness seen,
                # plus the rate learnt so far (a PI loop: no lag at a steady drift).
                self._rate_us += _div(self._min_err, 16)
                self.anchor_us += _div(self._min_err, 4) + self._rate_us
                self._seen = 0
        self.frames += n
        return start if start > 0 else 0

    def _anchor(self, now_us: int) -> None:
        self.anchor_us = now_us
        self.frames = 0
        self._seen = 0


def _div(x: int, d: int) -> int:
    """x / d rounded towards zero (as C's integer division)."""
    return x // d if x >= 0 else -((-x) // d)
