"""Settings for a Python audio callback that shares its process with the server.

A Python callback needs the GIL to start. In the server's process it waits for the
server's thread to let go of it: by default up to the 5 ms switch interval, and for a
whole garbage collection of the server's objects (25-39 ms measured at 300 phones,
several audio cycles). `tune_python_host()` applies the two settings that measured
well (`bench/bench_host.py`):

- `gc.collect(); gc.freeze()` once everything is started: the objects alive then
  (modules, the server, its rooms) move to a permanent generation that collections
  never scan again, so later collections only see what came after. Cost: those
  objects are never collected (they were going to live anyway), and a reference cycle
  among them is never freed.
- `sys.setswitchinterval(1e-4)`: a thread waiting for the GIL gets it after 0.1 ms
  instead of 5 ms. Cost: more GIL hand-overs between busy threads (server CPU was
  unchanged within noise in the bench).

Measured with a JACK callback at 48 kHz / 256 frames and 300 phones at 60 Hz: max
callback lateness 0.62 ms and no xrun with these settings, against 25-39 ms stalls
without. The server in its own process (`bbx_net.serve_process`) does better still:
the callback never waits for the server's GIL at all.
"""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass

__all__ = ["PythonHostTuning", "tune_python_host"]


@dataclass
class PythonHostTuning:
    """What `tune_python_host` changed, and the way back (`restore()` or `with`)."""

    switch_interval: float
    previous_switch_interval: float
    frozen: int  # objects moved to the permanent generation
    _restored: bool = False

    def restore(self) -> None:
        """Puts the switch interval back and unfreezes the objects (idempotent)."""
        if self._restored:
            return
        self._restored = True
        sys.setswitchinterval(self.previous_switch_interval)
        if self.frozen:
            gc.unfreeze()

    def __enter__(self) -> PythonHostTuning:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def tune_python_host(switch_interval: float = 1e-4, freeze: bool = True) -> PythonHostTuning:
    """Applies the settings above; call once the server and the audio stream started.

    Args:
        switch_interval: seconds a thread may hold the GIL while another waits.
        freeze: collect, then freeze every object alive now (gc.freeze).

    Raises:
        ValueError: switch_interval is not positive.
    """
    if not switch_interval > 0:
        raise ValueError(f"switch_interval must be positive, got {switch_interval}")
    previous = sys.getswitchinterval()
    frozen = 0
    if freeze:
        gc.collect()
        before = gc.get_freeze_count()
        gc.freeze()
        frozen = gc.get_freeze_count() - before
    sys.setswitchinterval(switch_interval)
    return PythonHostTuning(sys.getswitchinterval(), previous, frozen)
