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
import math
import sys
import threading
import time

import jack
import numpy as np

import bbx_net
from bbx_net import EVENT_DTYPE, BlockClock, SharedSegment, hash_param_name
from bbx_net.websocket import ParamSpec, WsServerConfig

GAIN, FREQ = hash_param_name("gain"), hash_param_name("freq")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shm", help="attach to `bbx-net serve --shm NAME` instead")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--seconds", type=float, default=0.0)
    ap.add_argument("--record")
    ap.add_argument("--max-clients", type=int, default=100)
    args = ap.parse_args()

    server = None
    if args.shm:
        segment = SharedSegment.attach(args.shm)
        consumer = segment.consumer()
        viz = segment.viz()
        meter = None if viz is None else viz[0]
        clock = bbx_net.ClockSync(origin_ns=segment.clock_origin_ns)
    else:
        config = WsServerConfig(
            bind_addr=(args.host, args.port),
            params=[
                ParamSpec("gain", 0.5, 0.0, 1.0),
                ParamSpec("freq", 440.0, 20.0, 2000.0),
                ParamSpec("x"),  # anything else the phones move
            ],
            room=bbx_net.websocket.RoomConfig(max_clients=args.max_clients),
        )
        server = bbx_net.serve_process(config, 1 << 16)
        consumer, meter, clock = server.consumer, server.viz, server.clock
        code = server.commands.create_room_threadsafe()
        print(f"room {code} port {server.port} key {server.room_key(code)}", flush=True)

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
    if args.record and args.seconds > 0:
        record = np.zeros(int(args.seconds * rate) + period, np.float32)
    ramp = np.arange(period, dtype=np.float64)
    done = threading.Event()
    xruns = [0, 0]  # all, and those while our own callback ran long
    last_ns, worst_ns = [0], [0]

    @client.set_process_callback
    def process(frames: int) -> None:
        t0 = time.perf_counter_ns()
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
        print(f"ready {rate} {period}", flush=True)
        try:
            done.wait(args.seconds if args.seconds > 0 else None)
        except KeyboardInterrupt:
            pass
    if record is not None:
        np.save(args.record + ".npy", record[: state["frames"]])
        np.save(args.record + ".blocks.npy", np.array(log, dtype=np.int64))
    print(
        f"done frames {state['frames']} xruns {xruns[0]} host_xruns {xruns[1]} "
        f"worst_callback_us {worst_ns[0] / 1000:.1f}",
        flush=True,
    )
    if server is not None:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
