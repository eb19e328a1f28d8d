"""A server for the C host in bench_host.py: shared segment NAME, ROOMS rooms.

`python bench/host_server.py NAME ROOMS OUT.json` writes {"port", "rooms": [[code,
key], ...]} once listening and serves until SIGTERM (then removes the segment).
"""

from __future__ import annotations

import json
import sys

from bbx_net import ClockSync, SharedSegment
from bbx_net.websocket import ParamSpec, RoomConfig, WsServer, WsServerConfig, run


async def main(name: str, n_rooms: int, out: str) -> None:
    segment = SharedSegment.create(name, 1 << 16, viz_floats=1)
    try:
        viz = segment.viz()
        server = WsServer(
            WsServerConfig(
                bind_addr=("127.0.0.1", 0),
                params=[
                    ParamSpec("gain", 0.5),
                    ParamSpec("freq", 440.0, 20.0, 2000.0),
                    ParamSpec("x"),
                ],
                room=RoomConfig(max_clients=400),
                max_rooms=max(1000, n_rooms),
            ),
            segment.producer(),
            clock=ClockSync(origin_ns=segment.clock_origin_ns),
            viz=None if viz is None else viz[1],
        )
        rooms = [await server.commands.create_room() for _ in range(n_rooms)]
        await server.start()
        with open(out, "w") as f:
            json.dump({"port": server.port, "rooms": [[c, server.room_key(c)] for c in rooms]}, f)
        await server.run()
    finally:
        segment.unlink()


if __name__ == "__main__":
    run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
