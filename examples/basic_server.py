"""The seed's "Basic Usage", in Python: make a ring, create a room, serve.

Run: python examples/basic_server.py   (then join the printed code from a phone)
"""

import asyncio

from bbx_net import net_buffer
from bbx_net.websocket import CommandChannel, ServerCommand, WsServer, WsServerConfig


async def main() -> None:
    producer, consumer = net_buffer(256)
    commands = CommandChannel(256)

    config = WsServerConfig(bind_addr="0.0.0.0:8080")

    server = WsServer(config, producer, commands)

    # Create a room for clients to join (answered before run(): nothing hangs here)
    create = ServerCommand.CreateRoom()
    await commands.send(create)
    room_code = await create
    print(f"Room code: {room_code}")

    # Run server (returns on a Shutdown command or Ctrl-C)
    await server.run()


if __name__ == "__main__":
    asyncio.run(main())
