"""Several server processes on one port: past what one core can serve.

```python
pool = bbx_net.serve_pool(WsServerConfig(bind_addr="0.0.0.0:8080"), processes=2)
code = pool.create_room_threadsafe()          # the same code and key in every process
drain = pool.bind_block(events, 48000, 256)   # one drain over every process's ring
...
pool.shutdown()
```

Each process is a `serve_process` server bound with SO_REUSEPORT to the same port, so
the kernel spreads new connections over them (by a hash of the connection's addresses
and ports). Each feeds its own shared ring; the audio side drains them together
(`bind_block`, or `bbx_rings_drain_block` over `ring_addresses` in C), merged by
sample offset. All share one clock origin, so a phone's `at` means the same sample
whichever process it reached. Host commands (broadcasts, closing a room, the
projector) go to every process.

What a pool does not share, because each process keeps its own state:

- A room exists in every process under one code and key, but its phones are split
  between the processes. A phone's changes reach the audio side from anywhere, but
  its `update` echo reaches only the phones in its own process; presence counts,
  the room's current values sent to a phone that joins, and `max_clients` are per
  process.
- A phone that reconnects may reach another process: its resume token is unknown
  there, so it joins afresh (a new node id) instead of resuming its seat.
- Rate limits, per-address caps and `max_connections` apply per process; stats are
  per process (`stats()` gives a list).

For the audience-controls-the-sound case (every phone steers the audio, few watch each
other's sliders) none of this matters; a room whose phones must see each other's
moves belongs in one process. `bench/bench_cores.py` measures what a pool buys.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy.typing as npt

from .._clock import ClockSync
from .._ring import MergedBlockDrain, NetBufferConsumer, VizWriter, bind_blocks
from .commands import CloseRoom, Command, CreateRoom, Shutdown
from .config import WsServerConfig
from .process import ServerProcess, serve_process
from .session import ClientStats, ParamEvent, ServerStats, TriggerEvent

__all__ = ["ServerPool", "serve_pool"]

Listener = Callable[[ParamEvent | TriggerEvent], None]


def serve_pool(
    config: WsServerConfig,
    processes: int | None = None,
    ring_capacity: int = 4096,
    **options: Any,
) -> ServerPool:
    """Starts `processes` server processes sharing `config`'s port; returns once all
    listen.

    Args:
        config: as for serve_process (`reuse_port` is set for you). Port 0 picks a
            free port for the first process; the others bind the same.
        processes: how many (default: the CPUs this process may run on).
        ring_capacity: messages each process's ring holds.
        options: the other keywords of serve_process (schedule_capacity, viz_capacity,
            viz_floats, command_capacity, certfile, keyfile, start_timeout).

    Raises:
        ValueError: processes < 1, or what serve_process refuses.
        BbxNetError: a server process failed to start (the ones started are stopped).
    """
    count = len(os.sched_getaffinity(0)) if processes is None else processes
    if count < 1:
        raise ValueError(f"processes must be at least 1, got {count}")
    for fixed in ("keep_name", "clock_origin_ns"):
        if fixed in options:
            raise ValueError(f"serve_pool sets {fixed} itself")
    config = dataclasses.replace(config, reuse_port=True)
    servers: list[ServerProcess] = []
    try:
        servers.append(serve_process(config, ring_capacity, **options))
        origin = servers[0].clock.origin_ns
        same_port = dataclasses.replace(config, bind_addr=(config.host, servers[0].port))
        for _ in range(count - 1):
            servers.append(
                serve_process(same_port, ring_capacity, clock_origin_ns=origin, **options)
            )
    except BaseException:
        for server in servers:
            server.shutdown()
        raise
    return ServerPool(servers)


class ServerPool:
    """The audio host's handle on several server processes serving one port.

    Attributes:
        servers: the ServerProcess handles, in ring order.
        consumers: each process's ring, in the same order (drain them together with
            `bind_block`; do not mix with other drains).
        viz: each process's visualization writer (push a frame to every one), or ()
            without visualization rings.
        clock: the shared server clock.
        port: the TCP port they share.
    """

    def __init__(self, servers: list[ServerProcess]) -> None:
        self.servers: tuple[ServerProcess, ...] = tuple(servers)
        self.consumers: tuple[NetBufferConsumer, ...] = tuple(s.consumer for s in servers)
        self.viz: tuple[VizWriter, ...] = tuple(s.viz for s in servers if s.viz is not None)
        self.clock: ClockSync = servers[0].clock
        self.port: int = servers[0].port

    # ---- the audio side -----------------------------------------------------------------

    def bind_block(
        self, out: npt.NDArray[Any], sample_rate: int, block_size: int
    ) -> MergedBlockDrain:
        """One allocation-free drain over every process's ring (see bind_blocks)."""
        return bind_blocks(self.consumers, out, sample_rate, block_size)

    @property
    def ring_addresses(self) -> list[int]:
        """Each ring's `bbx_ring *` for C hosts (`bbx_rings_drain_block`); valid while
        this pool lives."""
        return [c.ring_address for c in self.consumers]

    # ---- commands -----------------------------------------------------------------------

    def try_send(self, command: Command) -> bool:
        """Queues `command` for every process; False if one of them had no room (the
        others have it). Any thread; never blocks."""
        _refuse_pool_managed(command)
        return all([s.commands.try_send(command) for s in self.servers])

    def send_threadsafe(self, command: Command, timeout: float | None = 10.0) -> None:
        """Queues `command` for every process, waiting while a channel is full."""
        _refuse_pool_managed(command)
        for server in self.servers:
            server.commands.send_threadsafe(command, timeout)

    def create_room_threadsafe(
        self, timeout: float | None = 10.0, code: str | None = None, key: str | None = None
    ) -> str:
        """Creates one room in every process, under one code and link key; its code.

        Raises:
            BbxNetError: a process could not create it (the room is closed in the
                processes that had created it).
            TimeoutError: a process did not answer within `timeout` seconds.
        """
        first = self.servers[0]
        code = first.commands.create_room_threadsafe(timeout, code, key)
        made = [first]
        try:
            key = key or first.room_key(code, timeout or 5.0)
            for server in self.servers[1:]:
                server.commands.create_room_threadsafe(timeout, code, key)
                made.append(server)
        except BaseException:
            for server in made:
                server.commands.try_send(CloseRoom(code))
            raise
        return code

    async def create_room(self, code: str | None = None, key: str | None = None) -> str:
        """create_room_threadsafe, awaited from a loop."""
        return await asyncio.to_thread(self.create_room_threadsafe, 10.0, code, key)

    def add_listener(self, listener: Listener) -> None:
        """Calls `listener(event)` for every accepted param/trigger of every process (on
        each process's helper thread: events of one process are in order)."""
        for server in self.servers:
            server.add_listener(listener)

    def remove_listener(self, listener: Listener) -> None:
        for server in self.servers:
            server.remove_listener(listener)

    def show(self, code: str | None, link: str | None = None, timeout: float = 5.0) -> None:
        """Puts room `code` on every process's projector page."""
        for server in self.servers:
            server.show(code, link, timeout)

    # ---- snapshots ----------------------------------------------------------------------

    def stats(self, timeout: float = 5.0) -> list[ServerStats]:
        """Each process's counters, in ring order."""
        return [s.stats(timeout) for s in self.servers]

    def client_stats(self, timeout: float = 5.0) -> list[ClientStats]:
        """Every connection of every process."""
        return [c for s in self.servers for c in s.client_stats(timeout)]

    def rooms(self, timeout: float = 5.0) -> list[str]:
        """The codes open in any process."""
        return sorted({code for s in self.servers for code in s.rooms(timeout)})

    # ---- state and stopping -------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """False once any of the processes has ended."""
        return all(s.alive for s in self.servers)

    def on_exit(self, callback: Callable[[int, int], None]) -> None:
        """Calls `callback(index, returncode)` when a process ends (see
        ServerProcess.on_exit)."""

        def tell(index: int) -> Callable[[int], None]:
            return lambda returncode: callback(index, returncode)

        for index, server in enumerate(self.servers):
            server.on_exit(tell(index))

    def shutdown(self, timeout: float = 10.0) -> list[int]:
        """Stops every process (all asked at once); their exit codes."""
        for server in self.servers:
            if server.alive:
                server.commands.try_send(Shutdown())
        return [s.shutdown(timeout) for s in self.servers]

    close = shutdown

    def __enter__(self) -> ServerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _refuse_pool_managed(command: Command) -> None:
    if isinstance(command, CreateRoom):
        raise TypeError("use ServerPool.create_room_threadsafe: a room needs one code in all")
    if isinstance(command, Shutdown):
        raise TypeError("use ServerPool.shutdown")
