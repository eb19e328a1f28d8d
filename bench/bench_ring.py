"""The ring, measured beside baselines in the same run; prints a table.

Python side: ns per push (baselines: queue.SimpleQueue.put of a tuple, struct.pack_into
into a preallocated bytearray), drain_into of 64 into numpy, and Python thread -> C
thread throughput (baseline: SimpleQueue put+get across two Python threads).
C side (bench/c/ring_peers.cpp, compiled here): pop and drain per message beside a
plain 48-byte memcpy floor, and C -> C thread throughput, busy-polling and with an
audio-callback-like consumer, beside boost::lockfree::spsc_queue and jack_ringbuffer.

Needs g++, libboost-dev and libjack-jackd2-dev for the C part (Debian package names).
Every figure is a median of repeats. Run: python bench/bench_ring.py
"""

from __future__ import annotations

import json
import queue
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from pathlib import Path

import numpy as np

import bbx_net
from bbx_net import MESSAGE_DTYPE, net_buffer
from bbx_net import _ring as ring_internals

HERE = Path(__file__).parent
REPEATS = 7


def per_call_ns(stmt: Callable[[], object], number: int, reset: Callable[[], None]) -> float:
    """Median ns per call of `stmt` over REPEATS runs of `number` calls."""
    runs = []
    for _ in range(REPEATS):
        reset()
        runs.append(timeit.timeit(stmt, number=number) / number * 1e9)
    return statistics.median(runs)


def python_push() -> list[tuple[str, str, float, str]]:
    n = 100_000
    producer, consumer = net_buffer(n)
    sink = np.zeros(n, MESSAGE_DTYPE)
    sq: queue.SimpleQueue[tuple[int, ...]] = queue.SimpleQueue()
    packer = struct.Struct("<IIIffIQQQ")
    buf = bytearray(packer.size * n)
    offsets = iter(range(0, packer.size * n * REPEATS * 2, packer.size))

    def reset_ring() -> None:
        consumer.drain_into(sink)

    def reset_queue() -> None:
        while not sq.empty():
            sq.get_nowait()

    def reset_offsets() -> None:
        nonlocal offsets
        offsets = iter(range(0, packer.size * n, packer.size))

    send_param = producer.try_send_param
    send = producer.try_send
    put = sq.put
    pack_into = packer.pack_into
    rows = [
        (
            "Python push",
            "try_send_param('gain', v)",
            per_call_ns(lambda: send_param("gain", 0.5), n, reset_ring),
            "ns/msg",
        ),
        (
            "Python push",
            "try_send(all 9 fields)",
            per_call_ns(lambda: send(0, 0x1B5426FE, 1, 0.5, 0.0, 1, 2, 3), n, reset_ring),
            "ns/msg",
        ),
        (
            "Python push",
            "baseline SimpleQueue.put(tuple)",
            per_call_ns(lambda: put((0, 0x1B5426FE, 1, 0.5, 0.0, 1, 2, 3)), n, reset_queue),
            "ns/msg",
        ),
        (
            "Python push",
            "baseline struct.pack_into(bytearray)",
            per_call_ns(
                lambda: pack_into(buf, next(offsets), 0, 0x1B5426FE, 1, 0.5, 0.0, 0, 1, 2, 3),
                n,
                reset_offsets,
            ),
            "ns/msg",
        ),
    ]
    assert producer.dropped == 0
    return rows


def python_drain() -> list[tuple[str, str, float, str]]:
    producer, consumer = net_buffer(64)
    out = np.zeros(64, MESSAGE_DTYPE)
    sq: queue.SimpleQueue[tuple[int, ...]] = queue.SimpleQueue()
    item = (0, 1, 1, 0.5, 0.0, 0, 0, 0)
    clock = time.perf_counter_ns

    def timed(take: Callable[[], object], refill: Callable[[], None], rounds: int) -> float:
        """Median ns per message of `take` (64 messages), refill untimed, clock cost removed."""
        runs = []
        for _ in range(REPEATS):
            spent = 0
            for _ in range(rounds):
                refill()
                t0 = clock()
                take()
                spent += clock() - t0
            empty = 0
            for _ in range(rounds):
                t0 = clock()
                empty += clock() - t0
            runs.append((spent - empty) / rounds / 64)
        return statistics.median(runs)

    def refill_ring() -> None:
        while producer.try_send_param("gain", 0.5):
            pass

    def refill_queue() -> None:
        for _ in range(64):
            sq.put(item)

    def pop_64() -> None:
        pop = consumer.try_pop
        for _ in range(64):
            pop()

    def get_64() -> None:
        get = sq.get_nowait
        for _ in range(64):
            get()

    rounds = 5_000
    return [
        (
            "Python take 64",
            "drain_into(numpy array)",
            timed(lambda: consumer.drain_into(out), refill_ring, rounds),
            "ns/msg",
        ),
        ("Python take 64", "try_pop() x 64", timed(pop_64, refill_ring, rounds), "ns/msg"),
        (
            "Python take 64",
            "baseline SimpleQueue.get_nowait() x 64",
            timed(get_64, refill_queue, rounds),
            "ns/msg",
        ),
    ]


def python_to_c_thread() -> list[tuple[str, str, float, str]]:
    """ns per message from a Python producer loop to a consumer thread.

    Both producers run the same loop over the same changing values, one call per
    message; the queue needs its message packed in a tuple, our ring takes the fields.
    Ours feeds a native thread that never takes the GIL, once busy-polling and once
    like an audio callback (sleep 200 us when empty, then drain everything).
    """
    total = 1_000_000
    gain = bbx_net.hash_param_name("gain")
    values = [i / total for i in range(total)]
    results: dict[str, list[float]] = {"busy": [], "callback": [], "base": []}
    for _ in range(5):
        for mode, sleep_us in (("busy", 0), ("callback", 200)):
            producer, consumer = net_buffer(4096)
            checker = ring_internals._SequenceChecker(consumer, total, 120.0, False, sleep_us)
            send = producer.try_send_param
            t0 = time.perf_counter()
            for v in values:
                while not send(gain, v):
                    pass
            result = checker.join()
            results[mode].append((time.perf_counter() - t0) / total * 1e9)
            assert result["received"] == total and not result["timed_out"], result

        sq: queue.SimpleQueue[tuple[int, float] | None] = queue.SimpleQueue()
        got = [0]

        def consume(
            q: queue.SimpleQueue[tuple[int, float] | None] = sq, count: list[int] = got
        ) -> None:
            get = q.get
            while get() is not None:
                count[0] += 1

        t = threading.Thread(target=consume)
        t.start()
        put = sq.put
        t0 = time.perf_counter()
        for v in values:
            put((gain, v))
        put(None)
        t.join()
        results["base"].append((time.perf_counter() - t0) / total * 1e9)
        assert got[0] == total
    return [
        (
            "Python thread -> consumer thread",
            "ours: C thread, audio-callback style",
            statistics.median(results["callback"]),
            "ns/msg",
        ),
        (
            "Python thread -> consumer thread",
            "ours: C thread, busy-polling",
            statistics.median(results["busy"]),
            "ns/msg",
        ),
        (
            "Python thread -> consumer thread",
            "baseline SimpleQueue put -> get (2 threads)",
            statistics.median(results["base"]),
            "ns/msg",
        ),
    ]


def c_side() -> list[tuple[str, str, float, str]]:
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        print("C part skipped: no C++ compiler", file=sys.stderr)
        return []
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "ring_peers"
        cmd = [
            cxx,
            "-std=c++23",
            "-O2",
            "-I",
            bbx_net.get_include(),
            str(HERE / "c" / "ring_peers.cpp"),
            "-o",
            str(exe),
            "-ljack",
            "-lpthread",
        ]
        built = subprocess.run(cmd, capture_output=True, text=True)
        if built.returncode != 0:
            print(
                "C part skipped (install g++ libboost-dev libjack-jackd2-dev):\n"
                + built.stderr[-2000:],
                file=sys.stderr,
            )
            return []
        out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        r = json.loads(line)
        rows.append((r["bench"], r["impl"], r["value"], r["unit"]))
    return rows


def table(rows: list[tuple[str, str, float, str]]) -> str:
    """Markdown table; each row's ratio is to the first row of its group (ours)."""
    lines = [
        "| measurement | implementation | median | unit | ratio to ours |",
        "|---|---|---:|---|---:|",
    ]
    first: dict[str, float] = {}
    for bench, impl, value, unit in rows:
        ref = first.setdefault(bench, value)
        lines.append(f"| {bench} | {impl} | {value:.2f} | {unit} | {value / ref:.2f}x |")
    return "\n".join(lines)


def summary(rows: list[tuple[str, str, float, str]]) -> list[str]:
    v = {(b, i): x for b, i, x, _ in rows}
    out = []
    push = v[("Python push", "try_send_param('gain', v)")]
    out.append(f"Python push: {push:.0f} ns/msg (target <= 100)")
    group = "Python thread -> consumer thread"
    base = v[(group, "baseline SimpleQueue put -> get (2 threads)")]
    for mode in ("audio-callback style", "busy-polling"):
        ours = v[(group, f"ours: C thread, {mode}")]
        out.append(
            f"Python->C thread ({mode}) vs SimpleQueue across threads: "
            f"{ours / base:.2f}x (target <= 0.35x)"
        )
    floor = v.get(("memcpy floor (48 B per message)", "plain array"))
    if floor:
        for what in ("C pop, one thread", "C drain by 64, one thread"):
            out.append(
                f"{what}: {v[(what, 'bbx_net')] / floor:.2f}x the memcpy floor "
                "(target for drain <= 3x)"
            )
        for what, better in (
            ("C->C threads, busy consumer", "higher"),
            ("callback drain (200 us sleeps): cost", "lower"),
            ("callback drain (200 us sleeps): rate", "higher"),
        ):
            us = v[(what, "bbx_net")]
            peers = {i: x for (b, i), x in v.items() if b == what and i != "bbx_net"}
            cmp = ", ".join(f"{i} {x / us:.2f}x" for i, x in peers.items())
            out.append(f"{what}: ours {us:.2f}; peers relative to ours: {cmp} ({better} is better)")
    return out


def main() -> None:
    rows = python_push() + python_drain() + python_to_c_thread() + c_side()
    print(table(rows))
    print()
    for line in summary(rows):
        print("-", line)


if __name__ == "__main__":
    main()
