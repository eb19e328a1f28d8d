"""A Python phone that syncs its clock to a bbx_net server and records how it went.

Usage: python bench/clock_client.py URL ROOM SECONDS [EVENTS_AFTER_S BASE naive|ours]
With the last three, the phone also schedules an event every 100 ms after
EVENTS_AFTER_S: `param e2e = BASE + i` at `at` = 100 ms from now in server time by its
estimate (ours or the naive one), and lists them as `events` = [[value, local µs
meant], ...] (bench/bench_e2e.py).
Prints one JSON object: `samples` = [[local µs, our estimate, naive estimate], ...]
every 50 ms (local time is CLOCK_MONOTONIC µs, which every process on the machine
shares, so the bench knows the true offset), `exchanges` = [[t1, server_time, t4], ...]
and `joined_us`. The estimate is bbx_net's OffsetEstimator fed from our pings (on its
own schedule, reporting each exchange as bbx-client.js does); the naive one is the
offset of the last ping alone.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import orjson
from websockets.sync.client import connect

from bbx_net import OffsetEstimator


def mono_us() -> float:
    return time.monotonic_ns() / 1e3


def run(
    url: str,
    room: str,
    seconds: float,
    sample_every_s: float = 0.05,
    events_after_s: float | None = None,
    base: int = 0,
    use_naive: bool = False,
) -> dict[str, Any]:
    est = OffsetEstimator()
    events: list[list[float]] = []
    samples: list[list[float | None]] = []
    exchanges: list[list[float]] = []
    naive: float | None = None
    last: list[float] | None = None
    with connect(url, open_timeout=10, max_size=None) as ws:
        ws.send(orjson.dumps({"type": "join", "room_code": room, "client_name": "clock"}).decode())
        deadline = time.monotonic() + 10
        while orjson.loads(ws.recv(timeout=10))["type"] != "welcome":
            assert time.monotonic() < deadline, "no welcome"
        joined = mono_us()
        end = joined + seconds * 1e6
        next_ping = next_sample = joined
        next_event = joined + (events_after_s or 0) * 1e6
        while (now := mono_us()) < end:
            if events_after_s is not None and now >= next_event:
                meant = now + 100e3
                offset = naive if use_naive else est.offset_at(meant)
                if offset is not None:
                    value = base + len(events)
                    at = round(meant + offset)
                    ws.send(
                        orjson.dumps(
                            {"type": "param", "param": "e2e", "value": value, "at": at}
                        ).decode()
                    )
                    events.append([value, meant])
                next_event += 100e3
            if now >= next_ping:
                msg: dict[str, Any] = {"type": "ping", "client_time": mono_us()}
                if last is not None:
                    msg |= {"last": last, "offset": est.offset_us, "rtt": est.latest_delay_us}
                ws.send(orjson.dumps(msg).decode())
                next_ping = now + est.ping_interval_us
            soon = min(next_ping, next_sample, end)
            if events_after_s is not None:
                soon = min(soon, next_event)
            wait = max(0.0, soon - mono_us()) / 1e6
            try:
                raw = ws.recv(timeout=wait)
            except TimeoutError:
                raw = None
            t4 = mono_us()
            if raw is not None:
                msg = orjson.loads(raw)
                if msg.get("type") == "pong":
                    t1, st = float(msg["client_time"]), float(msg["server_time"])
                    est.add_sample(t1, st, st, t4)
                    naive = st - (t1 + t4) / 2
                    last = [t1, st, t4]
                    exchanges.append(last)
            if t4 >= next_sample:
                samples.append([t4, est.offset_at(t4), naive])
                next_sample += sample_every_s * 1e6
    return {"samples": samples, "exchanges": exchanges, "joined_us": joined, "events": events}


if __name__ == "__main__":
    extra: dict[str, Any] = {}
    if len(sys.argv) > 4:
        extra = {
            "events_after_s": float(sys.argv[4]),
            "base": int(sys.argv[5]),
            "use_naive": sys.argv[6] == "naive",
        }
    result = run(sys.argv[1], sys.argv[2], float(sys.argv[3]), **extra)
    sys.stdout.write(json.dumps(result))
