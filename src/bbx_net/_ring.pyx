# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The SPSC ring that carries messages from the server's loop thread to the audio thread.

`net_buffer(capacity)` returns a `NetBufferProducer` (one thread: the server's event
loop) and a `NetBufferConsumer` (one thread: the audio callback). The operations are
the static-inline C functions of ``include/bbx_net/bbx_net.h``; this module only adds
the Python objects, argument checks and the ownership of the memory.
"""

from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid, PyCapsule_New
from cpython.pythread cimport PyThread_get_thread_ident
from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.errno cimport errno
from libc.stdlib cimport free, malloc
from posix.fcntl cimport O_CREAT, O_EXCL, O_RDWR
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap, shm_open, shm_unlink
from posix.stat cimport fstat, struct_stat
from posix.types cimport off_t
from posix.unistd cimport close, ftruncate, getpid

import os

from bbx_net._capi cimport (
    BBX_FLAG_SCHEDULED,
    BBX_NET_ABI_VERSION,
    BBX_PAYLOAD_COORDINATES,
    BBX_PAYLOAD_NONE,
    BBX_PAYLOAD_VALUE,
    BBX_PARAMETER_CHANGE,
    BBX_RING_CAPSULE_NAME,
    BBX_RING_MAX_CAPACITY,
    BBX_TRIGGER,
    bbx_event,
    bbx_hash_param_name,
    bbx_message,
    bbx_monotonic_ns,
    bbx_ring,
    bbx_ring_drain,
    bbx_ring_drain_block,
    bbx_rings_drain_block,
    bbx_ring_dropped,
    bbx_ring_footprint,
    bbx_ring_init,
    bbx_ring_len,
    bbx_ring_pending,
    bbx_ring_pop,
    bbx_ring_schedule_full,
    bbx_ring_try_push,
    BBX_SEGMENT_STARTING,
    BBX_SEGMENT_SERVING,
    BBX_SEGMENT_STOPPED,
    BBX_VIZ_MAX_CAPACITY,
    BBX_VIZ_MAX_FLOATS,
    bbx_segment,
    bbx_segment_attach,
    bbx_segment_footprint,
    bbx_segment_init,
    bbx_segment_ring,
    bbx_segment_server_pid,
    bbx_segment_set_server_pid,
    bbx_segment_set_state,
    bbx_segment_state,
    bbx_segment_viz,
    bbx_viz_dropped,
    bbx_viz_footprint,
    bbx_viz_frame,
    bbx_viz_init,
    bbx_viz_len,
    bbx_viz_pop,
    bbx_viz_pushed,
    bbx_viz_ring,
    bbx_viz_try_push,
)

from bbx_net.errors import ProducerThreadError

__all__ = [
    "ABI_VERSION",
    "BlockDrain",
    "MergedBlockDrain",
    "bind_blocks",
    "BoundVizWriter",
    "SharedSegment",
    "VizReader",
    "VizWriter",
    "unlink_segment",
    "viz_buffer",
    "MAX_CAPACITY",
    "RING_CAPSULE_NAME",
    "Message",
    "NetBufferConsumer",
    "NetBufferProducer",
    "hash_param_name",
    "net_buffer",
    "ring_address",
]

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL

cdef extern from "_thread.h" nogil:
    ctypedef struct bbx_thread:
        pass
    ctypedef struct bbx__thread_start:
        void (*fn)(void *) noexcept nogil
        void *arg
    int bbx_thread_create(bbx_thread *t, bbx__thread_start *start)
    int bbx_thread_join(bbx_thread t)
    void bbx_thread_sleep_us(unsigned us)

ABI_VERSION = BBX_NET_ABI_VERSION
MAX_CAPACITY = BBX_RING_MAX_CAPACITY
RING_CAPSULE_NAME = BBX_RING_CAPSULE_NAME.decode()

cdef uint32_t _MAX_TYPE = 5


# ---- helpers ----------------------------------------------------------------------

cpdef uint32_t hash_param_name(str name) except? 0:
    """32-bit FNV-1a hash of a parameter name's UTF-8 bytes.

    Args:
        name: the parameter name.

    Returns:
        The hash the audio thread compares (`bbx_message.param_hash`).

    Raises:
        TypeError: `name` is not a str.
    """
    cdef Py_ssize_t size
    cdef const char *data = PyUnicode_AsUTF8AndSize(name, &size)
    return bbx_hash_param_name(data, <size_t>size)


cdef inline uint32_t _param_hash(object param) except? 0:
    """A parameter given by name (hashed) or by its 32-bit hash."""
    if type(param) is str:
        return hash_param_name(<str>param)
    if isinstance(param, int) and not isinstance(param, bool):
        if 0 <= param <= 0xFFFFFFFF:
            return <uint32_t>param
        raise ValueError(f"a parameter hash must fit in 32 bits, got {param}")
    raise TypeError(f"a parameter is a str name or an int hash, not {type(param).__name__}")


cdef inline float _finite_f32(double value, str what) except? -1.0:
    cdef float narrowed = <float>value
    if not isfinite(narrowed):
        raise ValueError(f"{what} must be finite as a 32-bit float, got {value!r}")
    return narrowed


cdef str _describe(object arr):
    dtype = getattr(arr, "dtype", None)
    shape = getattr(arr, "shape", None)
    if dtype is None:
        return type(arr).__name__
    return f"array of dtype {dtype}, shape {shape}"


# ---- memory ownership -------------------------------------------------------------

cdef class _RingStorage:
    """Owns the one allocation behind a ring (or keeps the mapping that holds it
    alive); both ends keep it alive."""

    cdef void *mem  # malloc'd, or NULL when `owner` (a _Mapping) holds the memory
    cdef bbx_ring *ring
    cdef object owner

    def __dealloc__(self):
        free(self.mem)
        self.mem = NULL
        self.ring = NULL


cdef Py_ssize_t _schedule_size(Py_ssize_t capacity, schedule_capacity) except -1:
    """Checks a ring's sizes; returns the schedule capacity (None: max(capacity, 1024))."""
    cdef Py_ssize_t sched = max(capacity, 1024) if schedule_capacity is None else schedule_capacity
    if capacity < 1 or <size_t>capacity > BBX_RING_MAX_CAPACITY:
        raise ValueError(f"capacity must be between 1 and {BBX_RING_MAX_CAPACITY}, got {capacity}")
    if sched < 0 or <size_t>sched > BBX_RING_MAX_CAPACITY:
        raise ValueError(
            f"schedule_capacity must be between 0 and {BBX_RING_MAX_CAPACITY}, got {sched}"
        )
    return sched


cdef int _check_viz_sizes(Py_ssize_t capacity, Py_ssize_t frame_floats, Py_ssize_t least) except -1:
    if capacity < least or <size_t>capacity > BBX_VIZ_MAX_CAPACITY:
        raise ValueError(
            f"viz capacity must be between {least} and {BBX_VIZ_MAX_CAPACITY}, got {capacity}"
        )
    if frame_floats < 1 or <size_t>frame_floats > BBX_VIZ_MAX_FLOATS:
        raise ValueError(
            f"frame_floats must be between 1 and {BBX_VIZ_MAX_FLOATS}, got {frame_floats}"
        )
    return 0


cdef tuple _ring_ends(_RingStorage storage):
    cdef NetBufferProducer producer = NetBufferProducer.__new__(NetBufferProducer)
    producer._storage = storage
    producer._ring = storage.ring
    cdef NetBufferConsumer consumer = NetBufferConsumer.__new__(NetBufferConsumer)
    consumer._storage = storage
    consumer._ring = storage.ring
    return producer, consumer


def net_buffer(Py_ssize_t capacity, schedule_capacity=None):
    """Creates a ring and returns its two ends.

    Args:
        capacity: messages the ring holds (exactly; any value from 1 to MAX_CAPACITY).
        schedule_capacity: messages `drain_block` can hold for later blocks.
            None means max(capacity, 1024).

    Returns:
        (NetBufferProducer, NetBufferConsumer) sharing one preallocated ring.

    Raises:
        TypeError: a capacity is not an int.
        ValueError: a capacity is below 1 (0 for the schedule) or above MAX_CAPACITY.
        MemoryError: the allocation failed.
    """
    cdef Py_ssize_t sched = _schedule_size(capacity, schedule_capacity)
    cdef size_t size = bbx_ring_footprint(capacity, sched)
    cdef _RingStorage storage = _RingStorage.__new__(_RingStorage)
    storage.mem = malloc(size)
    if storage.mem == NULL:
        raise MemoryError(f"cannot allocate {size} bytes for a ring of {capacity}")
    storage.ring = bbx_ring_init(storage.mem, size, capacity, sched)
    return _ring_ends(storage)


# ---- the message as a Python object -------------------------------------------------

cdef class Message:
    """One message taken off the ring by `NetBufferConsumer.try_pop` (a copy)."""

    cdef readonly uint32_t type
    cdef readonly uint32_t param_hash
    cdef readonly uint32_t payload_kind
    cdef readonly float value
    cdef readonly float y
    cdef readonly uint32_t flags
    cdef readonly uint64_t node_id_hi
    cdef readonly uint64_t node_id_lo
    cdef readonly uint64_t timestamp_us

    def __init__(self):
        raise TypeError("Message objects come from NetBufferConsumer.try_pop")

    @property
    def x(self) -> float:
        """The x coordinate of a COORDINATES payload (the same slot as `value`)."""
        return self.value

    @property
    def is_scheduled(self) -> bool:
        """True when `timestamp_us` is a requested time (`at`), not the time of receipt."""
        return (self.flags & BBX_FLAG_SCHEDULED) != 0

    @property
    def node_id(self) -> int:
        """The sender's node id as one 128-bit integer."""
        return (<object>self.node_id_hi << 64) | <object>self.node_id_lo

    def _key(self):
        return (self.type, self.param_hash, self.payload_kind, self.value, self.y,
                self.flags, self.node_id_hi, self.node_id_lo, self.timestamp_us)

    def __eq__(self, other):
        if not isinstance(other, Message):
            return NotImplemented
        return self._key() == (<Message>other)._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return (
            f"Message(type={self.type}, param_hash={self.param_hash:#010x}, "
            f"payload_kind={self.payload_kind}, value={self.value!r}, y={self.y!r}, "
            f"flags={self.flags}, node_id={self.node_id:#034x}, "
            f"timestamp_us={self.timestamp_us})"
        )


cdef Message _message_from_c(const bbx_message *m):
    cdef Message out = Message.__new__(Message)
    out.type = m.type
    out.param_hash = m.param_hash
    out.payload_kind = m.payload_kind
    out.value = m.payload[0]
    out.y = m.payload[1]
    out.flags = m.flags
    out.node_id_hi = m.node_id_hi
    out.node_id_lo = m.node_id_lo
    out.timestamp_us = m.timestamp_us
    return out


# ---- producer ----------------------------------------------------------------------

cdef class NetBufferProducer:
    """The sending end of a ring. Single producer: the first thread that sends owns it.

    Every send copies one 48-byte message into preallocated storage and never blocks:
    when the ring is full it returns False and counts the drop.
    """

    cdef _RingStorage _storage
    cdef bbx_ring *_ring
    cdef unsigned long _owner  # thread ident of the producer; 0 until the first send

    def __init__(self):
        raise TypeError("use bbx_net.net_buffer(capacity) to create a ring")

    cdef inline int _check_thread(self) except -1:
        cdef unsigned long me = PyThread_get_thread_ident()
        if self._owner != me:
            if self._owner != 0:
                raise ProducerThreadError(
                    f"NetBufferProducer belongs to thread {self._owner}, "
                    f"used from thread {me}: the ring is single-producer"
                )
            self._owner = me
        return 0

    cdef inline bint _push(self, uint32_t message_type, uint32_t param_hash,
                           uint32_t payload_kind, float a, float b, uint64_t node_id_hi,
                           uint64_t node_id_lo, uint64_t timestamp_us, bint scheduled):
        cdef bbx_message m
        m.type = message_type
        m.param_hash = param_hash
        m.payload_kind = payload_kind
        m.payload[0] = a
        m.payload[1] = b
        m.flags = BBX_FLAG_SCHEDULED if scheduled else 0
        m.node_id_hi = node_id_hi
        m.node_id_lo = node_id_lo
        m.timestamp_us = timestamp_us
        return bbx_ring_try_push(self._ring, &m) != 0

    def try_send(self, uint32_t message_type, uint32_t param_hash, uint32_t payload_kind=0,
                 double value=0.0, double y=0.0, uint64_t node_id_hi=0,
                 uint64_t node_id_lo=0, uint64_t timestamp_us=0, bint scheduled=False):
        """Sends one message with every field given.

        Args:
            message_type: a MessageType (0..5).
            param_hash: the parameter's 32-bit hash (see hash_param_name).
            payload_kind: PayloadKind: 0 none, 1 value, 2 coordinates.
            value: the value, or x for coordinates (finite as float32).
            y: y for coordinates (finite as float32).
            node_id_hi: sender node id, high 64 bits.
            node_id_lo: sender node id, low 64 bits.
            timestamp_us: server-clock µs: time of receipt, or the due time if scheduled.
            scheduled: timestamp_us is a requested time (`at`) for drain_block.

        Returns:
            True if queued, False if the ring was full (counted in `dropped`).

        Raises:
            ValueError: a field is out of range or a number is not finite.
            ProducerThreadError: called from a second thread.
        """
        if message_type > _MAX_TYPE:
            raise ValueError(f"message_type must be 0..{_MAX_TYPE}, got {message_type}")
        if payload_kind > BBX_PAYLOAD_COORDINATES:
            raise ValueError(f"payload_kind must be 0..2, got {payload_kind}")
        cdef float a = _finite_f32(value, "value")
        cdef float b = _finite_f32(y, "y")
        self._check_thread()
        return self._push(message_type, param_hash, payload_kind, a, b, node_id_hi,
                          node_id_lo, timestamp_us, scheduled)

    def try_send_param(self, param, double value, uint64_t node_id_hi=0,
                       uint64_t node_id_lo=0, uint64_t timestamp_us=0,
                       bint scheduled=False):
        """Sends a ParameterChange.

        Args:
            param: the parameter's name (str) or its 32-bit hash (int).
            value: the new value (finite as float32).
            node_id_hi: sender node id, high 64 bits (0: the host itself).
            node_id_lo: sender node id, low 64 bits.
            timestamp_us: server-clock µs: time of receipt, or the due time if scheduled.
            scheduled: timestamp_us is a requested time (`at`).

        Returns:
            True if queued, False if the ring was full (counted in `dropped`).
        """
        cdef uint32_t h = _param_hash(param)
        cdef float a = _finite_f32(value, "value")
        self._check_thread()
        return self._push(BBX_PARAMETER_CHANGE, h, BBX_PAYLOAD_VALUE, a, 0.0, node_id_hi,
                          node_id_lo, timestamp_us, scheduled)

    def try_send_trigger(self, name, x=None, y=None, uint64_t node_id_hi=0,
                         uint64_t node_id_lo=0, uint64_t timestamp_us=0,
                         bint scheduled=False):
        """Sends a Trigger, with coordinates when both x and y are given.

        Args:
            name: the trigger's name (str) or its 32-bit hash (int).
            x: x coordinate, or None for a trigger without coordinates.
            y: y coordinate, or None (x and y come together).
            node_id_hi: sender node id, high 64 bits.
            node_id_lo: sender node id, low 64 bits.
            timestamp_us: server-clock µs: time of receipt, or the due time if scheduled.
            scheduled: timestamp_us is a requested time (`at`).

        Returns:
            True if queued, False if the ring was full (counted in `dropped`).
        """
        cdef uint32_t h = _param_hash(name)
        cdef float a = 0.0, b = 0.0
        cdef uint32_t kind = BBX_PAYLOAD_NONE
        if (x is None) != (y is None):
            raise ValueError("x and y come together: give both or neither")
        if x is not None:
            a = _finite_f32(x, "x")
            b = _finite_f32(y, "y")
            kind = BBX_PAYLOAD_COORDINATES
        self._check_thread()
        return self._push(BBX_TRIGGER, h, kind, a, b, node_id_hi, node_id_lo,
                          timestamp_us, scheduled)

    def rebind_thread(self):
        """Hands the producer to the calling thread.

        Call it only once the previous producer thread has stopped sending for good.
        """
        self._owner = PyThread_get_thread_ident()

    def __len__(self):
        return bbx_ring_len(self._ring)

    def is_full(self):
        """True when the next send would be refused."""
        return bbx_ring_len(self._ring) == self._ring.capacity

    def is_empty(self):
        """True when the consumer has taken everything sent."""
        return bbx_ring_len(self._ring) == 0

    @property
    def capacity(self) -> int:
        """Messages the ring holds."""
        return self._ring.capacity

    @property
    def schedule_capacity(self) -> int:
        """Messages the consumer's `drain_block` can hold for later blocks."""
        return self._ring.pending_capacity

    @property
    def dropped(self) -> int:
        """Sends refused because the ring was full, since creation."""
        return bbx_ring_dropped(self._ring)


# ---- consumer ----------------------------------------------------------------------

cdef class NetBufferConsumer:
    """The receiving end of a ring, for the audio thread.

    `drain_into` and `drain_block` copy into caller storage with the GIL released and
    allocate nothing per message (each call acquires the array's buffer, a few hundred
    bytes); `bind_block` gives a `BlockDrain` that allocates nothing at all per call.
    `try_pop` is the convenient form and allocates one Python object. Every call needs
    the GIL to enter and to return, as any Python call does; from C, the header's
    functions need neither. C code can use the same ring through `ring_address` / `capsule`:
    keep this object alive for as long as C code holds the pointer.

    Use either the drain family (`try_pop`, `drain_into`) or `drain_block` on a ring:
    `drain_block` holds later events in its own storage, which the others do not see.
    """

    cdef _RingStorage _storage
    cdef bbx_ring *_ring

    def __init__(self):
        raise TypeError("use bbx_net.net_buffer(capacity) to create a ring")

    def bind_block(self, out, uint32_t sample_rate, uint32_t block_size):
        """A `BlockDrain` bound to `out`: `drain(block_start_us)` then allocates nothing.

        For Python audio callbacks: binding checks and holds the array once, so each
        call is one C call with the GIL released around the drain (see BlockDrain).

        Raises:
            TypeError: `out` is not a writable C-contiguous 1-D EVENT_DTYPE array with
                at least one entry.
            ValueError: sample_rate or block_size is 0.
        """
        return BlockDrain(self, out, sample_rate, block_size)

    def try_pop(self):
        """Takes the oldest message. Consumer thread; allocates the returned object.

        Returns:
            A Message, or None when the ring is empty.
        """
        cdef bbx_message m
        cdef int got
        with nogil:
            got = bbx_ring_pop(self._ring, &m)
        return _message_from_c(&m) if got else None

    def drain_into(self, out):
        """Moves up to len(out) messages into `out`, oldest first.

        Consumer thread. Releases the GIL for the copy; allocates nothing per message
        (acquiring `out`'s buffer costs a small allocation per call).

        Args:
            out: a writable, C-contiguous 1-D numpy array of MESSAGE_DTYPE.

        Returns:
            The number of messages written to out[:n].

        Raises:
            TypeError: `out` has the wrong dtype, shape, contiguity or is read-only
                (nothing is consumed).
        """
        cdef bbx_message[::1] view
        try:
            view = out
        except (ValueError, TypeError, BufferError) as exc:
            raise TypeError(
                "drain_into needs a writable C-contiguous 1-D array of MESSAGE_DTYPE, "
                f"got {_describe(out)}"
            ) from exc
        cdef size_t n = 0
        if view.shape[0] > 0:
            with nogil:
                n = bbx_ring_drain(self._ring, &view[0], <size_t>view.shape[0])
        return n

    def drain_block(self, out, uint64_t block_start_us, uint32_t sample_rate,
                    uint32_t block_size):
        """Writes the events due in one audio block, ordered by sample offset.

        Consumer thread. Releases the GIL for the drain; acquiring `out`'s buffer
        allocates a little per call; `bind_block` avoids even that.

        Args:
            out: a writable, C-contiguous 1-D numpy array of EVENT_DTYPE.
            block_start_us: server-clock µs of the block's first frame.
            sample_rate: frames per second (Hz), at least 1.
            block_size: frames in the block, at least 1.

        Returns:
            The number of events written to out[:n]. Unscheduled and past events have
            sample_offset 0; events after the block stay held for later blocks. A return
            equal to len(out) means more may be due: call again for the same block.

        Raises:
            TypeError: `out` has the wrong dtype, shape, contiguity or is read-only.
            ValueError: sample_rate or block_size is 0.
        """
        if sample_rate == 0 or block_size == 0:
            raise ValueError(
                f"sample_rate and block_size must be positive, got {sample_rate}, {block_size}"
            )
        cdef bbx_event[::1] view
        try:
            view = out
        except (ValueError, TypeError, BufferError) as exc:
            raise TypeError(
                "drain_block needs a writable C-contiguous 1-D array of EVENT_DTYPE, "
                f"got {_describe(out)}"
            ) from exc
        cdef size_t n = 0
        if view.shape[0] > 0:
            with nogil:
                n = bbx_ring_drain_block(self._ring, &view[0], <size_t>view.shape[0],
                                         block_start_us, sample_rate, block_size)
        return n

    def __len__(self):
        return bbx_ring_len(self._ring)

    def is_empty(self):
        """True when nothing waits in the ring (held scheduled events not counted)."""
        return bbx_ring_len(self._ring) == 0

    @property
    def capacity(self) -> int:
        """Messages the ring holds."""
        return self._ring.capacity

    @property
    def schedule_capacity(self) -> int:
        """Events drain_block can hold for later blocks."""
        return self._ring.pending_capacity

    @property
    def pending(self) -> int:
        """Events drain_block holds for later blocks."""
        return bbx_ring_pending(self._ring)

    @property
    def schedule_full(self) -> int:
        """drain_block calls that left messages in the ring because the schedule was full."""
        return bbx_ring_schedule_full(self._ring)

    @property
    def dropped(self) -> int:
        """Sends the producer had refused because the ring was full."""
        return bbx_ring_dropped(self._ring)

    @property
    def ring_address(self) -> int:
        """The `bbx_ring *` as an integer, for ctypes/cffi hosts. Valid while self lives."""
        return <size_t>self._ring

    @property
    def capsule(self):
        """The `bbx_ring *` in a PyCapsule named RING_CAPSULE_NAME. Valid while self lives."""
        return PyCapsule_New(<void *>self._ring, BBX_RING_CAPSULE_NAME, NULL)


cdef bbx_event[::1] _bound_events(str what, out, uint32_t sample_rate,
                                  uint32_t block_size):
    """The checks of a bound drain (`what` names it in the errors): its array's view."""
    if sample_rate == 0 or block_size == 0:
        raise ValueError(
            f"sample_rate and block_size must be positive, got {sample_rate}, {block_size}"
        )
    cdef bbx_event[::1] view
    try:
        view = out
    except (ValueError, TypeError, BufferError) as exc:
        raise TypeError(
            f"{what} needs a writable C-contiguous 1-D array of EVENT_DTYPE, "
            f"got {_describe(out)}"
        ) from exc
    if view.shape[0] < 1:
        raise TypeError(f"{what} needs an array with at least one entry")
    return view


cdef class BlockDrain:
    """`drain_block` bound to one array, for Python audio callbacks: zero allocations.

    Made by `NetBufferConsumer.bind_block(out, sample_rate, block_size)`. Each
    `drain(block_start_us)` writes the events due in that block to `out[:n]` and
    returns n, allocating nothing: the array's buffer was acquired at binding, the
    arguments are C integers, and n is at most len(out), so with len(out) <= 256 the
    returned int is one of CPython's preallocated small ints (tests prove the call
    allocates nothing over 10,000 calls).

    What needs the GIL: entering the call (as for any Python call; the GIL is taken at
    the top of a Python callback anyway) and returning. The drain itself runs with the
    GIL released, so the server's thread can run meanwhile. In-process, a Python
    callback still waits for the GIL at entry while the server's thread holds it: see
    `bbx_net.realtime.tune_python_host` and the server in its own process
    (`bbx_net.serve_process`).
    """

    cdef NetBufferConsumer _consumer
    cdef object _out
    cdef bbx_event[::1] _view
    cdef uint32_t _rate
    cdef uint32_t _block

    def __init__(self, NetBufferConsumer consumer, out, uint32_t sample_rate,
                 uint32_t block_size):
        self._view = _bound_events("bind_block", out, sample_rate, block_size)
        self._consumer = consumer
        self._out = out
        self._rate = sample_rate
        self._block = block_size

    def drain(self, uint64_t block_start_us, uint32_t frames=0):
        """Writes the events due in the block starting at `block_start_us` (server-clock
        µs) to out[:n] and returns n; `frames` overrides the bound block size (0 keeps
        it). A return equal to len(out) means more may be due: call again."""
        cdef size_t n
        cdef uint32_t size = frames if frames else self._block
        with nogil:
            n = bbx_ring_drain_block(self._consumer._ring, &self._view[0],
                                     <size_t>self._view.shape[0], block_start_us,
                                     self._rate, size)
        return n

    @property
    def out(self):
        """The bound array."""
        return self._out


def bind_blocks(consumers, out, uint32_t sample_rate, uint32_t block_size):
    """A `MergedBlockDrain`: one drain over several rings, bound to `out`.

    For a host fed by several server processes (`bbx_net.serve_pool`): each call
    writes the events due in the block from every ring, merged by sample offset, and
    allocates nothing.

    Raises:
        TypeError: a consumer is not a NetBufferConsumer, there are none, or `out` is
            not a writable C-contiguous 1-D EVENT_DTYPE array with at least one entry.
        ValueError: sample_rate or block_size is 0.
    """
    return MergedBlockDrain(consumers, out, sample_rate, block_size)


cdef class MergedBlockDrain:
    """`bind_block` over several rings (C: `bbx_rings_drain_block`): zero allocations.

    Each `drain(block_start_us)` writes the events due in that block from every ring
    to `out[:n]`, ordered by sample offset, and returns n. Among equal offsets the
    rings take turns (each in its own order), so one busy ring cannot starve the
    others when `out` is small. The drain runs with the GIL released and allocates nothing
    (the ring pointers are gathered at binding). A return equal to len(out) means
    more may be due: call again for the same block.

    Use no other drain on these rings meanwhile: as with `drain_block`, each ring
    holds later events in its own schedule.
    """

    cdef tuple _consumers
    cdef bbx_ring **_rings
    cdef size_t _n
    cdef object _out
    cdef bbx_event[::1] _view
    cdef uint32_t _rate
    cdef uint32_t _block

    def __cinit__(self):
        self._rings = NULL

    def __init__(self, consumers, out, uint32_t sample_rate, uint32_t block_size):
        self._view = _bound_events("bind_blocks", out, sample_rate, block_size)
        consumers = tuple(consumers)
        if not consumers:
            raise TypeError("bind_blocks needs at least one NetBufferConsumer")
        for c in consumers:
            if not isinstance(c, NetBufferConsumer):
                raise TypeError(f"bind_blocks needs NetBufferConsumers, got {_describe(c)}")
        self._rings = <bbx_ring **>malloc(len(consumers) * sizeof(bbx_ring *))
        if self._rings == NULL:
            raise MemoryError()
        cdef NetBufferConsumer consumer
        for i, c in enumerate(consumers):
            consumer = c
            self._rings[i] = consumer._ring
        self._n = len(consumers)
        self._consumers = consumers
        self._out = out
        self._rate = sample_rate
        self._block = block_size

    def __dealloc__(self):
        free(self._rings)
        self._rings = NULL

    def drain(self, uint64_t block_start_us, uint32_t frames=0):
        """Writes the events due in the block starting at `block_start_us` (server-clock
        µs) from every ring to out[:n] and returns n; `frames` overrides the bound
        block size (0 keeps it)."""
        cdef size_t n
        cdef uint32_t size = frames if frames else self._block
        with nogil:
            n = bbx_rings_drain_block(<bbx_ring *const *>self._rings, self._n, &self._view[0],
                                      <size_t>self._view.shape[0], block_start_us,
                                      self._rate, size)
        return n

    @property
    def out(self):
        """The bound array."""
        return self._out

    @property
    def consumers(self):
        """The rings drained, in their tie-breaking order."""
        return self._consumers


# ---- the way back: visualization frames ---------------------------------------------

cdef class _VizStorage:
    cdef void *mem  # malloc'd, or NULL when `owner` holds the memory
    cdef bbx_viz_ring *viz
    cdef object owner

    def __dealloc__(self):
        free(self.mem)
        self.mem = NULL
        self.viz = NULL


def viz_buffer(Py_ssize_t capacity=64, Py_ssize_t frame_floats=256):
    """Creates a visualization ring (audio thread -> server) and returns its two ends.

    Args:
        capacity: frames the ring holds (1..65536). A full ring drops new frames.
        frame_floats: floats per frame (1..4096), for example meter channels or
            spectrum bins.

    Returns:
        (VizWriter, VizReader): give the reader to `WsServer(viz=...)`, write from
        the audio callback (C: `bbx_viz_try_push` on `writer.address`).
    """
    _check_viz_sizes(capacity, frame_floats, 1)
    cdef size_t size = bbx_viz_footprint(capacity, <uint32_t>frame_floats)
    cdef _VizStorage storage = _VizStorage.__new__(_VizStorage)
    storage.mem = malloc(size)
    if storage.mem == NULL:
        raise MemoryError(f"cannot allocate {size} bytes for a visualization ring")
    storage.viz = bbx_viz_init(storage.mem, size, capacity, <uint32_t>frame_floats)
    return _viz_ends(storage)


cdef tuple _viz_ends(_VizStorage storage):
    cdef VizWriter writer = VizWriter.__new__(VizWriter)
    writer._storage = storage
    writer._viz = storage.viz
    cdef VizReader reader = VizReader.__new__(VizReader)
    reader._storage = storage
    reader._viz = storage.viz
    return writer, reader


cdef class VizWriter:
    """The audio thread's end of a visualization ring (single producer).

    `try_push(stream, data)` is the convenient form (it acquires `data`'s buffer, which
    allocates a little); `bind(array)` gives a `BoundVizWriter` whose `push` allocates
    nothing. From C: `bbx_viz_try_push((bbx_viz_ring *)writer.address, ...)`.
    """

    cdef _VizStorage _storage
    cdef bbx_viz_ring *_viz

    def __init__(self):
        raise TypeError("use bbx_net.viz_buffer() or a SharedSegment to create one")

    def try_push(self, uint32_t stream, data, uint64_t timestamp_us=0):
        """Copies `data` (1-D float32, at most frame_floats) as one frame of `stream`.

        Returns False when the ring is full (the frame is dropped and counted).

        Raises:
            TypeError: data is not a C-contiguous 1-D float32 buffer.
            ValueError: data is longer than frame_floats.
        """
        cdef const float[::1] view
        try:
            view = data
        except (ValueError, TypeError, BufferError) as exc:
            raise TypeError(f"try_push needs a C-contiguous 1-D float32 array, got {_describe(data)}") from exc
        if <size_t>view.shape[0] > self._viz.frame_floats:
            raise ValueError(f"a frame holds {self._viz.frame_floats} floats, got {view.shape[0]}")
        cdef int got
        with nogil:
            got = bbx_viz_try_push(self._viz, stream, &view[0] if view.shape[0] else NULL,
                                   <uint32_t>view.shape[0], timestamp_us)
        return got == 1

    def bind(self, data):
        """A BoundVizWriter that pushes (a prefix of) `data` without allocating."""
        return BoundVizWriter(self, data)

    @property
    def frame_floats(self) -> int:
        return self._viz.frame_floats

    @property
    def capacity(self) -> int:
        return self._viz.capacity

    @property
    def dropped(self) -> int:
        """Frames refused because the ring was full."""
        return bbx_viz_dropped(self._viz)

    @property
    def pushed(self) -> int:
        """Frames accepted."""
        return bbx_viz_pushed(self._viz)

    @property
    def address(self) -> int:
        """The `bbx_viz_ring *` as an integer, for C hosts. Valid while self lives."""
        return <size_t>self._viz


cdef class BoundVizWriter:
    """`VizWriter.try_push` bound to one float32 array: `push` allocates nothing.

    What needs the GIL: entering and returning from `push` (the copy runs without it).
    """

    cdef VizWriter _writer
    cdef object _data
    cdef const float[::1] _view

    def __init__(self, VizWriter writer, data):
        try:
            self._view = data
        except (ValueError, TypeError, BufferError) as exc:
            raise TypeError(f"bind needs a C-contiguous 1-D float32 array, got {_describe(data)}") from exc
        if self._view.shape[0] < 1:
            raise TypeError("bind needs an array with at least one float")
        self._writer = writer
        self._data = data

    def push(self, uint32_t stream, uint64_t timestamp_us=0, Py_ssize_t count=-1):
        """Pushes the array's first `count` floats (-1: all, capped at frame_floats) as
        one frame of `stream`. Returns False when the ring is full."""
        cdef bbx_viz_ring *v = self._writer._viz
        cdef Py_ssize_t n = self._view.shape[0] if count < 0 else count
        if n > self._view.shape[0]:
            n = self._view.shape[0]
        if <size_t>n > v.frame_floats:
            n = v.frame_floats
        cdef int got
        with nogil:
            got = bbx_viz_try_push(v, stream, &self._view[0], <uint32_t>n, timestamp_us)
        return got == 1


cdef class VizReader:
    """The server's end of a visualization ring (single consumer)."""

    cdef _VizStorage _storage
    cdef bbx_viz_ring *_viz

    def __init__(self):
        raise TypeError("use bbx_net.viz_buffer() or a SharedSegment to create one")

    def pop(self):
        """The oldest frame as (stream, timestamp_us, list of floats), or None."""
        cdef bbx_viz_frame head
        cdef float[::1] buf
        import numpy as np
        arr = np.empty(self._viz.frame_floats, dtype=np.float32)
        buf = arr
        cdef int got
        with nogil:
            got = bbx_viz_pop(self._viz, &head, &buf[0], self._viz.frame_floats)
        if not got:
            return None
        return head.stream, head.timestamp_us, arr[: head.count].tolist()

    def newest(self, Py_ssize_t limit=4096):
        """Takes every waiting frame (at most `limit`) and returns the newest of each
        stream: {stream: (timestamp_us, [floats])}."""
        out = {}
        cdef Py_ssize_t i
        for i in range(limit):
            frame = self.pop()
            if frame is None:
                break
            out[frame[0]] = (frame[1], frame[2])
        return out

    def __len__(self):
        return bbx_viz_len(self._viz)

    @property
    def frame_floats(self) -> int:
        return self._viz.frame_floats

    @property
    def capacity(self) -> int:
        return self._viz.capacity

    @property
    def dropped(self) -> int:
        return bbx_viz_dropped(self._viz)

    @property
    def pushed(self) -> int:
        return bbx_viz_pushed(self._viz)


# ---- shared-memory segments (a server in another process) ---------------------------

cdef class _Mapping:
    """One mmap of a segment; unmapped when the last ring end using it goes."""

    cdef void *base
    cdef size_t size

    def __dealloc__(self):
        if self.base != NULL:
            munmap(self.base, self.size)
            self.base = NULL


cdef bytes _shm_name(name):
    if not isinstance(name, str) or not name.startswith("/") or "/" in name[1:] \
            or not 2 <= len(name) <= 200:
        raise ValueError(f"a segment name is '/' and 1-199 characters without '/': {name!r}")
    return name.encode()


STATE_STARTING = BBX_SEGMENT_STARTING
STATE_SERVING = BBX_SEGMENT_SERVING
STATE_STOPPED = BBX_SEGMENT_STOPPED


cdef class SharedSegment:
    """The rings of a server in another process, in POSIX shared memory.

    One segment holds the message ring (server -> audio), an optional visualization
    ring (audio -> server) and the server clock's origin, at offsets (no pointers), so
    both processes map it at any address. C hosts attach with `bbx_shm_attach(name)`
    from <bbx_net/bbx_shm.h>.

    `create(...)` lays a new one out (the name must not exist); `attach(name)` maps an
    existing one. `unlink()` removes the name: mappings stay valid, and the memory is
    freed when the last process unmaps it. Ring ends keep the mapping alive.
    """

    cdef _Mapping _map
    cdef bbx_segment *_seg
    cdef readonly str name

    def __init__(self):
        raise TypeError("use SharedSegment.create() or SharedSegment.attach(name)")

    @staticmethod
    def create(str name, Py_ssize_t capacity=4096, schedule_capacity=None,
               Py_ssize_t viz_capacity=64, Py_ssize_t viz_floats=256, clock_origin_ns=None):
        """Creates segment `name` ("/something") with a ring of `capacity` messages.

        Args:
            schedule_capacity: as for net_buffer (None: max(capacity, 1024)).
            viz_capacity: frames of the visualization ring (0: none).
            viz_floats: floats per visualization frame.
            clock_origin_ns: the server clock's origin (a bbx_monotonic_ns reading;
                None: now).

        Raises:
            FileExistsError: the name exists.
            ValueError: a size is out of range.
        """
        cdef bytes bname = _shm_name(name)
        cdef Py_ssize_t sched = _schedule_size(capacity, schedule_capacity)
        _check_viz_sizes(viz_capacity, viz_floats, 0)
        cdef size_t size = bbx_segment_footprint(capacity, sched, viz_capacity,
                                                 <uint32_t>viz_floats)
        cdef int64_t origin = bbx_monotonic_ns() if clock_origin_ns is None else clock_origin_ns
        cdef int fd = shm_open(bname, O_CREAT | O_EXCL | O_RDWR, 0o600)
        if fd < 0:
            _raise_errno(name)
        cdef void *base = MAP_FAILED
        cdef int err = 0
        if ftruncate(fd, <off_t>size) != 0:
            err = errno
        else:
            base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
            if base == MAP_FAILED:
                err = errno
        close(fd)
        if base == MAP_FAILED:
            shm_unlink(bname)
            _raise_errno(name, err)
        cdef _Mapping m = _Mapping.__new__(_Mapping)
        m.base = base
        m.size = size
        cdef SharedSegment seg = SharedSegment.__new__(SharedSegment)
        seg._map = m
        seg.name = name
        seg._seg = bbx_segment_init(base, size, capacity, sched, viz_capacity,
                                    <uint32_t>viz_floats, origin, getpid())
        if seg._seg == NULL:  # cannot happen after the checks above
            shm_unlink(bname)
            raise ValueError("segment layout failed")
        return seg

    @staticmethod
    def attach(str name):
        """Maps the existing segment `name`.

        Raises:
            FileNotFoundError: no such segment.
            ValueError: it is not a bbx_net segment of this ABI.
        """
        cdef bytes bname = _shm_name(name)
        cdef int fd = shm_open(bname, O_RDWR, 0)
        if fd < 0:
            _raise_errno(name)
        cdef struct_stat st
        if fstat(fd, &st) != 0:
            close(fd)
            _raise_errno(name)
        cdef size_t size = <size_t>st.st_size
        cdef void *base = MAP_FAILED
        if size > 0:
            base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        close(fd)
        if size == 0:
            raise ValueError(f"{name} is empty: not a bbx_net segment (or still being made)")
        if base == MAP_FAILED:
            _raise_errno(name)
        cdef _Mapping m = _Mapping.__new__(_Mapping)
        m.base = base
        m.size = size
        cdef bbx_segment *s = bbx_segment_attach(base, size)
        if s == NULL:
            raise ValueError(f"{name} is not a bbx_net segment of ABI {BBX_NET_ABI_VERSION}")
        cdef SharedSegment seg = SharedSegment.__new__(SharedSegment)
        seg._map = m
        seg._seg = s
        seg.name = name
        return seg

    def unlink(self):
        """Removes the segment's name (mappings stay). Returns False if it was gone."""
        return shm_unlink(self.name.encode()) == 0

    cdef tuple _ends(self):
        cdef _RingStorage storage = _RingStorage.__new__(_RingStorage)
        storage.mem = NULL
        storage.ring = bbx_segment_ring(self._seg)
        storage.owner = self._map
        return _ring_ends(storage)

    def producer(self):
        """The message ring's producing end (the server's side)."""
        return self._ends()[0]

    def consumer(self):
        """The message ring's consuming end (the audio side)."""
        return self._ends()[1]

    def viz(self):
        """(VizWriter, VizReader) of the visualization ring, or None if it has none."""
        cdef bbx_viz_ring *v = bbx_segment_viz(self._seg)
        if v == NULL:
            return None
        cdef _VizStorage storage = _VizStorage.__new__(_VizStorage)
        storage.mem = NULL
        storage.viz = v
        storage.owner = self._map
        return _viz_ends(storage)

    @property
    def size(self) -> int:
        return self._seg.size

    @property
    def clock_origin_ns(self) -> int:
        """The server clock's origin: `ClockSync(origin_ns=...)` reads the same clock."""
        return self._seg.clock_origin_ns

    @property
    def owner_pid(self) -> int:
        """The process that created the segment."""
        return self._seg.owner_pid

    @property
    def server_pid(self) -> int:
        """The serving process (0 until one attached)."""
        return bbx_segment_server_pid(self._seg)

    @server_pid.setter
    def server_pid(self, int64_t pid):
        bbx_segment_set_server_pid(self._seg, pid)

    @property
    def state(self) -> int:
        """STATE_STARTING, STATE_SERVING or STATE_STOPPED."""
        return bbx_segment_state(self._seg)

    @state.setter
    def state(self, uint32_t value):
        if value > BBX_SEGMENT_STOPPED:
            raise ValueError(f"unknown segment state {value}")
        bbx_segment_set_state(self._seg, value)


cdef int _raise_errno(str name, int e=0) except -1:
    if e == 0:
        e = errno
    raise OSError(e, os.strerror(e), name)


def unlink_segment(str name):
    """Removes segment `name` if it exists; returns whether it did."""
    return shm_unlink(_shm_name(name)) == 0


cdef bbx_ring *_ring_of(object ring) except NULL:
    """The ring behind a NetBufferConsumer or a capsule from one."""
    cdef bbx_ring *r
    if isinstance(ring, NetBufferConsumer):
        return (<NetBufferConsumer>ring)._ring
    if PyCapsule_IsValid(ring, BBX_RING_CAPSULE_NAME):
        r = <bbx_ring *>PyCapsule_GetPointer(ring, BBX_RING_CAPSULE_NAME)
        if r.abi_version != BBX_NET_ABI_VERSION:
            raise ValueError(f"ring ABI {r.abi_version}, expected {BBX_NET_ABI_VERSION}")
        return r
    raise TypeError(
        f"expected a NetBufferConsumer or a capsule named {RING_CAPSULE_NAME!r}, "
        f"got {type(ring).__name__}"
    )


def ring_address(ring) -> int:
    """The `bbx_ring *` behind a NetBufferConsumer or its capsule, as an integer.

    Raises:
        TypeError: `ring` is neither (a foreign capsule included).
    """
    return <size_t>_ring_of(ring)


# ---- native self-test: a consumer that never holds the GIL --------------------------

cdef struct _seq_check:
    bbx_ring *ring
    uint64_t total
    uint64_t received
    uint64_t errors
    uint64_t first_bad
    int64_t deadline_ns
    int timed_out
    int check          # 0: only count (for throughput benches)
    unsigned sleep_us  # 0: busy-poll; else sleep between drains, like an audio callback


cdef inline bint _seq_ok(const bbx_message *m, uint64_t seq) noexcept nogil:
    return (m.timestamp_us == seq and m.node_id_lo == seq and
            m.param_hash == <uint32_t>seq and m.type == BBX_PARAMETER_CHANGE)


cdef void _seq_check_run(void *arg) noexcept nogil:
    """Drains sequence-numbered messages and counts any out of order or lost."""
    cdef _seq_check *s = <_seq_check *>arg
    cdef bbx_message buf[64]
    cdef size_t n, i
    cdef uint64_t seq
    cdef unsigned int spins = 0
    while s.received < s.total:
        n = bbx_ring_drain(s.ring, buf, 64)
        if n == 0:
            spins += 1
            if s.sleep_us:
                bbx_thread_sleep_us(s.sleep_us)
            if (s.sleep_us or (spins & 1023) == 0) and bbx_monotonic_ns() > s.deadline_ns:
                s.timed_out = 1
                break
            continue
        if s.check:
            for i in range(n):
                seq = s.received + i
                if not _seq_ok(&buf[i], seq):
                    if s.errors == 0:
                        s.first_bad = seq
                    s.errors += 1
        s.received += n


cdef class _SequenceChecker:
    """A native thread that drains `total` messages and checks message i carries
    sequence number i (in timestamp_us, node_id_lo and param_hash). Test and bench
    support: `check=False` only counts; `sleep_us` > 0 makes it sleep whenever the ring
    is empty, then drain everything, as an audio callback would."""

    cdef _seq_check state
    cdef bbx__thread_start start_info
    cdef bbx_thread thread
    cdef bint running
    cdef object keepalive

    def __cinit__(self, ring, uint64_t total, double timeout_s, bint check=True,
                  unsigned sleep_us=0):
        self.state.ring = _ring_of(ring)
        self.state.check = check
        self.state.sleep_us = sleep_us
        self.keepalive = ring
        self.state.total = total
        self.state.deadline_ns = bbx_monotonic_ns() + <int64_t>(timeout_s * 1e9)
        self.start_info.fn = _seq_check_run
        self.start_info.arg = &self.state
        if bbx_thread_create(&self.thread, &self.start_info) != 0:
            raise OSError("cannot start the native consumer thread")
        self.running = True

    def join(self):
        """Waits for the thread (bounded by its timeout) and returns its findings."""
        if self.running:
            with nogil:
                bbx_thread_join(self.thread)
            self.running = False
        return {
            "received": self.state.received,
            "errors": self.state.errors,
            "first_bad": self.state.first_bad if self.state.errors else None,
            "timed_out": bool(self.state.timed_out),
        }

    def __dealloc__(self):
        if self.running:
            with nogil:
                bbx_thread_join(self.thread)


def _drain_count_nogil(NetBufferConsumer consumer, uint64_t total, double timeout_s):
    """Drains with the GIL released until `total` messages arrived or the timeout.

    Test support: messages sent by a Python thread *during* this call can only arrive
    if the GIL is really released here.

    Returns:
        (received, in_order): the count and whether message i carried sequence i.
    """
    cdef _seq_check s
    s.ring = consumer._ring
    s.total = total
    s.received = 0
    s.errors = 0
    s.first_bad = 0
    s.timed_out = 0
    s.check = 1
    s.sleep_us = 0
    s.deadline_ns = bbx_monotonic_ns() + <int64_t>(timeout_s * 1e9)
    with nogil:
        _seq_check_run(&s)
    return s.received, s.errors == 0


def _c_layout():
    """sizeof/offsetof of the C structs as compiled into this extension (for tests)."""
    cdef bbx_message m
    cdef bbx_event e
    cdef char *base = <char *>&m
    cdef char *ebase = <char *>&e
    return {
        "message_size": sizeof(bbx_message),
        "message": {
            "type": <char *>&m.type - base,
            "param_hash": <char *>&m.param_hash - base,
            "payload_kind": <char *>&m.payload_kind - base,
            "payload": <char *>&m.payload[0] - base,
            "flags": <char *>&m.flags - base,
            "node_id_hi": <char *>&m.node_id_hi - base,
            "node_id_lo": <char *>&m.node_id_lo - base,
            "timestamp_us": <char *>&m.timestamp_us - base,
        },
        "event_size": sizeof(bbx_event),
        "sample_offset": <char *>&e.sample_offset - ebase,
    }
