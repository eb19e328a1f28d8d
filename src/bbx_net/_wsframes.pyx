# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The WebSocket transport's per-frame arithmetic in C (used by bbx_net.websocket.server).

Only what the asyncio fast path does for every client frame; parsing and every rule
stay in Python. Behaviour is RFC 6455 §5.3 exactly (tests compare it with a plain
implementation and with websockets on the wire).
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

__all__ = ["skip_frames", "unmask_frame", "unmask_run"]


cdef inline void _unmask(const uint8_t *src, uint8_t *dst, Py_ssize_t n) noexcept nogil:
    """dst[:n] = src[:n] XOR the 4-byte key at src-4, eight bytes at a time."""
    cdef uint32_t k32
    cdef uint64_t k64, w
    cdef Py_ssize_t i = 0
    memcpy(&k32, src - 4, 4)
    k64 = (<uint64_t>k32) | ((<uint64_t>k32) << 32)  # the key twice, in byte order
    while i + 8 <= n:
        memcpy(&w, src + i, 8)
        w ^= k64
        memcpy(dst + i, &w, 8)
        i += 8
    while i < n:
        dst[i] = src[i] ^ (src - 4)[i & 3]
        i += 1


cdef inline Py_ssize_t _text_frame_end(
    const uint8_t *buf, Py_ssize_t pos, Py_ssize_t n, Py_ssize_t max_size,
    Py_ssize_t *start,
) noexcept nogil:
    """The end of the plain text frame at buf[pos] (FIN, no RSV bit, opcode 1, masked,
    at most max_size, wholly in buf[:n]), its payload's start in *start; -1 if the
    frame there is anything else or not all there."""
    cdef uint64_t length
    cdef Py_ssize_t head = 2, room
    cdef int i
    if n - pos < 2 or buf[pos] != 0x81 or not (buf[pos + 1] & 0x80):
        return -1
    length = buf[pos + 1] & 0x7F
    if length == 126:
        if n - pos < 4:
            return -1
        length = (<uint64_t>buf[pos + 2] << 8) | buf[pos + 3]
        head = 4
    elif length == 127:
        if n - pos < 10:
            return -1
        length = 0
        for i in range(8):
            length = (length << 8) | buf[pos + 2 + i]
        head = 10
    room = n - pos - head - 4  # payload bytes there after the header and key
    if room < 0 or length > <uint64_t>max_size or length > <uint64_t>room:
        return -1
    start[0] = pos + head + 4
    return start[0] + <Py_ssize_t>length


def unmask_run(data, Py_ssize_t pos, Py_ssize_t max_size, Py_ssize_t limit):
    """The run of plain text frames from data[pos]: (their unmasked payloads, the
    position after the last).

    A frame is in the run when it is final, has no RSV bit, is a text frame (0x81),
    is masked, carries at most max_size bytes and is wholly in data; the run stops
    before the first frame that is not, and after `limit` frames. What it stops at is
    the caller's (websockets' parser, or the next read). One allocation per payload.
    """
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    cdef const uint8_t *buf = <const uint8_t *>view.buf
    cdef Py_ssize_t n = view.len, end, start = 0, count = 0
    payloads = []
    try:
        if pos < 0 or pos > n:
            raise ValueError(f"bad position {pos} of {n}")
        while count < limit:
            end = _text_frame_end(buf, pos, n, max_size, &start)
            if end < 0:
                break
            out = PyBytes_FromStringAndSize(NULL, end - start)
            _unmask(buf + start, <uint8_t *>PyBytes_AS_STRING(out), end - start)
            payloads.append(out)
            pos = end
            count += 1
        return payloads, pos
    finally:
        PyBuffer_Release(&view)


def skip_frames(data, Py_ssize_t pos, Py_ssize_t count, Py_ssize_t max_size):
    """The position after `count` frames of the run unmask_run(data, pos, ...) gave.

    Raises:
        ValueError: fewer than `count` frames of the run are there.
    """
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    cdef Py_ssize_t n = view.len, start = 0, i
    try:
        if pos < 0 or pos > n:
            raise ValueError(f"bad position {pos} of {n}")
        for i in range(count):
            pos = _text_frame_end(<const uint8_t *>view.buf, pos, n, max_size, &start)
            if pos < 0:
                raise ValueError(f"frame {i} of the run is not there")
        return pos
    finally:
        PyBuffer_Release(&view)


def unmask_frame(data, Py_ssize_t start, Py_ssize_t end):
    """The payload data[start:end] unmasked with the 4-byte key at data[start-4:start].

    `data` is any bytes-like object. One allocation (the result); the XOR runs eight
    bytes at a time.

    Raises:
        ValueError: the range is not inside data or leaves no room for the key.
    """
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    cdef Py_ssize_t n
    try:
        if start < 4 or end < start or end > view.len:
            raise ValueError(f"bad frame range {start}..{end} of {view.len}")
        n = end - start
        out = PyBytes_FromStringAndSize(NULL, n)
        _unmask(<const uint8_t *>view.buf + start, <uint8_t *>PyBytes_AS_STRING(out), n)
        return out
    finally:
        PyBuffer_Release(&view)
