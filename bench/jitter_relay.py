"""A userspace TCP relay on loopback that delays each direction (there is no netem here).

    relay = JitterRelay(("127.0.0.1", server_port), Profile(up=normal(10, 5),
                        down=normal(10, 5)))
    port = relay.start()      # clients connect to 127.0.0.1:port instead
    ...
    relay.close()

Each chunk read from one side is written to the other at `read time + delay`, the
delay drawn for that chunk from the direction's distribution, but never before the
chunk ahead of it (a TCP stream keeps its order: a late chunk holds up the ones behind
it, as a retransmission does). `loss` is the chance that a chunk is "lost" and
retransmitted `rto_ms` later. Distributions get the seconds since the relay started,
so a route can change mid-run. Writers sleep (nanosleep: about 0.1 ms late at most;
they never spin, which would hold the GIL from the threads that are reading).

Benches run it in its own process (`python bench/jitter_relay.py PORT CELL` prints
the port to connect to), away from the server's GIL; tests use it in-process.

Delays are one-way, in µs. Used by bench/bench_clock.py and tests/test_jitter_relay.py.
"""

from __future__ import annotations

import contextlib
import queue
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

Sampler = Callable[[random.Random, float], float]  # (rng, seconds since start) -> µs


def fixed(ms: float) -> Sampler:
    return lambda rng, t: ms * 1e3


def normal(mean_ms: float, sd_ms: float) -> Sampler:
    """Gaussian jitter, cut at 0 (Wi-Fi-like: both directions alike)."""
    return lambda rng, t: max(0.0, rng.gauss(mean_ms, sd_ms)) * 1e3


def floor_exp(floor_ms: float, mean_ms: float) -> Sampler:
    """A floor plus an exponential tail (queueing: one-sided jitter)."""
    return lambda rng, t: (floor_ms + rng.expovariate(1 / mean_ms)) * 1e3


def switch(before: Sampler, after: Sampler, at_s: float) -> Sampler:
    """`before` until at_s seconds after start, then `after` (a route change)."""
    return lambda rng, t: before(rng, t) if t < at_s else after(rng, t)


@dataclass(frozen=True)
class Profile:
    up: Sampler  # client -> server
    down: Sampler  # server -> client
    loss: float = 0.0
    rto_ms: float = 200.0


_EOF = b""


class _Pipe:
    """One direction of one connection: a reader and a writer thread."""

    def __init__(
        self, src: socket.socket, dst: socket.socket, sampler: Sampler, relay: JitterRelay
    ) -> None:
        self.src, self.dst, self.sampler, self.relay = src, dst, sampler, relay
        self.q: queue.Queue[tuple[int, bytes]] = queue.Queue()
        self.threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._write, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _read(self) -> None:
        relay = self.relay
        last = 0
        while True:
            try:
                data = self.src.recv(65536)
            except OSError:
                data = _EOF
            now = time.monotonic_ns()
            with relay.lock:
                delay = self.sampler(relay.rng, (now - relay.started_ns) / 1e9)
                if relay.profile.loss and relay.rng.random() < relay.profile.loss:
                    delay += relay.profile.rto_ms * 1e3
            due = max(now + int(delay * 1e3), last)  # never ahead of the chunk before
            last = due
            self.q.put((due, data))
            if not data:
                return

    def _write(self) -> None:
        while True:
            due, data = self.q.get()
            left = due - time.monotonic_ns()
            if left > 0:
                time.sleep(left / 1e9)
            try:
                if not data:
                    self.dst.shutdown(socket.SHUT_WR)
                    return
                self.dst.sendall(data)
            except OSError:
                return


class JitterRelay:
    """Listens on 127.0.0.1 (port 0) and relays every connection to `target`."""

    def __init__(self, target: tuple[str, int], profile: Profile, seed: int = 0) -> None:
        self.target = target
        self.profile = profile
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.started_ns = time.monotonic_ns()
        self._listener: socket.socket | None = None
        self._socks: list[socket.socket] = []
        self._closed = False

    def start(self) -> int:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.started_ns = time.monotonic_ns()
        threading.Thread(target=self._accept, daemon=True).start()
        return int(self._listener.getsockname()[1])

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socks += [client, server]
            _Pipe(client, server, self.profile.up, self)
            _Pipe(server, client, self.profile.down, self)

    def close(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


PROFILES: dict[str, Profile] = {
    "(5,2)": Profile(normal(5, 2), normal(5, 2)),
    "(10,5)": Profile(normal(10, 5), normal(10, 5)),
    "(20,10)": Profile(normal(20, 10), normal(20, 10)),
    "one-sided exp": Profile(floor_exp(2, 5), floor_exp(2, 5)),
    "1% loss": Profile(normal(5, 2), normal(5, 2), loss=0.01),
    "asymmetric 10/0": Profile(normal(10, 0.5), fixed(0)),
    "route 5->30 ms": Profile(
        switch(normal(5, 1), normal(30, 1), 20), switch(normal(5, 1), normal(30, 1), 20)
    ),
}


def main() -> None:
    import sys

    target, name = int(sys.argv[1]), sys.argv[2]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    relay = JitterRelay(("127.0.0.1", target), PROFILES[name], seed=seed)
    print(relay.start(), flush=True)
    try:
        sys.stdin.read()  # until the bench closes our stdin
    finally:
        relay.close()


if __name__ == "__main__":
    main()
