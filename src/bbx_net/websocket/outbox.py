"""One client's outgoing messages: one policy, switched by the transport's flow control.

While the client's transport takes bytes (`resume` was the last signal, or none came),
every message is written at once. While the transport is paused (its buffer is above
the high-water mark), nothing is written: `update`s coalesce to the newest value per
parameter, visualization frames are replaced by the newest one, and every other
message waits in a bounded queue that drops its oldest entry when full. `resume`
writes what waited, in order: queued messages, then updates, then the visualization.
(The pace of echoed updates, `update_rate`, is the room's: the session keeps it.)

Pure: no asyncio, no sockets, no clock; the `Sink` does the writing.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

__all__ = ["Outbox", "Sink"]


class Sink(Protocol):
    """Where an Outbox writes: one client's connection, as the transport sees it."""

    def write(self, message: bytes) -> None:
        """Writes one text message (UTF-8 JSON) now, without waiting."""

    def close(self, code: int, reason: str, fail: bool = False) -> None:
        """Starts the closing handshake with `code` (`fail`: RFC 6455 §7.1.7)."""

    def ping(self, payload: bytes) -> None:
        """Sends a protocol-level ping carrying `payload`."""

    def abort(self) -> None:
        """Drops the connection at once (the peer went silent)."""


class Outbox:
    """The outgoing side of one client.

    Args:
        sink: the connection to write to.
        capacity: messages that may wait while the transport is paused; beyond that the
            oldest is dropped (and counted).

    Attributes:
        written: messages handed to the sink.
        dropped: messages dropped or superseded before they could be written.
    """

    __slots__ = (
        "sink",
        "capacity",
        "paused",
        "closed",
        "written",
        "dropped",
        "_queue",
        "_updates",
        "_viz",
        "_close",
    )

    def __init__(self, sink: Sink, capacity: int) -> None:
        self.sink = sink
        self.capacity = capacity
        self.paused = False
        self.closed = False  # close requested: nothing more is accepted
        self.written = 0
        self.dropped = 0
        self._queue: deque[bytes] | None = None
        self._updates: dict[str, bytes] | None = None  # parameter -> newest update
        self._viz: dict[int, bytes] | None = None  # stream -> newest frame
        self._close: tuple[int, str, bool] | None = None  # waiting behind the queue

    # ---- public ----------------------------------------------------------------------

    @property
    def is_holding(self) -> bool:
        """True while something waits (the session flushes such outboxes)."""
        return bool(self._queue) or self._updates is not None or self._viz is not None

    def send(self, message: bytes) -> bool:
        """An ordered message (reply, state, closed). Returns is_holding."""
        if self.closed:
            return False
        if self.paused or self._queue:
            q = self._queue
            if q is None:
                q = self._queue = deque()
            if len(q) >= self.capacity:
                q.popleft()
                self.dropped += 1
            q.append(message)
            return True
        self._write(message)
        return self.is_holding

    def update(self, name: str, message: bytes) -> bool:
        """A new value of `name`: now, or the newest one when the client can take it.

        Returns is_holding.
        """
        if self.closed:
            return False
        if self.paused or self._queue:
            self._hold_update(name, message)
            return True
        if self._updates is not None and self._updates.pop(name, None) is not None:
            self.dropped += 1  # superseded before it could leave
            if not self._updates:
                self._updates = None
        self._write(message)
        return self.is_holding

    def visualization(self, message: bytes, stream: int = 0) -> bool:
        """A visualization frame: now, or the newest one of its stream when the client
        can take it."""
        if self.closed:
            return False
        if self.paused or self._queue:
            viz = self._viz
            if viz is None:
                viz = self._viz = {}
            if stream in viz:
                self.dropped += 1  # stale now
            viz[stream] = message
            return True
        self._write(message)
        return self.is_holding

    def close(self, code: int, reason: str, fail: bool = False) -> None:
        """Closes after what is queued (updates and visualization are dropped)."""
        if self.closed:
            return
        self.closed = True
        self._updates = None
        self._viz = None
        if self._queue:
            self._close = (code, reason, fail)
        else:
            self.sink.close(code, reason, fail)

    def pause(self) -> None:
        """The transport's buffer is above its high-water mark."""
        self.paused = True

    def resume(self) -> bool:
        """The transport drained below its low-water mark. Returns is_holding."""
        self.paused = False
        return self.flush()

    def flush(self) -> bool:
        """Writes what waited, as far as the transport takes it. Returns is_holding."""
        q = self._queue
        while q and not self.paused:
            self._write(q.popleft())
        if self.paused or q:
            return True
        self._queue = None
        if self._close is not None:
            code, reason, fail = self._close
            self._close = None
            self.sink.close(code, reason, fail)
            return False
        if self._updates is not None:
            updates, self._updates = self._updates, None
            for name, frame in updates.items():
                if self.paused:  # a write paused the transport: the rest waits
                    self._hold_update(name, frame)
                else:
                    self._write(frame)
        if self._viz is not None and not self.paused:
            viz, self._viz = self._viz, None
            for stream, frame in viz.items():
                if self.paused:  # the rest waits, still newest-only
                    if self._viz is None:
                        self._viz = {}
                    self._viz[stream] = frame
                else:
                    self._write(frame)
        return self.is_holding

    # ---- private ---------------------------------------------------------------------

    def _hold_update(self, name: str, message: bytes) -> None:
        updates = self._updates
        if updates is None:
            updates = self._updates = {}
        if name in updates:
            self.dropped += 1  # the older value is superseded
        updates[name] = message

    def _write(self, message: bytes) -> None:
        # The sink may call pause() from inside write (asyncio's pause_writing runs
        # synchronously in transport.write): callers re-check `paused` after each write.
        self.written += 1
        self.sink.write(message)
