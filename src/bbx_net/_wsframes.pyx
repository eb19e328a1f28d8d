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

__all__ = ["unmask_frame"]


def unmask_frame(data, Py_ssize_t start, Py_ssize_t end):
    """The payload data[start:end] unmasked with the 4-byte key at data[start-4:start].

    `data` is any bytes-like object. One allocation (the result); the XOR runs eight
    bytes at a time.

    Raises:
        ValueError: the range is not inside data or leaves no room for the key.
    """
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    cdef const uint8_t *src
    cdef uint8_t *dst
    cdef uint32_t k32
    cdef uint64_t k64, w
    cdef Py_ssize_t n, i
    try:
        if start < 4 or end < start or end > view.len:
            raise ValueError(f"bad frame range {start}..{end} of {view.len}")
        n = end - start
        out = PyBytes_FromStringAndSize(NULL, n)
        dst = <uint8_t *>PyBytes_AS_STRING(out)
        src = <const uint8_t *>view.buf + start
        memcpy(&k32, src - 4, 4)
        k64 = (<uint64_t>k32) | ((<uint64_t>k32) << 32)  # the key twice, in byte order
        i = 0
        while i + 8 <= n:
            memcpy(&w, src + i, 8)
            w ^= k64
            memcpy(dst + i, &w, 8)
            i += 8
        while i < n:
            dst[i] = src[i] ^ (src - 4)[i & 3]
            i += 1
        return out
    finally:
        PyBuffer_Release(&view)
