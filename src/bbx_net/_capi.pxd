# cython: language_level=3
"""Cython declarations of the C API in include/bbx_net/bbx_net.h (extern, nogil)."""

from libc.stdint cimport int64_t, uint32_t, uint64_t


cdef extern from "bbx_net/bbx_net.h" nogil:
    enum:
        BBX_NET_ABI_VERSION
        BBX_FLAG_SCHEDULED
        BBX_PAYLOAD_NONE
        BBX_PAYLOAD_VALUE
        BBX_PAYLOAD_COORDINATES
        BBX_PARAMETER_CHANGE
        BBX_TRIGGER
    const char *BBX_RING_CAPSULE_NAME
    const char *BBX_CLOCK_CAPSULE_NAME
    size_t BBX_RING_MAX_CAPACITY

    ctypedef struct bbx_message:
        uint32_t type
        uint32_t param_hash
        uint32_t payload_kind
        float payload[2]
        uint32_t flags
        uint64_t node_id_hi
        uint64_t node_id_lo
        uint64_t timestamp_us

    ctypedef struct bbx_event:
        bbx_message message
        uint32_t sample_offset
        uint32_t reserved

    ctypedef struct bbx_ring:
        uint64_t capacity
        uint64_t pending_capacity
        uint32_t abi_version

    ctypedef struct bbx_viz_frame:
        uint32_t stream
        uint32_t count
        uint64_t timestamp_us

    ctypedef struct bbx_viz_ring:
        uint32_t abi_version
        uint32_t frame_floats
        uint64_t capacity

    ctypedef struct bbx_segment:
        uint32_t abi_version
        uint64_t size
        int64_t clock_origin_ns
        int64_t owner_pid

    ctypedef struct bbx_clock:
        int64_t origin_ns

    uint32_t bbx_hash_param_name(const char *name, size_t length)

    size_t bbx_ring_footprint(size_t capacity, size_t pending_capacity)
    bbx_ring *bbx_ring_init(void *mem, size_t mem_size, size_t capacity,
                            size_t pending_capacity)
    int bbx_ring_try_push(bbx_ring *r, const bbx_message *m)
    int bbx_ring_pop(bbx_ring *r, bbx_message *out)
    size_t bbx_ring_drain(bbx_ring *r, bbx_message *out, size_t max_out)
    size_t bbx_ring_len(bbx_ring *r)
    uint64_t bbx_ring_dropped(bbx_ring *r)
    size_t bbx_ring_pending(bbx_ring *r)
    uint64_t bbx_ring_schedule_full(bbx_ring *r)
    size_t bbx_ring_drain_block(bbx_ring *r, bbx_event *out, size_t max_out,
                                uint64_t block_start_us, uint32_t sample_rate,
                                uint32_t block_size)
    size_t bbx_rings_drain_block(bbx_ring *const *rings, size_t n_rings, bbx_event *out,
                                 size_t max_out, uint64_t block_start_us,
                                 uint32_t sample_rate, uint32_t block_size)

    bbx_ring *bbx_ring_attach(void *mem, size_t mem_size)

    size_t BBX_VIZ_MAX_FLOATS
    size_t BBX_VIZ_MAX_CAPACITY
    size_t bbx_viz_footprint(size_t capacity, uint32_t frame_floats)
    bbx_viz_ring *bbx_viz_init(void *mem, size_t mem_size, size_t capacity,
                               uint32_t frame_floats)
    int bbx_viz_try_push(bbx_viz_ring *v, uint32_t stream, const float *data,
                         uint32_t count, uint64_t timestamp_us)
    int bbx_viz_pop(bbx_viz_ring *v, bbx_viz_frame *head, float *data, uint32_t max_floats)
    size_t bbx_viz_len(bbx_viz_ring *v)
    uint64_t bbx_viz_dropped(bbx_viz_ring *v)
    uint64_t bbx_viz_pushed(bbx_viz_ring *v)

    enum:
        BBX_SEGMENT_STARTING
        BBX_SEGMENT_SERVING
        BBX_SEGMENT_STOPPED
    size_t bbx_segment_footprint(size_t capacity, size_t pending_capacity,
                                 size_t viz_capacity, uint32_t viz_floats)
    bbx_segment *bbx_segment_init(void *mem, size_t mem_size, size_t capacity,
                                  size_t pending_capacity, size_t viz_capacity,
                                  uint32_t viz_floats, int64_t clock_origin_ns,
                                  int64_t owner_pid)
    bbx_segment *bbx_segment_attach(void *mem, size_t mem_size)
    bbx_ring *bbx_segment_ring(bbx_segment *s)
    bbx_viz_ring *bbx_segment_viz(bbx_segment *s)
    uint32_t bbx_segment_state(bbx_segment *s)
    void bbx_segment_set_state(bbx_segment *s, uint32_t state)
    int64_t bbx_segment_server_pid(bbx_segment *s)
    void bbx_segment_set_server_pid(bbx_segment *s, int64_t pid)

    int64_t bbx_to_sample_offset(uint64_t timestamp_us, uint64_t block_start_us,
                                 uint32_t sample_rate, uint32_t block_size)
    int64_t bbx_monotonic_ns()
    void bbx_clock_init(bbx_clock *c)
    void bbx_clock_init_at(bbx_clock *c, int64_t origin_ns)
    uint64_t bbx_clock_now_us(const bbx_clock *c)
    uint64_t bbx_clock_tick(bbx_clock *c)
    uint64_t bbx_clock_cached_us(bbx_clock *c)
