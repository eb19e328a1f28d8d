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
from libc.stdlib cimport free, malloc

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
    bbx_ring_dropped,
    bbx_ring_footprint,
    bbx_ring_init,
    bbx_ring_len,
    bbx_ring_pending,
    bbx_ring_pop,
    bbx_ring_schedule_full,
    bbx_ring_try_push,
)

from bbx_net.errors import ProducerThreadError

__all__ = [
    "ABI_VERSION",
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
    """Owns the one allocation behind a ring; both ends keep it alive."""

    cdef void *mem
    cdef bbx_ring *ring

    def __dealloc__(self):
        free(self.mem)
        self.mem = NULL
        self.ring = NULL


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
    cdef Py_ssize_t sched = max(capacity, 1024) if schedule_capacity is None else schedule_capacity
    if capacity < 1 or <size_t>capacity > BBX_RING_MAX_CAPACITY:
        raise ValueError(f"capacity must be between 1 and {BBX_RING_MAX_CAPACITY}, got {capacity}")
    if sched < 0 or <size_t>sched > BBX_RING_MAX_CAPACITY:
        raise ValueError(
            f"schedule_capacity must be between 0 and {BBX_RING_MAX_CAPACITY}, got {sched}"
        )
    cdef size_t size = bbx_ring_footprint(capacity, sched)
    cdef _RingStorage storage = _RingStorage.__new__(_RingStorage)
    storage.mem = malloc(size)
    if storage.mem == NULL:
        raise MemoryError(f"cannot allocate {size} bytes for a ring of {capacity}")
    storage.ring = bbx_ring_init(storage.mem, size, capacity, sched)
    cdef NetBufferProducer producer = NetBufferProducer.__new__(NetBufferProducer)
    producer._storage = storage
    producer._ring = storage.ring
    cdef NetBufferConsumer consumer = NetBufferConsumer.__new__(NetBufferConsumer)
    consumer._storage = storage
    consumer._ring = storage.ring
    return producer, consumer


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
    allocate nothing per message; `try_pop` is the convenient form and allocates one
    Python object. C code can use the same ring through `ring_address` / `capsule`:
    keep this object alive for as long as C code holds the pointer.

    Use either the drain family (`try_pop`, `drain_into`) or `drain_block` on a ring:
    `drain_block` holds later events in its own storage, which the others do not see.
    """

    cdef _RingStorage _storage
    cdef bbx_ring *_ring

    def __init__(self):
        raise TypeError("use bbx_net.net_buffer(capacity) to create a ring")

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

        Consumer thread. Releases the GIL for the copy; allocates nothing per message.

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

        Consumer thread. Releases the GIL; allocates nothing.

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
