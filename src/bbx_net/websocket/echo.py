"""Echo pacing: a phone's change, to the other phones of its room, without added delay.

The rule is per recipient and per parameter: an update goes out at once when that
phone has not been sent that parameter within the last interval (1/update_rate);
changes made inside the interval coalesce to the moment it ends, when the newest value
goes out (leading and trailing edge). A phone is never sent a value older than its own
last change: its own change is, for it, the newest value.

One `EchoLine` per (room, parameter) holds that rule for all of the room's members at
once. Members sit in one dict ordered by when they were last sent the parameter,
oldest first, so a change touches only the members it is sent to now and the first
one still inside its interval; a room of a hundred phones all moving the same slider
costs one send per phone per interval, not one per phone per change. `EchoClock`
keeps the lines that owe a trailing edge, by due time.

Pure: no asyncio, no clock; time is passed in (µs). Members are any hashable objects.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

__all__ = ["EchoClock", "EchoLine"]

M = TypeVar("M", bound=Hashable)  # a member: the session's Peer


class EchoLine(Generic[M]):
    """One parameter's echoes in one room.

    Args:
        name: the parameter.
        members: the room's members now (none of them has been sent an echo yet).

    Attributes:
        value: the newest value changed in this room (or set by the host).
        version: counts the values; a member holding an older one is owed the newest.
        due_us: when the next trailing edge is due (None: nobody is owed anything
            that could not go at once), as of the last `due`; a member's leaving since
            may leave it early, never late.
    """

    __slots__ = ("name", "value", "version", "due_us", "queued_us", "_fresh", "_sent", "live")

    def __init__(self, name: str, members: Iterable[M]) -> None:
        self.name = name
        self.value = 0.0
        self.version = 0
        self.due_us: int | None = None
        self.queued_us: int | None = None  # the due time this line waits under in EchoClock
        self.live = True  # False once its room is gone
        # Members never sent this parameter -> the version they hold. Always due.
        self._fresh: dict[M, int] = dict.fromkeys(members, 0)
        # Members sent it -> [when, version held], ordered by `when`, oldest first.
        self._sent: dict[M, list[int]] = {}

    def __len__(self) -> int:
        return len(self._fresh) + len(self._sent)

    def add(self, member: M) -> None:
        """A member joined; it was sent the room's state, so it holds the newest value."""
        self._sent.pop(member, None)
        self._fresh[member] = self.version

    def discard(self, member: M) -> None:
        self._fresh.pop(member, None)
        self._sent.pop(member, None)

    def change(self, sender: M, value: float) -> None:
        """`sender` changed the value: everyone else is owed it, the sender is not."""
        self.value = value
        self.version += 1
        entry = self._sent.get(sender)
        if entry is not None:
            entry[1] = self.version
        else:
            self._fresh[sender] = self.version

    def set_all(self, value: float) -> None:
        """The host set the value and sent it to every member itself: nobody is owed."""
        self.value = value
        self.version += 1
        version = self.version
        for member in self._fresh:
            self._fresh[member] = version
        for entry in self._sent.values():
            entry[1] = version
        self.due_us = None

    def due(self, now_us: int, interval_us: int) -> list[M]:
        """The members to send the newest value to now; updates `due_us`.

        Marks them sent at `now_us`. Whoever is owed the value but was sent this
        parameter less than `interval_us` ago waits: `due_us` is when the first of
        them may be sent.
        """
        version = self.version
        out: list[M] = []
        fresh = self._fresh
        if fresh:
            out = [m for m, held in fresh.items() if held < version]
        sent = self._sent
        cutoff = now_us - interval_us
        due_us = None
        late: list[M] = []
        for member, (when, held) in sent.items():
            if held >= version:
                continue  # holds the newest (its own change, or sent it already)
            if when > cutoff:
                due_us = when + interval_us  # the oldest still inside its interval
                break
            late.append(member)
        for member in out:
            del fresh[member]
            sent[member] = [now_us, version]
        for member in late:
            del sent[member]  # to the end: sent last
            sent[member] = [now_us, version]
        if late:
            out.extend(late)
        self.due_us = due_us
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
