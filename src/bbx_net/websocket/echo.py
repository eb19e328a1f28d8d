"""Echo pacing: a phone's change, to the other phones of its room, without added delay.

The rule is per recipient and per parameter, a cell-rate rule (GCRA, a token bucket
two updates deep): an update goes out at once when that phone has not been sent that
parameter within the last interval (1/update_rate), and also when it has but the
phone's allowance is not spent; otherwise changes coalesce and the newest value goes
out the moment the allowance returns (leading and trailing edge). Over any stretch of
time a phone gets at most `update_rate` updates of a parameter a second, plus one. The
allowance is what keeps a phone that moves a slider at the rate itself echoed at once:
a minimum-gap rule would lock onto its worst jitter (each change arriving a little
early waits, and every later one with it). A phone is never sent a value older than its
own last change: its own change is, for it, the newest value.

One `EchoLine` per (room, parameter) holds the rule for all of the room's members: a
heap of when each may be sent next, so a change touches only the members it is sent
to now; a room of a hundred phones all moving the same slider costs about one send per
phone per interval, not one per phone per change. `EchoClock` keeps the lines that owe
a trailing edge, by due time.

Pure: no asyncio, no clock; time is passed in (µs). Members are any hashable objects.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

__all__ = ["EchoClock", "EchoLine"]

M = TypeVar("M", bound=Hashable)  # a member: the session's Peer

NEVER = -(1 << 62)  # "never sent": due at any time


class EchoLine(Generic[M]):
    """One parameter's echoes in one room.

    Args:
        name: the parameter.
        members: the room's members now (none of them has been sent an echo yet).

    Attributes:
        value: the newest value changed in this room (or set by the host).
        version: counts the values; a member holding an older one is owed the newest.
        due_us: when the next trailing edge may be due (None: nobody is owed anything
            that could not go at once), as of the last `due`; never late, and early
            only when a member who was to be sent then left or got the value meanwhile.
    """

    __slots__ = (
        "name",
        "value",
        "version",
        "due_us",
        "queued_us",
        "live",
        "_state",
        "_heap",
        "_idle",
        "_owed",
        "_seq",
    )

    def __init__(self, name: str, members: Iterable[M]) -> None:
        self.name = name
        self.value = 0.0
        self.version = 0
        self.due_us: int | None = None
        self.queued_us: int | None = None  # the due time this line waits under in EchoClock
        self.live = True  # False once its room is gone
        # member -> [version held, earliest next send (µs), key of its heap entry or -1]
        self._state: dict[M, list[int]] = {}
        self._heap: list[tuple[int, int, M]] = []  # (earliest next send, key, member)
        self._idle: dict[M, None] = {}  # may be sent now, holds the newest: waits for one
        self._owed = 0  # members holding an older value than the newest
        self._seq = itertools.count()
        for member in members:
            self.add(member)

    def add(self, member: M) -> None:
        """A member joined; it was sent the room's state, so it holds the newest value."""
        self.discard(member)
        self._state[member] = [self.version, NEVER, -1]
        self._idle[member] = None

    def discard(self, member: M) -> None:
        state = self._state.pop(member, None)
        if state is not None:
            if state[0] < self.version:
                self._owed -= 1
                if not self._owed:
                    self.due_us = None
            self._idle.pop(member, None)  # a heap entry of it is skipped when it comes up

    def change(self, sender: M, value: float) -> None:
        """`sender` changed the value: everyone else is owed it, the sender is not."""
        self.value = value
        self.version += 1
        state = self._state.get(sender)
        if state is not None:
            state[0] = self.version
            self._owed = len(self._state) - 1
        else:
            self._owed = len(self._state)

    def set_all(self, value: float) -> None:
        """The host set the value and sent it to every member itself: nobody is owed."""
        self.value = value
        self.version += 1
        version = self.version
        for state in self._state.values():
            state[0] = version
        self._owed = 0
        self.due_us = None

    def due(self, now_us: int, interval_us: int) -> list[M]:
        """The members to send the newest value to now; updates `due_us`."""
        if not self._owed:
            self.due_us = None
            return []
        version = self.version
        states = self._state
        out: list[M] = []
        idle = self._idle
        if idle:
            for member in [m for m in idle if states[m][0] < version]:
                del idle[member]
                out.append(member)
        heap = self._heap
        while heap and heap[0][0] <= now_us:
            _, key, member = heapq.heappop(heap)
            state = states.get(member)
            if state is None or state[2] != key:
                continue  # left, or queued again since
            state[2] = -1
            if state[0] < version:
                out.append(member)
            else:
                idle[member] = None  # holds the newest: sent at once when it changes
        seq = self._seq
        for member in out:
            state = states[member]
            state[0] = version
            # GCRA with one interval of tolerance: the theoretical send time advances by
            # one interval from the later of itself and now, and sending may be one
            # interval ahead of it; so the earliest next send is the later of now and
            # the last earliest plus one interval.
            earliest = state[1] + interval_us
            if earliest < now_us:
                earliest = now_us
            state[1] = earliest
            key = state[2] = next(seq)
            heapq.heappush(heap, (earliest, key, member))
        self._owed -= len(out)
        if self._owed:
            while heap:  # drop what left or was queued again: they are not due
                _, key, member = heap[0]
                state = states.get(member)
                if state is not None and state[2] == key:
                    break
                heapq.heappop(heap)
            self.due_us = heap[0][0] if heap else None
        else:
            self.due_us = None
        return out


class EchoClock(Generic[M]):
    """The lines owing a trailing edge, by due time (each line queued at most once)."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, EchoLine[M]]] = []
        self._seq = itertools.count()

    def __bool__(self) -> bool:
        return bool(self._heap)

    @property
    def next_us(self) -> int | None:
        """When the earliest queued line is due (None: nothing waits)."""
        return self._heap[0][0] if self._heap else None

    def watch(self, line: EchoLine[M]) -> None:
        """Queues `line` for its `due_us`, unless it waits under an earlier time
        already (then it is looked at then, and queued again for what remains)."""
        due = line.due_us
        if due is None or not line.live:
            return
        queued = line.queued_us
        if queued is not None and queued <= due:
            return
        line.queued_us = due
        heapq.heappush(self._heap, (due, next(self._seq), line))

    def pop_due(self, now_us: int) -> list[EchoLine[M]]:
        """The live lines whose queued time has come (each dequeued)."""
        heap = self._heap
        out: list[EchoLine[M]] = []
        while heap and heap[0][0] <= now_us:
            when, _, line = heapq.heappop(heap)
            if line.queued_us == when:
                line.queued_us = None
                if line.live:
                    out.append(line)
        return out
