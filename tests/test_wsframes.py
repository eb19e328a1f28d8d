"""The C unmasking and frame runs of the transport's fast path equal RFC 6455 §5.2–5.3
done plainly, and websockets reading the same frames."""

from __future__ import annotations

import random

import pytest
from websockets.client import ClientProtocol
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from bbx_net._wsframes import skip_frames, unmask_frame, unmask_run


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


def _wire_frame(rng: random.Random, b0: int, masked: bool, n: int, long_form: int = 0) -> bytes:
    """One frame as a client could put it on the wire, non-minimal lengths included."""
    size = 127 if n >= 65536 or long_form == 8 else 126 if n >= 126 or long_form == 2 else n
    head = bytes([b0, (0x80 if masked else 0) | size])
    if size == 126:
        head += n.to_bytes(2, "big")
    elif size == 127:
        head += n.to_bytes(8, "big")
    payload = rng.randbytes(n)
    if not masked:
        return head + payload
    mask = rng.randbytes(4)
    return head + mask + plain(payload, mask)


def reference_run(
    data: bytes, pos: int, max_size: int, limit: int
) -> tuple[list[bytes], int, list[int]]:
    """unmask_run written plainly from RFC 6455 §5.2: the run's payloads, the position
    after it, and each frame's end."""
    payloads, ends = [], []
    while len(payloads) < limit and len(data) - pos >= 2:
        b0, b1 = data[pos], data[pos + 1]
        if b0 != 0x81 or not b1 & 0x80:
            break
        length, head = b1 & 0x7F, 2
        if length == 126:
            if len(data) - pos < 4:
                break
            length, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        elif length == 127:
            if len(data) - pos < 10:
                break
            length, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
        end = pos + head + 4 + length
        if length > max_size or end > len(data):
            break
        payloads.append(plain(data[pos + head + 4 : end], data[pos + head : pos + head + 4]))
        ends.append(end)
        pos = end
    return payloads, pos, ends


def test_the_run_equals_the_plain_reading_over_random_streams(rng: random.Random) -> None:
    """Random streams of text, binary, fragmented, control, unmasked, reserved-bit and
    oversized frames, cut anywhere: the C run takes exactly the frames the plain
    reading takes, to the same payloads and position, and skip_frames finds each end."""
    kinds = [0x81] * 6 + [0x82, 0x01, 0x80, 0x89, 0x8A, 0x88, 0xC1, 0x91]
    for _ in range(400):
        stream = b"".join(
            _wire_frame(
                rng,
                rng.choice(kinds),
                rng.random() < 0.92,
                rng.choice([0, 1, 7, 8, 9, 125, 126, 127, 500, 65535, 65536, 70000]),
                rng.choice([0, 0, 0, 2, 8]),
            )
            for _ in range(rng.randint(0, 8))
        )
        cut = rng.randint(0, len(stream))
        data = rng.randbytes(rng.randint(0, 3)) + stream[:cut]
        for pos in (0, rng.randint(0, len(data))):
            max_size = rng.choice([0, 125, 1000, 2**20])
            limit = rng.choice([0, 1, 3, 512])
            want, want_pos, ends = reference_run(data, pos, max_size, limit)
            got, got_pos = unmask_run(data, pos, max_size, limit)
            assert (got, got_pos) == (want, want_pos)
            assert unmask_run(memoryview(data), pos, max_size, limit)[0] == want
            for count, end in enumerate(ends, 1):
                assert skip_frames(data, pos, count, max_size) == end


def test_the_run_equals_websockets_reading_the_same_client_frames(
    rng: random.Random,
) -> None:
    """The reference: websockets' ServerProtocol reads a stream of masked client text
    frames to the same messages unmask_run cuts from it."""
    texts = [rng.choice(["", "a", "é" * 70, "x" * 126, "y" * 70000]) for _ in range(12)]
    client = ClientProtocol(parse_uri("ws://127.0.0.1/"), max_size=None)
    server = ServerProtocol(max_size=None)
    server.receive_data(_handshake(client))
    request = server.events_received()[0]
    server.send_response(server.accept(request))
    client.receive_data(b"".join(server.data_to_send()))
    for text in texts:
        client.send_text(text.encode())
    wire = b"".join(client.data_to_send())
    server.receive_data(wire)
    frames = server.events_received()
    payloads, pos = unmask_run(wire, 0, 2**20, 512)
    assert pos == len(wire)
    assert payloads == [f.data for f in frames] == [t.encode() for t in texts]


def test_skip_frames_refuses_a_count_beyond_the_run() -> None:
    one = _wire_frame(random.Random(1), 0x81, True, 3)
    assert skip_frames(one, 0, 1, 100) == len(one)
    with pytest.raises(ValueError):
        skip_frames(one, 0, 2, 100)
    with pytest.raises(ValueError):
        unmask_run(one, len(one) + 1, 100, 1)
