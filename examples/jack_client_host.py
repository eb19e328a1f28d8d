"""A Python JACK client steered by phones, with the server in its own process.

    pip install bbx-net JACK-Client
    python examples/jack_client_host.py            # starts the server, prints the room
    python examples/jack_client_host.py --shm /my-show   # or attach to `bbx-net --shm`

The process callback runs in JACK's realtime thread. It drains the shared ring with a
BlockDrain bound once to its event array (no allocation per call), renders a sine whose
`gain` and `freq` follow the phones at the exact sample, and sends a peak meter back.
The server runs in another process (bbx_net.serve_process), so the callback never waits
for the server's GIL. `--seconds S --record FILE` stops after S seconds and saves what
it rendered (FILE.npy) and each block's first frame and start (FILE.blocks.npy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jack
import numpy as np

import bbx_net
from bbx_net import EVENT_DTYPE, BlockClock, SharedSegment, hash_param_name
from bbx_net.realtime import tune_python_host
from bbx_net.websocket import ParamSpec, RoomConfig, Shutdown, WsServer, WsServerConfig

GAIN, FREQ = hash_param_name("gain"), hash_param_name("freq")


def start_server(args: argparse.Namespace) -> tuple[Any, Any, Any, Callable[[], None]]:
    """(consumer, meter writer, server clock, stop) for the chosen setup."""
    config = WsServerConfig(
        bind_addr=(args.host, args.port),
        params=[
            ParamSpec("gain", 0.5, 0.0, 1.0),
            ParamSpec("freq", 440.0, 20.0, 2000.0),
            ParamSpec("x"),  # anything else the phones move
        ],
        room=RoomConfig(max_clients=args.max_clients),
    )
    if args.shm:  # attach to `bbx-net serve --shm NAME`
        segment = SharedSegment.attach(args.shm)
        viz = segment.viz()
        clock = bbx_net.ClockSync(origin_ns=segment.clock_origin_ns)
        return segment.consumer(), None if viz is None else viz[0], clock, lambda: None
    if args.in_process:  # the server in a thread of this process (for comparison)
        producer, consumer = bbx_net.net_buffer(1 << 16)
        meter, reader = bbx_net.viz_buffer(64, 1)
        server = WsServer(config, producer, viz=reader)
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(server.start())
            started.set()
            loop.run_until_complete(server.run())

        thread = threading.Thread(target=serve, name="bbx-server", daemon=True)
        thread.start()
        started.wait(10)
        rooms = [server.commands.create_room_threadsafe() for _ in range(args.rooms)]
        announce(server.port, [(c, server.room_key(c)) for c in rooms], args.rooms_out)

        def stop() -> None:
            server.commands.try_send(Shutdown())
            thread.join(10)

        return consumer, meter, server.clock, stop
    process = bbx_net.serve_process(config, 1 << 16, viz_floats=1)
    rooms = [process.commands.create_room_threadsafe() for _ in range(args.rooms)]
    announce(process.port, [(c, process.room_key(c)) for c in rooms], args.rooms_out)
    return process.consumer, process.viz, process.clock, lambda: process.shutdown() and None


def announce(port: int, rooms: list[tuple[str, str | None]], out: str | None) -> None:
    code, key = rooms[0]
    print(f"room {code} port {port} key {key}", flush=True)
    if out:
        with open(out, "w") as f:
            json.dump({"port": port, "rooms": rooms}, f)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shm", help="attach to `bbx-net serve --shm NAME` instead")
    ap.add_argument("--in-process", action="store_true", help="server in a thread (compare)")
    ap.add_argument("--tune", action="store_true", help="apply bbx_net.realtime.tune_python_host")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--seconds", type=float, default=0.0)
    ap.add_argument("--record", help="save the audio, block starts and callback timings")
    ap.add_argument("--max-clients", type=int, default=100)
    ap.add_argument("--rooms", type=int, default=1)
    ap.add_argument("--rooms-out", help="write the port and every room's code and key (JSON)")
    args = ap.parse_args()
    consumer, meter, clock, stop = start_server(args)

    client = jack.Client("bbx_py_host", no_start_server=True)
    rate, period = client.samplerate, client.blocksize
    out_port = client.outports.register("out")
    events = np.zeros(256, EVENT_DTYPE)
    drain = consumer.bind_block(events, rate, period).drain
    blocks = BlockClock(rate, period)
    state = {"gain": 0.5, "freq": 440.0, "phase": 0.0, "frames": 0}
    peak = np.zeros(1, np.float32)
    push = None if meter is None else meter.bind(peak).push
    record = None
    log: list[tuple[int, int]] = []
    timing = np.zeros((0, 3), np.int64)
    if args.record and args.seconds > 0:
        record = np.zeros(int(args.seconds * rate) + period, np.float32)
        timing = np.zeros((int(args.seconds * rate / period) + 8, 3), np.int64)
    ramp = np.arange(period, dtype=np.float64)
    done = threading.Event()
    xruns = [0, 0]  # all, and those while our own callback ran long
    last_ns, worst_ns, blocks_seen = [0], [0], [0]

    @client.set_process_callback
    def process(frames: int) -> None:
        t0 = time.perf_counter_ns()
        late = client.frames_since_cycle_start
        buf = out_port.get_array()
        start = blocks.next_block(clock.now_us(), frames)
        n = drain(start, frames)
        cuts = [0]
        values = []
        for k in range(n):
            e = events[k]
            if e["param_hash"] in (GAIN, FREQ):
                cuts.append(int(e["sample_offset"]))
                values.append((int(e["param_hash"]), float(e["payload"][0])))
        cuts.append(frames)
        for k in range(len(cuts) - 1):
            a, b = cuts[k], cuts[k + 1]
            if b > a:
                w = 2 * math.pi * state["freq"] / rate
                buf[a:b] = state["gain"] * np.sin(state["phase"] + w * ramp[: b - a])
                state["phase"] = (state["phase"] + w * (b - a)) % (2 * math.pi)
            if k < len(values):
                which, value = values[k]
                state["gain" if which == GAIN else "freq"] = value
        f0 = state["frames"]
        if record is not None and f0 < len(record):
            m = min(frames, len(record) - f0)
            record[f0 : f0 + m] = buf[:m]
            log.append((f0, start))
        state["frames"] = f0 + frames
        if push is not None:
            peak[0] = float(np.max(np.abs(buf)))
            push(0, start)
        last_ns[0] = time.perf_counter_ns() - t0
        worst_ns[0] = max(worst_ns[0], last_ns[0])
        b = blocks_seen[0]
        if b < len(timing):  # duration, lateness (ns), events
            timing[b, 0] = last_ns[0]
            timing[b, 1] = late * 1_000_000_000 // rate
            timing[b, 2] = n
            blocks_seen[0] = b + 1

    period_ns = 1e9 * period / rate

    @client.set_xrun_callback
    def xrun(delay: float) -> None:
        xruns[0] += 1
        if last_ns[0] > period_ns / 2:  # ours: our last callback ran long
            xruns[1] += 1

    with client:
        playback = client.get_ports(is_physical=True, is_input=True)
        if playback:
            client.connect(out_port, playback[0])
        tuning = tune_python_host() if args.tune else None
        print(f"ready {rate} {period}", flush=True)
        try:
            done.wait(args.seconds if args.seconds > 0 else None)
        except KeyboardInterrupt:
            pass
    if record is not None:
        np.save(args.record + ".npy", record[: state["frames"]])
        np.save(args.record + ".blocks.npy", np.array(log, dtype=np.int64))
        np.save(args.record + ".timing.npy", timing[: blocks_seen[0]])
    if tuning is not None:
        tuning.restore()
    print(
        f"done frames {state['frames']} xruns {xruns[0]} host_xruns {xruns[1]} "
        f"worst_callback_us {worst_ns[0] / 1000:.1f}",
        flush=True,
    )
    stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
