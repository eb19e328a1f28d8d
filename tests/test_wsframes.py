"""The C unmasking of the transport's fast path equals RFC 6455 §5.3 done plainly."""

from __future__ import annotations

import random

import pytest
from websockets.client import ClientProtocol
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from bbx_net._wsframes import unmask_frame


def plain(payload: bytes, mask: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_unmask_equals_the_plain_xor_for_every_length_and_offset(rng: random.Random) -> None:
    for n in list(range(0, 70)) + [125, 126, 127, 1000, 65535, 65536, 70001]:
        for prefix in (0, 1, 3, 7):
            mask = rng.randbytes(4)
            payload = rng.randbytes(n)
            data = rng.randbytes(prefix) + mask + payload + rng.randbytes(3)
            start = prefix + 4
            got = unmask_frame(data, start, start + n)
            assert got == plain(payload, mask)
            assert unmask_frame(bytearray(data), start, start + n) == got
            assert unmask_frame(memoryview(data), start, start + n) == got


def test_unmask_equals_websockets_on_a_masked_client_frame(rng: random.Random) -> None:
    """The reference: websockets' sans-I/O ServerProtocol reads the same masked client
    frame to the same payload."""
    for n in (0, 5, 125, 126, 4000, 70000):
        payload = rng.randbytes(n)
        client = ClientProtocol(parse_uri("ws://127.0.0.1/"))
        server = ServerProtocol(max_size=None)
        server.receive_data(_handshake(client))
        request = server.events_received()[0]
        server.send_response(server.accept(request))
        client.receive_data(b"".join(server.data_to_send()))
        client.send_binary(payload)
        wire = b"".join(client.data_to_send())
        server.receive_data(wire)
        (frame,) = server.events_received()
        head = 2 + (2 if 126 <= n < 65536 else 8 if n >= 65536 else 0)
        assert unmask_frame(wire, head + 4, len(wire)) == frame.data == payload


def _handshake(client: ClientProtocol) -> bytes:
    client.send_request(client.connect())
    return b"".join(client.data_to_send())


@pytest.mark.parametrize(("start", "end"), [(3, 5), (4, 3), (4, 100), (-1, 2)])
def test_a_bad_range_is_refused(start: int, end: int) -> None:
    with pytest.raises(ValueError):
        unmask_frame(b"\x00" * 10, start, end)
