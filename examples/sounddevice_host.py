"""A Python audio host on any sound card (PortAudio via sounddevice), steered by phones.

    pip install bbx-net sounddevice
    python examples/sounddevice_host.py [--port 8080] [--seconds S]

The server runs in its own process (bbx_net.serve_process): the audio callback never
waits for the server's GIL. The callback drains the shared ring with a BlockDrain bound
once to its event array (no allocation per call) and renders a sine whose `gain` and
`freq` follow the phones at the exact sample of each event, then sends a peak meter back
to the phones' `visualization`. Block start times come from a BlockClock on the server
clock, so they do not inherit the callback's wake-up jitter.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import sounddevice as sd

import bbx_net
from bbx_net import EVENT_DTYPE, BlockClock, hash_param_name
from bbx_net.websocket import ParamSpec, WsServerConfig

GAIN, FREQ = hash_param_name("gain"), hash_param_name("freq")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--rate", type=int, default=48_000)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=0.0, help="0: until Ctrl-C")
    ap.add_argument("--device", help="output device (name or number; see python -m sounddevice)")
    args = ap.parse_args()

    config = WsServerConfig(
        bind_addr=(args.host, args.port),
        params=[ParamSpec("gain", 0.2, 0.0, 1.0), ParamSpec("freq", 440.0, 20.0, 2000.0)],
    )
    server = bbx_net.serve_process(config, 1 << 14, viz_floats=1)
    code = server.commands.create_room_threadsafe()
    print(f"room {code} port {server.port} key {server.room_key(code)}", flush=True)

    rate, block = args.rate, args.block
    events = np.zeros(256, EVENT_DTYPE)
    drain = server.consumer.bind_block(events, rate, block).drain
    blocks = BlockClock(rate, block)
    clock = server.clock
    peak = np.zeros(1, np.float32)
    meter = None if server.viz is None else server.viz.bind(peak).push
    ramp = np.arange(block, dtype=np.float64)
    state = {"gain": 0.2, "freq": 440.0, "phase": 0.0}

    def callback(out: np.ndarray, frames: int, time_info: object, status: object) -> None:
        start = blocks.next_block(clock.now_us(), frames)
        n = drain(start, frames)
        buf = out[:, 0]
        a = 0
        for k in range(n + 1):
            b = frames if k == n else int(events[k]["sample_offset"])
            if b > a:
                w = 2 * math.pi * state["freq"] / rate
                buf[a:b] = state["gain"] * np.sin(state["phase"] + w * ramp[: b - a])
                state["phase"] = (state["phase"] + w * (b - a)) % (2 * math.pi)
                a = b
            if k < n:
                h = int(events[k]["param_hash"])
                if h in (GAIN, FREQ):
                    state["gain" if h == GAIN else "freq"] = float(events[k]["payload"][0])
        if meter is not None:
            peak[0] = float(np.max(np.abs(buf)))
            meter(0, start)

    try:
        with sd.OutputStream(
            samplerate=rate, blocksize=block, channels=1, dtype="float32", callback=callback
        ):
            print("playing; Ctrl-C to stop", flush=True)
            if args.seconds > 0:
                time.sleep(args.seconds)
            else:
                while server.alive:
                    time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
