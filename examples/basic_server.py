"""The seed's "Basic Usage", in Python: make a ring, create a room, serve.

Run: python examples/basic_server.py [HOST:PORT]   (default 0.0.0.0:8080; then join the
printed code from a phone). Ctrl-C or SIGTERM closes every phone's page and exits 0.
"""

import sys

from bbx_net import net_buffer
from bbx_net.websocket import CommandChannel, ServerCommand, WsServer, WsServerConfig, run


async def main(bind: str) -> None:
    producer, consumer = net_buffer(256)
    commands = CommandChannel(256)

    config = WsServerConfig(bind_addr=bind)

    server = WsServer(config, producer, commands)

    # Create a room for clients to join (answered before run(): nothing hangs here)
    create = ServerCommand.CreateRoom()
    await commands.send(create)
    room_code = await create
    await server.start()
    print(f"Room code: {room_code} (port {server.port})", flush=True)

    # Serve until a Shutdown command, Ctrl-C or SIGTERM (phones get `closed`)
    await server.run()


if __name__ == "__main__":
    run(main(sys.argv[1] if len(sys.argv) > 1 else "0.0.0.0:8080"))
