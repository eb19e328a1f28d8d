/*
 * bbx_net.h -- the C API of bbx_net for audio hosts written in C, C++ or Cython.
 *
 * Everything here is `static inline`: the Python extension and a C host compile the
 * same code, and the host links nothing.  Include it from the directory returned by
 * `bbx_net.get_include()` and compile as C11 or C++17 (or later), in any include
 * order.  Shared-memory segments (a server in another process) are attached with the
 * POSIX helpers in <bbx_net/bbx_shm.h>.
 *
 * What crosses to the audio thread is a fixed-size `bbx_message` (48 bytes, the same
 * bytes as `bbx_net.MESSAGE_DTYPE`).  The ring is single-producer (the server's event
 * loop thread) / single-consumer (the audio thread).  Consumer functions never
 * allocate, never lock, never call into Python and never block: call them from the
 * audio callback.  The way back is a `bbx_viz_ring` of fixed-size float frames
 * (meters, spectra) that the audio thread fills and the server fans out to phones.
 *
 * Lifetime rule: an in-process ring belongs to the Python `NetBufferConsumer` object
 * that hands out its address (`consumer.ring_address` or the capsule named
 * BBX_RING_CAPSULE_NAME).  Keep that Python object alive for as long as any C code
 * holds the pointer.  A ring in a shared segment lives as long as its mapping.
 */
#ifndef BBX_NET_H
#define BBX_NET_H

/* ---- platform: atomics, alignment, monotonic clock (the one platform spot) ----
 *
 * C11 (gcc, clang; MSVC with /std:c11 /experimental:c11atomics) uses <stdatomic.h>;
 * C++17 and later use std::atomic, whose layout the static_asserts below pin to the
 * plain integer's, so a C++ host and the C-compiled extension share one ring.  The
 * header defines no feature-test macro and works in any include order. */
#if defined(__cplusplus)
#if (defined(_MSVC_LANG) ? _MSVC_LANG : __cplusplus) < 201703L
#error "bbx_net.h needs C11 or C++17"
#endif
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#define BBX_ATOMIC(T) std::atomic<T>
#define BBX_ALIGNAS(n) alignas(n)
#define BBX_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#define bbx__load(p, order) std::atomic_load_explicit((p), std::memory_order_##order)
#define bbx__store(p, v, order) std::atomic_store_explicit((p), (v), std::memory_order_##order)
#else
#if defined(__STDC_NO_ATOMICS__)
#error "bbx_net.h needs C11 atomics (<stdatomic.h>)"
#endif
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#define BBX_ATOMIC(T) _Atomic(T)
#define BBX_ALIGNAS(n) _Alignas(n)
#define BBX_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#define bbx__load(p, order) atomic_load_explicit((p), memory_order_##order)
#define bbx__store(p, v, order) atomic_store_explicit((p), (v), memory_order_##order)
#endif

/* The atomics are plain integers in memory (the ring may sit in memory shared by two
 * processes, or by C and C++ code), and never fall back to a lock. */
BBX_STATIC_ASSERT(sizeof(BBX_ATOMIC(size_t)) == sizeof(size_t), "atomic size_t layout");
BBX_STATIC_ASSERT(sizeof(BBX_ATOMIC(uint64_t)) == sizeof(uint64_t), "atomic uint64_t layout");
BBX_STATIC_ASSERT(sizeof(BBX_ATOMIC(uint32_t)) == sizeof(uint32_t), "atomic uint32_t layout");
#if defined(__cplusplus)
BBX_STATIC_ASSERT(alignof(std::atomic<size_t>) == alignof(size_t), "atomic size_t alignment");
BBX_STATIC_ASSERT(alignof(std::atomic<uint64_t>) == alignof(uint64_t), "atomic u64 alignment");
BBX_STATIC_ASSERT(std::atomic<size_t>::is_always_lock_free, "lock-free atomic size_t");
BBX_STATIC_ASSERT(std::atomic<uint64_t>::is_always_lock_free, "lock-free atomic uint64_t");
#else
BBX_STATIC_ASSERT(_Alignof(_Atomic(size_t)) == _Alignof(size_t), "atomic size_t alignment");
BBX_STATIC_ASSERT(ATOMIC_LLONG_LOCK_FREE == 2, "lock-free 64-bit atomics");
#endif

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#else
#include <time.h>
/* Strict ISO C (-std=c11) hides POSIX from <time.h> when a system header came before
 * this one without a feature-test macro.  clock_gettime is in the C library all the
 * same: declare it (glibc and musl: clockid_t is int, CLOCK_MONOTONIC is 1) rather
 * than ask the host to define macros before its first include. */
#if !defined(CLOCK_MONOTONIC) && defined(__linux__)
#define BBX__CLOCK_MONOTONIC 1
#ifdef __cplusplus
extern "C"
#endif
    int clock_gettime(int bbx__clock_id, struct timespec *bbx__ts);
#else
#define BBX__CLOCK_MONOTONIC CLOCK_MONOTONIC
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever the struct layouts below change. Checked by the capsule importer. */
#define BBX_NET_ABI_VERSION 2
/* Name of the PyCapsule that carries a `bbx_ring *` (see NetBufferConsumer.capsule). */
#define BBX_RING_CAPSULE_NAME "bbx_net._ring.bbx_ring_v2"
/* Name of the PyCapsule that carries a `bbx_clock *` (see ClockSync.capsule). */
#define BBX_CLOCK_CAPSULE_NAME "bbx_net._clock.bbx_clock_v1"

#define BBX_CACHE_LINE 64
/* The largest ring and schedule accepted (16 Mi messages, 768 MiB). */
#define BBX_RING_MAX_CAPACITY ((size_t)1 << 24)

/* ---- the message ---- */

typedef enum bbx_message_type {
    BBX_PARAMETER_CHANGE = 0,
    BBX_TRIGGER = 1,
    BBX_STATE_REQUEST = 2,
    BBX_STATE_RESPONSE = 3,
    BBX_PING = 4,
    BBX_PONG = 5
} bbx_message_type;

typedef enum bbx_payload_kind {
    BBX_PAYLOAD_NONE = 0,
    BBX_PAYLOAD_VALUE = 1,       /* payload[0] is the value */
    BBX_PAYLOAD_COORDINATES = 2  /* payload[0] is x, payload[1] is y */
} bbx_payload_kind;

/* flags: timestamp_us is a scheduled time (`at`), not the time of receipt. */
#define BBX_FLAG_SCHEDULED 1u

typedef struct bbx_message {
    uint32_t type;          /* bbx_message_type */
    uint32_t param_hash;    /* FNV-1a 32 of the UTF-8 name, see bbx_hash_param_name */
    uint32_t payload_kind;  /* bbx_payload_kind */
    float payload[2];       /* value, or x and y */
    uint32_t flags;         /* BBX_FLAG_* */
    uint64_t node_id_hi;    /* sender's 128-bit node id, high half */
    uint64_t node_id_lo;    /* low half */
    uint64_t timestamp_us;  /* server clock, microseconds */
} bbx_message;

/* A message due in an audio block, with the frame it is due at. */
typedef struct bbx_event {
    bbx_message message;
    uint32_t sample_offset; /* frame index inside the block, 0 for past/unscheduled */
    uint32_t reserved;      /* zero */
} bbx_event;

BBX_STATIC_ASSERT(sizeof(bbx_message) == 48, "bbx_message must be 48 bytes");
BBX_STATIC_ASSERT(offsetof(bbx_message, node_id_hi) == 24, "bbx_message layout");
BBX_STATIC_ASSERT(sizeof(bbx_event) == 56, "bbx_event must be 56 bytes");

/* 32-bit FNV-1a of `len` bytes (the UTF-8 bytes of a parameter name). */
static inline uint32_t bbx_hash_param_name(const char *name, size_t len) {
    uint32_t h = 0x811c9dc5u;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)name[i];
        h *= 0x01000193u;
    }
    return h;
}

/* ---- the ring ---- */

/* One pending scheduled message in the consumer's min-heap (ordered by key, seq). */
typedef struct bbx_pending {
    uint64_t key;  /* due time in µs; 0 for unscheduled (due at once) */
    uint64_t seq;  /* arrival order, breaks ties */
    bbx_message message;
} bbx_pending;

/* The ring's control block, followed in memory by its capacity + 1 slots and then the
 * consumer's schedule storage.  It holds no pointers (only sizes, indices, counters),
 * so it works the same when the memory is shared by two processes that map it at
 * different addresses. */
typedef struct bbx_ring {
    /* Line 0: fixed at construction, read-only afterwards (shared freely). */
    BBX_ALIGNAS(BBX_CACHE_LINE) BBX_ATOMIC(uint32_t) magic; /* BBX_RING_MAGIC once laid out */
    uint32_t abi_version;
    uint64_t n_slots;          /* capacity + 1: one spare slot tells full from empty */
    uint64_t capacity;
    uint64_t pending_capacity; /* consumer's schedule storage, in messages */
    uint64_t footprint;        /* bytes from the ring's start to the end of its storage */

    /* Each index has a line of its own: the owner writes it, the other side reads it.
     * The owner's private state sits on a further line, so a producer spinning on a
     * full ring (or a consumer polling an empty one) does not invalidate the line the
     * other side is reading. */
    /* Line 1: written by the producer, read by the consumer. */
    BBX_ALIGNAS(BBX_CACHE_LINE) BBX_ATOMIC(size_t) write; /* next slot to fill */
    /* Line 2: the producer's own. */
    BBX_ALIGNAS(BBX_CACHE_LINE) size_t read_cache; /* copy of `read`, reloaded when full */
    BBX_ATOMIC(uint64_t) dropped; /* pushes refused because the ring was full */
    /* Line 3: written by the consumer, read by the producer. */
    BBX_ALIGNAS(BBX_CACHE_LINE) BBX_ATOMIC(size_t) read; /* next slot to take */
    /* Line 4: the consumer's own. */
    BBX_ALIGNAS(BBX_CACHE_LINE) size_t write_cache; /* copy of `write`, reloaded when empty */
    BBX_ATOMIC(size_t) pending_count; /* messages held in the schedule (read by stats) */
    uint64_t pending_seq;
    BBX_ATOMIC(uint64_t) schedule_full; /* drain_block calls that left messages in the
                                          ring because the schedule storage was full */
} bbx_ring;

/* "BBXR": a laid-out ring (checked by bbx_ring_attach). */
#define BBX_RING_MAGIC 0x52584242u

/* The layout is part of the ABI: C, C++ and the extension agree on every offset. */
BBX_STATIC_ASSERT(offsetof(bbx_ring, footprint) == 32, "bbx_ring layout");
BBX_STATIC_ASSERT(offsetof(bbx_ring, write) == 64, "bbx_ring layout");
BBX_STATIC_ASSERT(offsetof(bbx_ring, read_cache) == 128, "bbx_ring layout");
BBX_STATIC_ASSERT(offsetof(bbx_ring, dropped) == 136, "bbx_ring layout");
BBX_STATIC_ASSERT(offsetof(bbx_ring, read) == 192, "bbx_ring layout");
BBX_STATIC_ASSERT(offsetof(bbx_ring, write_cache) == 256, "bbx_ring layout");
#if SIZE_MAX == UINT64_MAX
BBX_STATIC_ASSERT(offsetof(bbx_ring, pending_count) == 264, "bbx_ring layout");
BBX_STATIC_ASSERT(offsetof(bbx_ring, schedule_full) == 280, "bbx_ring layout");
#endif
BBX_STATIC_ASSERT(sizeof(bbx_ring) == 320, "bbx_ring layout");

static inline bbx_message *bbx__slots(bbx_ring *r) {
    return (bbx_message *)(void *)(r + 1);
}

static inline bbx_pending *bbx__schedule(bbx_ring *r) {
    return (bbx_pending *)(void *)(bbx__slots(r) + r->n_slots);
}

/* Bytes of memory `bbx_ring_init` needs, or 0 if a capacity is out of range. */
static inline size_t bbx_ring_footprint(size_t capacity, size_t pending_capacity) {
    if (capacity < 1 || capacity > BBX_RING_MAX_CAPACITY ||
        pending_capacity > BBX_RING_MAX_CAPACITY) {
        return 0;
    }
    return sizeof(bbx_ring) + (BBX_CACHE_LINE - 1) + (capacity + 1) * sizeof(bbx_message) +
           pending_capacity * sizeof(bbx_pending);
}

/* Lays a ring out in `mem` (at least bbx_ring_footprint bytes, any alignment).
 * Returns the ring (64-byte aligned inside mem), or NULL on a bad size.
 * Call once, before either side uses the ring; this is the only step that needs
 * memory, and the caller provides it (malloc, or a shared-memory segment). */
static inline bbx_ring *bbx_ring_init(void *mem, size_t mem_size, size_t capacity,
                                      size_t pending_capacity) {
    size_t need = bbx_ring_footprint(capacity, pending_capacity);
    if (mem == NULL || need == 0 || mem_size < need) {
        return NULL;
    }
    memset(mem, 0, need);
    uintptr_t p = ((uintptr_t)mem + (BBX_CACHE_LINE - 1)) & ~(uintptr_t)(BBX_CACHE_LINE - 1);
    bbx_ring *r = (bbx_ring *)p;
    r->n_slots = capacity + 1;
    r->capacity = capacity;
    r->pending_capacity = pending_capacity;
    r->footprint = need - (BBX_CACHE_LINE - 1);
    r->abi_version = BBX_NET_ABI_VERSION;
    bbx__store(&r->write, 0, relaxed);
    bbx__store(&r->read, 0, relaxed);
    bbx__store(&r->dropped, 0, relaxed);
    bbx__store(&r->pending_count, 0, relaxed);
    bbx__store(&r->schedule_full, 0, relaxed);
    r->read_cache = 0;
    r->write_cache = 0;
    r->pending_seq = 0;
    /* release: a side that attaches later (another process) and sees the magic with an
     * acquire fence sees the layout above. */
    bbx__store(&r->magic, BBX_RING_MAGIC, release);
    return r;
}

/* The ring that bbx_ring_init laid out in `mem` (for example a shared-memory segment
 * mapped by another process), or NULL when `mem` holds no ring of this ABI or its
 * storage does not fit in `mem_size` bytes.  No allocation, no system call. */
static inline bbx_ring *bbx_ring_attach(void *mem, size_t mem_size) {
    if (mem == NULL) {
        return NULL;
    }
    uintptr_t p = ((uintptr_t)mem + (BBX_CACHE_LINE - 1)) & ~(uintptr_t)(BBX_CACHE_LINE - 1);
    size_t skip = (size_t)(p - (uintptr_t)mem);
    if (mem_size < skip + sizeof(bbx_ring)) {
        return NULL;
    }
    bbx_ring *r = (bbx_ring *)p;
    /* acquire: pairs with the release store of the magic in bbx_ring_init. */
    if (bbx__load(&r->magic, acquire) != BBX_RING_MAGIC ||
        r->abi_version != BBX_NET_ABI_VERSION || r->capacity < 1 ||
        r->capacity > BBX_RING_MAX_CAPACITY || r->n_slots != r->capacity + 1 ||
        r->pending_capacity > BBX_RING_MAX_CAPACITY ||
        r->footprint != bbx_ring_footprint((size_t)r->capacity, (size_t)r->pending_capacity) -
                            (BBX_CACHE_LINE - 1) ||
        mem_size - skip < r->footprint) {
        return NULL;
    }
    return r;
}

static inline size_t bbx__ring_distance(const bbx_ring *r, size_t from, size_t to) {
    return to >= from ? to - from : r->n_slots - from + to;
}

/* Producer: copies *m into the ring. Returns 1, or 0 (and counts a drop) when full. */
static inline int bbx_ring_try_push(bbx_ring *r, const bbx_message *m) {
    /* relaxed: only this thread stores `write`. */
    size_t w = bbx__load(&r->write, relaxed);
    size_t next = w + 1 == r->n_slots ? 0 : w + 1;
    if (next == r->read_cache) {
        /* acquire: pairs with the release store of `read` in bbx_ring_pop/drain, so the
         * consumer has finished copying out the slot we are about to overwrite. */
        r->read_cache = bbx__load(&r->read, acquire);
        if (next == r->read_cache) {
            /* relaxed load + store, not a locked add: only this thread writes it, and
             * other threads read it as a statistic with nothing behind it. */
            bbx__store(&r->dropped, bbx__load(&r->dropped, relaxed) + 1, relaxed);
            return 0;
        }
    }
    bbx__slots(r)[w] = *m;
    /* release: publishes slot w to the acquire load of `write` in pop/drain. */
    bbx__store(&r->write, next, release);
    return 1;
}

/* Consumer: number of messages ready to take. Never blocks. */
static inline size_t bbx__ring_readable(bbx_ring *r, size_t rd, size_t want) {
    size_t avail = bbx__ring_distance(r, rd, r->write_cache);
    if (avail < want) {
        /* acquire: pairs with the release store of `write` in bbx_ring_try_push; the
         * slots up to the loaded index are fully written. */
        r->write_cache = bbx__load(&r->write, acquire);
        avail = bbx__ring_distance(r, rd, r->write_cache);
    }
    return avail;
}

/* Consumer: copies the oldest message into *out. Returns 1, or 0 when empty.
 * Audio-thread safe: no allocation, no lock, no system call. */
static inline int bbx_ring_pop(bbx_ring *r, bbx_message *out) {
    /* relaxed: only this thread stores `read`. */
    size_t rd = bbx__load(&r->read, relaxed);
    if (bbx__ring_readable(r, rd, 1) == 0) {
        return 0;
    }
    *out = bbx__slots(r)[rd];
    /* release: hands slot rd back to the producer's acquire load of `read`. */
    bbx__store(&r->read, rd + 1 == r->n_slots ? 0 : rd + 1, release);
    return 1;
}

/* Consumer: copies up to max_out messages, oldest first. Returns the count.
 * Audio-thread safe: no allocation, no lock, no system call. */
static inline size_t bbx_ring_drain(bbx_ring *r, bbx_message *out, size_t max_out) {
    /* relaxed: only this thread stores `read`. */
    size_t rd = bbx__load(&r->read, relaxed);
    size_t n = bbx__ring_readable(r, rd, max_out);
    if (n > max_out) {
        n = max_out;
    }
    if (n == 0) {
        return 0;
    }
    size_t first = r->n_slots - rd;
    if (first > n) {
        first = n;
    }
    memcpy(out, bbx__slots(r) + rd, first * sizeof(bbx_message));
    memcpy(out + first, bbx__slots(r), (n - first) * sizeof(bbx_message));
    size_t nr = rd + n;
    if (nr >= r->n_slots) {
        nr -= r->n_slots;
    }
    /* release: hands the n slots back to the producer's acquire load of `read`. */
    bbx__store(&r->read, nr, release);
    return n;
}

/* Either side: messages in the ring (a snapshot; exact when the other side is idle). */
static inline size_t bbx_ring_len(bbx_ring *r) {
    /* acquire on both: pairs with the release stores in push and pop. */
    size_t w = bbx__load(&r->write, acquire);
    size_t rd = bbx__load(&r->read, acquire);
    return bbx__ring_distance(r, rd, w);
}

/* Statistics, readable from any thread (relaxed: lone counters, nothing behind them). */
static inline uint64_t bbx_ring_dropped(bbx_ring *r) {
    return bbx__load(&r->dropped, relaxed);
}

/* Messages held in the schedule storage by bbx_ring_drain_block (declared below). */
static inline size_t bbx_ring_pending(bbx_ring *r) {
    return bbx__load(&r->pending_count, relaxed);
}

static inline uint64_t bbx_ring_schedule_full(bbx_ring *r) {
    return bbx__load(&r->schedule_full, relaxed);
}

/* ---- the way back: visualization frames (audio thread -> server) ---- */

/* A frame's header; `frame_floats` floats follow it in the slot. */
typedef struct bbx_viz_frame {
    uint32_t stream;       /* the host's stream number (0: the page's default view) */
    uint32_t count;        /* floats used, at most the ring's frame_floats */
    uint64_t timestamp_us; /* server-clock µs the frame describes (0: unknown) */
} bbx_viz_frame;

BBX_STATIC_ASSERT(sizeof(bbx_viz_frame) == 16, "bbx_viz_frame must be 16 bytes");

/* The largest frame (floats) and ring (frames) accepted. */
#define BBX_VIZ_MAX_FLOATS 4096u
#define BBX_VIZ_MAX_CAPACITY ((size_t)1 << 16)
/* "BBXV": a laid-out visualization ring. */
#define BBX_VIZ_MAGIC 0x56584242u

/* A single-producer (the audio thread) / single-consumer (the server) ring of frames.
 * Like bbx_ring it holds no pointers; its slots follow the control block. */
typedef struct bbx_viz_ring {
    /* Line 0: fixed at construction. */
    BBX_ALIGNAS(BBX_CACHE_LINE) BBX_ATOMIC(uint32_t) magic;
    uint32_t abi_version;
    uint32_t frame_floats; /* floats per frame */
    uint32_t slot_bytes;   /* 16 + 4 * frame_floats, rounded up to 16 */
    uint64_t n_slots;      /* capacity + 1 */
    uint64_t capacity;
    uint64_t footprint;
    /* Line 1: written by the producer. */
    BBX_ALIGNAS(BBX_CACHE_LINE) BBX_ATOMIC(size_t) write;
    /* Line 2: the producer's own. */
    BBX_ALIGNAS(BBX_CACHE_LINE) size_t read_cache;
    BBX_ATOMIC(uint64_t) dropped; /* frames refused because the ring was full */
    BBX_ATOMIC(uint64_t) pushed;  /* frames accepted */
    /* Line 3: written by the consumer. */
    BBX_ALIGNAS(BBX_CACHE_LINE) BBX_ATOMIC(size_t) read;
    /* Line 4: the consumer's own. */
    BBX_ALIGNAS(BBX_CACHE_LINE) size_t write_cache;
} bbx_viz_ring;

BBX_STATIC_ASSERT(offsetof(bbx_viz_ring, write) == 64, "bbx_viz_ring layout");
BBX_STATIC_ASSERT(offsetof(bbx_viz_ring, read) == 192, "bbx_viz_ring layout");
BBX_STATIC_ASSERT(sizeof(bbx_viz_ring) == 320, "bbx_viz_ring layout");

static inline uint32_t bbx__viz_slot_bytes(uint32_t frame_floats) {
    return (uint32_t)((sizeof(bbx_viz_frame) + 4u * (size_t)frame_floats + 15u) & ~(size_t)15u);
}

/* Bytes of memory `bbx_viz_init` needs, or 0 if a size is out of range. */
static inline size_t bbx_viz_footprint(size_t capacity, uint32_t frame_floats) {
    if (capacity < 1 || capacity > BBX_VIZ_MAX_CAPACITY || frame_floats < 1 ||
        frame_floats > BBX_VIZ_MAX_FLOATS) {
        return 0;
    }
    return sizeof(bbx_viz_ring) + (BBX_CACHE_LINE - 1) +
           (capacity + 1) * (size_t)bbx__viz_slot_bytes(frame_floats);
}

/* Lays a visualization ring out in `mem` (any alignment); NULL on a bad size. */
static inline bbx_viz_ring *bbx_viz_init(void *mem, size_t mem_size, size_t capacity,
                                         uint32_t frame_floats) {
    size_t need = bbx_viz_footprint(capacity, frame_floats);
    if (mem == NULL || need == 0 || mem_size < need) {
        return NULL;
    }
    memset(mem, 0, need);
    uintptr_t p = ((uintptr_t)mem + (BBX_CACHE_LINE - 1)) & ~(uintptr_t)(BBX_CACHE_LINE - 1);
    bbx_viz_ring *v = (bbx_viz_ring *)p;
    v->abi_version = BBX_NET_ABI_VERSION;
    v->frame_floats = frame_floats;
    v->slot_bytes = bbx__viz_slot_bytes(frame_floats);
    v->n_slots = capacity + 1;
    v->capacity = capacity;
    v->footprint = need - (BBX_CACHE_LINE - 1);
    bbx__store(&v->write, 0, relaxed);
    bbx__store(&v->read, 0, relaxed);
    bbx__store(&v->dropped, 0, relaxed);
    bbx__store(&v->pushed, 0, relaxed);
    v->read_cache = 0;
    v->write_cache = 0;
    bbx__store(&v->magic, BBX_VIZ_MAGIC, release); /* see bbx_ring_init */
    return v;
}

/* The visualization ring laid out in `mem`, or NULL (see bbx_ring_attach). */
static inline bbx_viz_ring *bbx_viz_attach(void *mem, size_t mem_size) {
    if (mem == NULL) {
        return NULL;
    }
    uintptr_t p = ((uintptr_t)mem + (BBX_CACHE_LINE - 1)) & ~(uintptr_t)(BBX_CACHE_LINE - 1);
    size_t skip = (size_t)(p - (uintptr_t)mem);
    if (mem_size < skip + sizeof(bbx_viz_ring)) {
        return NULL;
    }
    bbx_viz_ring *v = (bbx_viz_ring *)p;
    if (bbx__load(&v->magic, acquire) != BBX_VIZ_MAGIC ||
        v->abi_version != BBX_NET_ABI_VERSION || v->n_slots != v->capacity + 1 ||
        bbx_viz_footprint((size_t)v->capacity, v->frame_floats) == 0 ||
        v->slot_bytes != bbx__viz_slot_bytes(v->frame_floats) ||
        v->footprint != bbx_viz_footprint((size_t)v->capacity, v->frame_floats) -
                            (BBX_CACHE_LINE - 1) ||
        mem_size - skip < v->footprint) {
        return NULL;
    }
    return v;
}

static inline bbx_viz_frame *bbx__viz_slot(bbx_viz_ring *v, size_t i) {
    return (bbx_viz_frame *)(void *)((unsigned char *)(v + 1) + i * (size_t)v->slot_bytes);
}

/* Producer (the audio thread): copies `count` floats as one frame of `stream`.
 * Returns 1, 0 when the ring is full (the frame is dropped and counted: phones want
 * the newest view, not a backlog), or -1 when count exceeds frame_floats.
 * Audio-thread safe: no allocation, no lock, no system call. */
static inline int bbx_viz_try_push(bbx_viz_ring *v, uint32_t stream, const float *data,
                                   uint32_t count, uint64_t timestamp_us) {
    if (count > v->frame_floats) {
        return -1;
    }
    size_t w = bbx__load(&v->write, relaxed); /* only this thread stores `write` */
    size_t next = w + 1 == v->n_slots ? 0 : w + 1;
    if (next == v->read_cache) {
        v->read_cache = bbx__load(&v->read, acquire); /* pairs with the consumer's release */
        if (next == v->read_cache) {
            bbx__store(&v->dropped, bbx__load(&v->dropped, relaxed) + 1, relaxed);
            return 0;
        }
    }
    bbx_viz_frame *f = bbx__viz_slot(v, w);
    f->stream = stream;
    f->count = count;
    f->timestamp_us = timestamp_us;
    if (count > 0) {
        memcpy((void *)(f + 1), data, (size_t)count * sizeof(float));
    }
    bbx__store(&v->pushed, bbx__load(&v->pushed, relaxed) + 1, relaxed);
    bbx__store(&v->write, next, release); /* publishes the slot to the consumer */
    return 1;
}

/* Consumer (the server): copies the oldest frame's header into *head and its floats
 * into data (at most max_floats; head->count says how many it had). Returns 1, or 0
 * when empty. No allocation, no lock. */
static inline int bbx_viz_pop(bbx_viz_ring *v, bbx_viz_frame *head, float *data,
                              uint32_t max_floats) {
    size_t rd = bbx__load(&v->read, relaxed); /* only this thread stores `read` */
    if (rd == v->write_cache) {
        v->write_cache = bbx__load(&v->write, acquire); /* pairs with the push's release */
        if (rd == v->write_cache) {
            return 0;
        }
    }
    const bbx_viz_frame *f = bbx__viz_slot(v, rd);
    *head = *f;
    uint32_t n = f->count < max_floats ? f->count : max_floats;
    if (n > 0) {
        memcpy(data, (const void *)(f + 1), (size_t)n * sizeof(float));
    }
    bbx__store(&v->read, rd + 1 == v->n_slots ? 0 : rd + 1, release); /* slot handed back */
    return 1;
}

/* Frames waiting (a snapshot). */
static inline size_t bbx_viz_len(bbx_viz_ring *v) {
    size_t w = bbx__load(&v->write, acquire);
    size_t rd = bbx__load(&v->read, acquire);
    return w >= rd ? w - rd : (size_t)v->n_slots - rd + w;
}

static inline uint64_t bbx_viz_dropped(bbx_viz_ring *v) {
    return bbx__load(&v->dropped, relaxed);
}

static inline uint64_t bbx_viz_pushed(bbx_viz_ring *v) {
    return bbx__load(&v->pushed, relaxed);
}

/* ---- a shared segment: the rings of a server in another process ----
 *
 * One block of memory (a POSIX shared-memory object, see <bbx_net/bbx_shm.h>) holds
 * this header, the message ring (server -> audio) and, optionally, the visualization
 * ring (audio -> server), at offsets from the segment's start.  The server's clock
 * origin travels with it, so both processes read the same server clock. */
typedef struct bbx_segment {
    BBX_ALIGNAS(BBX_CACHE_LINE) BBX_ATOMIC(uint32_t) magic; /* BBX_SEGMENT_MAGIC */
    uint32_t abi_version;
    uint64_t size;             /* bytes of the whole segment */
    uint64_t ring_offset;      /* the bbx_ring, from the segment's start */
    uint64_t viz_offset;       /* the bbx_viz_ring, or 0 for none */
    int64_t clock_origin_ns;   /* the server clock's origin (bbx_clock_init_at) */
    int64_t owner_pid;         /* the process that created the segment */
    BBX_ATOMIC(int64_t) server_pid; /* the serving process, 0 until it attaches */
    BBX_ATOMIC(uint32_t) state;     /* BBX_SEGMENT_* */
} bbx_segment;

/* "BBXS" */
#define BBX_SEGMENT_MAGIC 0x53584242u
#define BBX_SEGMENT_STARTING 0u /* laid out, no server yet */
#define BBX_SEGMENT_SERVING 1u  /* a server produces into the ring */
#define BBX_SEGMENT_STOPPED 2u  /* the server has stopped (cleanly or not) */

BBX_STATIC_ASSERT(sizeof(bbx_segment) == 64, "bbx_segment must be one cache line");

static inline size_t bbx__round_line(size_t n) {
    return (n + (BBX_CACHE_LINE - 1)) & ~(size_t)(BBX_CACHE_LINE - 1);
}

/* Bytes a segment needs (viz_capacity 0: no visualization ring), or 0 on a bad size. */
static inline size_t bbx_segment_footprint(size_t capacity, size_t pending_capacity,
                                           size_t viz_capacity, uint32_t viz_floats) {
    size_t ring = bbx_ring_footprint(capacity, pending_capacity);
    size_t viz = viz_capacity ? bbx_viz_footprint(viz_capacity, viz_floats) : 0;
    if (ring == 0 || (viz_capacity && viz == 0)) {
        return 0;
    }
    return sizeof(bbx_segment) + bbx__round_line(ring) + bbx__round_line(viz);
}

/* Lays a segment out in `mem` (64-byte aligned, as a mapping is). NULL on bad sizes. */
static inline bbx_segment *bbx_segment_init(void *mem, size_t mem_size, size_t capacity,
                                            size_t pending_capacity, size_t viz_capacity,
                                            uint32_t viz_floats, int64_t clock_origin_ns,
                                            int64_t owner_pid) {
    size_t need = bbx_segment_footprint(capacity, pending_capacity, viz_capacity, viz_floats);
    if (mem == NULL || need == 0 || mem_size < need ||
        ((uintptr_t)mem & (uintptr_t)(BBX_CACHE_LINE - 1)) != 0) {
        return NULL;
    }
    unsigned char *base = (unsigned char *)mem;
    bbx_segment *s = (bbx_segment *)mem;
    memset(mem, 0, sizeof(bbx_segment));
    size_t ring_bytes = bbx__round_line(bbx_ring_footprint(capacity, pending_capacity));
    s->abi_version = BBX_NET_ABI_VERSION;
    s->size = need;
    s->ring_offset = sizeof(bbx_segment);
    s->viz_offset = viz_capacity ? sizeof(bbx_segment) + ring_bytes : 0;
    s->clock_origin_ns = clock_origin_ns;
    s->owner_pid = owner_pid;
    bbx_ring_init(base + s->ring_offset, ring_bytes, capacity, pending_capacity);
    if (viz_capacity) {
        bbx_viz_init(base + s->viz_offset, need - (size_t)s->viz_offset, viz_capacity,
                     viz_floats);
    }
    bbx__store(&s->server_pid, 0, relaxed);
    bbx__store(&s->state, BBX_SEGMENT_STARTING, relaxed);
    bbx__store(&s->magic, BBX_SEGMENT_MAGIC, release); /* see bbx_ring_init */
    return s;
}

/* The segment laid out in `mem` (mem_size bytes mapped), or NULL when it is not one
 * of this ABI or its rings do not check out. */
static inline bbx_segment *bbx_segment_attach(void *mem, size_t mem_size) {
    bbx_segment *s = (bbx_segment *)mem;
    if (mem == NULL || mem_size < sizeof(bbx_segment) ||
        ((uintptr_t)mem & (uintptr_t)(BBX_CACHE_LINE - 1)) != 0 ||
        bbx__load(&s->magic, acquire) != BBX_SEGMENT_MAGIC ||
        s->abi_version != BBX_NET_ABI_VERSION || s->size > mem_size ||
        s->ring_offset != sizeof(bbx_segment) || s->viz_offset >= s->size) {
        return NULL;
    }
    unsigned char *base = (unsigned char *)mem;
    size_t ring_room = (size_t)(s->viz_offset ? s->viz_offset : s->size) - sizeof(bbx_segment);
    if (bbx_ring_attach(base + s->ring_offset, ring_room) == NULL) {
        return NULL;
    }
    if (s->viz_offset &&
        bbx_viz_attach(base + s->viz_offset, (size_t)(s->size - s->viz_offset)) == NULL) {
        return NULL;
    }
    return s;
}

static inline bbx_ring *bbx_segment_ring(bbx_segment *s) {
    return (bbx_ring *)(void *)((unsigned char *)s + s->ring_offset);
}

/* The visualization ring, or NULL when the segment has none. */
static inline bbx_viz_ring *bbx_segment_viz(bbx_segment *s) {
    return s->viz_offset ? (bbx_viz_ring *)(void *)((unsigned char *)s + s->viz_offset) : NULL;
}

static inline uint32_t bbx_segment_state(bbx_segment *s) {
    return bbx__load(&s->state, acquire); /* pairs with bbx_segment_set_state */
}

static inline void bbx_segment_set_state(bbx_segment *s, uint32_t state) {
    bbx__store(&s->state, state, release);
}

static inline int64_t bbx_segment_server_pid(bbx_segment *s) {
    return bbx__load(&s->server_pid, acquire);
}

static inline void bbx_segment_set_server_pid(bbx_segment *s, int64_t pid) {
    bbx__store(&s->server_pid, pid, release);
}

/* ---- sample-accurate scheduling (consumer side) ---- */

/* Frame index of `timestamp_us` in a block starting at `block_start_us`: 0 for the
 * past, the frame for events inside the block, -1 for events after the block. */
static inline int64_t bbx_to_sample_offset(uint64_t timestamp_us, uint64_t block_start_us,
                                           uint32_t sample_rate, uint32_t block_size) {
    if (timestamp_us <= block_start_us) {
        return 0;
    }
    uint64_t delta = timestamp_us - block_start_us;
    /* Beyond ~10^6 s ahead (and any overflow of delta * rate): surely after the block. */
    if (sample_rate == 0 || delta > UINT64_MAX / 1000000u / 2u / (uint64_t)sample_rate) {
        return -1;
    }
    uint64_t frame = delta * (uint64_t)sample_rate / 1000000u;
    return frame < block_size ? (int64_t)frame : -1;
}

static inline int bbx__pending_less(const bbx_pending *a, const bbx_pending *b) {
    return a->key < b->key || (a->key == b->key && a->seq < b->seq);
}

static inline void bbx__pending_swap(bbx_pending *a, bbx_pending *b) {
    bbx_pending t = *a;
    *a = *b;
    *b = t;
}

static inline void bbx__heap_push(bbx_ring *r, size_t n, const bbx_message *m) {
    bbx_pending *h = bbx__schedule(r);
    size_t i = n;
    h[i].key = (m->flags & BBX_FLAG_SCHEDULED) ? m->timestamp_us : 0;
    h[i].seq = r->pending_seq++;
    h[i].message = *m;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!bbx__pending_less(&h[i], &h[parent])) {
            break;
        }
        bbx__pending_swap(&h[i], &h[parent]);
        i = parent;
    }
}

static inline void bbx__heap_pop(bbx_ring *r, size_t n) {
    bbx_pending *h = bbx__schedule(r);
    h[0] = h[n - 1];
    n -= 1;
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, rr = l + 1, m = i;
        if (l < n && bbx__pending_less(&h[l], &h[m])) m = l;
        if (rr < n && bbx__pending_less(&h[rr], &h[m])) m = rr;
        if (m == i) break;
        bbx__pending_swap(&h[i], &h[m]);
        i = m;
    }
}

/* Consumer: writes the events due in the block [block_start_us, +block_size frames)
 * into out (at most max_out), ordered by sample offset then arrival, and returns the
 * count.  Unscheduled and past events are due at offset 0.  Later events stay in the
 * schedule storage allocated at construction.  When that storage is full, further
 * messages stay in the ring (nothing is lost; `schedule_full` counts such calls and
 * the producer's `dropped` counts what the ring then refuses).  A return equal to
 * max_out means more may be due: call again with the same block.
 * Audio-thread safe: no allocation, no lock, no system call. */
static inline size_t bbx_ring_drain_block(bbx_ring *r, bbx_event *out, size_t max_out,
                                          uint64_t block_start_us, uint32_t sample_rate,
                                          uint32_t block_size) {
    size_t n_pending = bbx__load(&r->pending_count, relaxed);
    /* Take at most what is in the ring now, so a busy producer cannot keep us here. */
    size_t budget = bbx__ring_readable(
        r, bbx__load(&r->read, relaxed), SIZE_MAX);
    size_t n_out = 0;
    int stalled = 0;
    for (;;) {
        /* 1. Move what arrived into the schedule while it has room; the slots are
         * handed back to the producer once for the whole batch. */
        size_t take = r->pending_capacity - n_pending;
        if (take > budget) {
            take = budget;
        }
        if (take > 0) {
            /* relaxed: only this thread stores `read`. */
            size_t rd = bbx__load(&r->read, relaxed);
            for (size_t k = 0; k < take; k++) {
                bbx__heap_push(r, n_pending++, &bbx__slots(r)[rd]);
                rd = rd + 1 == r->n_slots ? 0 : rd + 1;
            }
            budget -= take;
            /* release: hands the copied slots back to the producer's acquire load of
             * `read` in bbx_ring_try_push. */
            bbx__store(&r->read, rd, release);
        }
        /* 2. Emit due events in (key, seq) order. */
        size_t emitted = 0;
        while (n_out < max_out && n_pending > 0) {
            const bbx_pending *top = &bbx__schedule(r)[0];
            int64_t off = top->key == 0 ? 0
                                        : bbx_to_sample_offset(top->key, block_start_us,
                                                               sample_rate, block_size);
            if (off < 0) {
                break;
            }
            out[n_out].message = top->message;
            out[n_out].sample_offset = (uint32_t)off;
            out[n_out].reserved = 0;
            n_out++;
            emitted++;
            bbx__heap_pop(r, n_pending);
            n_pending--;
        }
        /* 3. Done, unless the schedule was full and emitting made room for more. */
        if (n_out == max_out || budget == 0) {
            break;
        }
        if (emitted == 0) {
            stalled = 1; /* full of later events: the rest waits in the ring */
            break;
        }
    }
    if (stalled) {
        /* relaxed load + store: only this thread writes it (a statistic). */
        bbx__store(&r->schedule_full, bbx__load(&r->schedule_full, relaxed) + 1, relaxed);
    }
    /* relaxed: only this thread writes it; others read it as a statistic. */
    bbx__store(&r->pending_count, n_pending, relaxed);
    return n_out;
}

/* Consumer (bbx_rings_drain_block): moves what arrived in r into its schedule, while
 * the schedule has room.  Returns 1 when messages had to stay in the ring. */
static inline int bbx__ring_absorb(bbx_ring *r) {
    size_t n_pending = bbx__load(&r->pending_count, relaxed);
    size_t room = r->pending_capacity - n_pending;
    /* relaxed: only this thread stores `read`. */
    size_t rd = bbx__load(&r->read, relaxed);
    size_t avail = bbx__ring_readable(r, rd, room == 0 ? 1 : room);
    size_t take = avail < room ? avail : room;
    for (size_t k = 0; k < take; k++) {
        bbx__heap_push(r, n_pending++, &bbx__slots(r)[rd]);
        rd = rd + 1 == r->n_slots ? 0 : rd + 1;
    }
    if (take > 0) {
        /* release: hands the copied slots back to the producer's acquire load of `read`
         * in bbx_ring_try_push. */
        bbx__store(&r->read, rd, release);
        /* relaxed: only this thread writes it; others read it as a statistic. */
        bbx__store(&r->pending_count, n_pending, relaxed);
    }
    return avail > take;
}

/* Consumer: the events due in one block from several rings (one per server process,
 * say), merged into out by sample offset; among equal offsets the rings take turns
 * (round robin, each ring in its own order), so one busy ring cannot starve the
 * others when out is small.  The same rules as bbx_ring_drain_block otherwise: later
 * events wait in each ring's schedule, and a return equal to max_out means more may
 * be due (call again for the same block).  Cost: O(n_rings) per event emitted, plus
 * the schedules' heap steps.
 * Audio-thread safe: no allocation, no lock, no system call. */
static inline size_t bbx_rings_drain_block(bbx_ring *const *rings, size_t n_rings,
                                           bbx_event *out, size_t max_out,
                                           uint64_t block_start_us, uint32_t sample_rate,
                                           uint32_t block_size) {
    size_t n_out = 0;
    if (n_rings == 0) {
        return 0;
    }
    size_t last = n_rings - 1; /* the ring that emitted last: ties go to the next one */
    int emitted = 0;           /* since the rings last took in what arrived */
    for (size_t i = 0; i < n_rings; i++) {
        bbx__ring_absorb(rings[i]);
    }
    while (n_out < max_out) {
        size_t best = n_rings;
        int64_t best_off = 0;
        for (size_t step = 1; step <= n_rings; step++) {
            size_t i = (last + step) % n_rings;
            bbx_ring *r = rings[i];
            if (bbx__load(&r->pending_count, relaxed) == 0) {
                continue;
            }
            const bbx_pending *top = &bbx__schedule(r)[0];
            int64_t off = top->key == 0 ? 0
                                        : bbx_to_sample_offset(top->key, block_start_us,
                                                               sample_rate, block_size);
            if (off >= 0 && (best == n_rings || off < best_off)) {
                best = i;
                best_off = off;
            }
        }
        if (best == n_rings) {
            /* Nothing more is due.  Emitting made room in a schedule that was full:
             * take in what waited and look again (once per round of emissions, so a
             * busy producer cannot keep us here). */
            if (!emitted) {
                break;
            }
            emitted = 0;
            for (size_t i = 0; i < n_rings; i++) {
                bbx_ring *r = rings[i];
                if (bbx__load(&r->pending_count, relaxed) < r->pending_capacity) {
                    bbx__ring_absorb(r);
                }
            }
            continue;
        }
        bbx_ring *r = rings[best];
        size_t n_pending = bbx__load(&r->pending_count, relaxed);
        out[n_out].message = bbx__schedule(r)[0].message;
        out[n_out].sample_offset = (uint32_t)best_off;
        out[n_out].reserved = 0;
        n_out++;
        bbx__heap_pop(r, n_pending);
        bbx__store(&r->pending_count, n_pending - 1, relaxed);
        last = best;
        emitted = 1;
    }
    if (n_out < max_out) {
        for (size_t i = 0; i < n_rings; i++) {
            bbx_ring *r = rings[i];
            /* Full of later events while messages still wait in the ring. */
            if (bbx__load(&r->pending_count, relaxed) == r->pending_capacity &&
                bbx__ring_readable(r, bbx__load(&r->read, relaxed), 1) > 0) {
                bbx__store(&r->schedule_full,
                           bbx__load(&r->schedule_full, relaxed) + 1, relaxed);
            }
        }
    }
    return n_out;
}

/* ---- the clock ---- */

typedef struct bbx_clock {
    int64_t origin_ns;            /* raw monotonic reading at creation */
    BBX_ALIGNAS(BBX_CACHE_LINE) BBX_ATOMIC(uint64_t) cached_us; /* set by bbx_clock_tick */
} bbx_clock;

/* Raw monotonic time in nanoseconds (not wall time; unaffected by clock changes). */
static inline int64_t bbx_monotonic_ns(void) {
#if defined(_WIN32)
    static LARGE_INTEGER freq; /* benign race: every thread writes the same value */
    LARGE_INTEGER now;
    if (freq.QuadPart == 0) QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&now);
    return (int64_t)((double)now.QuadPart * 1e9 / (double)freq.QuadPart);
#else
    struct timespec ts;
    clock_gettime(BBX__CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
#endif
}

static inline void bbx_clock_init(bbx_clock *c) {
    c->origin_ns = bbx_monotonic_ns();
    bbx__store(&c->cached_us, 0, relaxed);
}

/* A clock that reads the same as another one created at `origin_ns` (a raw
 * bbx_monotonic_ns reading), for example the server's in another process: the
 * monotonic clock is the machine's, so the readings agree. */
static inline void bbx_clock_init_at(bbx_clock *c, int64_t origin_ns) {
    c->origin_ns = origin_ns;
    bbx__store(&c->cached_us, 0, relaxed);
}

/* Microseconds since the clock was created. Any thread, no GIL, no allocation. */
static inline uint64_t bbx_clock_now_us(const bbx_clock *c) {
    int64_t d = bbx_monotonic_ns() - c->origin_ns;
    return d > 0 ? (uint64_t)(d / 1000) : 0;
}

/* Reads the clock and stores it as the cached value; returns it. */
static inline uint64_t bbx_clock_tick(bbx_clock *c) {
    uint64_t now = bbx_clock_now_us(c);
    /* relaxed: a lone value with no data published behind it. */
    bbx__store(&c->cached_us, now, relaxed);
    return now;
}

/* The value stored by the last bbx_clock_tick: one load, cheaper than a clock read. */
static inline uint64_t bbx_clock_cached_us(bbx_clock *c) {
    /* relaxed: pairs with the relaxed store in bbx_clock_tick (a lone value). */
    return bbx__load(&c->cached_us, relaxed);
}

/* ---- the block clock (audio callbacks) ---- */

/* Block start times that do not inherit the callback's wake-up lateness: frame n of
 * the stream is at anchor + n * 1e6 / sample_rate (integer µs), re-anchored at the
 * reading when it is more than max_error_us off (an xrun, a stall), and otherwise
 * moved once a second by a quarter of the least lateness seen plus the drift rate
 * learnt so far (a PI loop following the device's drift against the server clock).
 * The C twin of bbx_net.BlockClock: same arithmetic. */
typedef struct bbx_block_clock {
    int64_t anchor_us;
    int64_t frames;       /* frames since the anchor */
    int64_t max_error_us;
    int64_t error_us;     /* reading minus frame time, at the last block */
    int64_t min_err;
    int64_t rate_us;      /* drift learnt: µs the anchor moves per step */
    uint64_t reanchors;   /* re-anchors after the first block */
    uint32_t sample_rate;
    uint32_t block_size;
    uint32_t window;      /* blocks per drift step (about a second) */
    uint32_t seen;
    int started;
} bbx_block_clock;

/* max_error_us <= 0: the default, 4 blocks and at least 10 ms. Returns 0 on success,
 * -1 when sample_rate or block_size is 0. */
static inline int bbx_block_clock_init(bbx_block_clock *bc, uint32_t sample_rate,
                                       uint32_t block_size, int64_t max_error_us) {
    if (sample_rate == 0 || block_size == 0) {
        return -1;
    }
    memset(bc, 0, sizeof(*bc));
    bc->sample_rate = sample_rate;
    bc->block_size = block_size;
    if (max_error_us <= 0) {
        int64_t block_us = (int64_t)block_size * 1000000 / (int64_t)sample_rate;
        max_error_us = 4 * block_us > 10000 ? 4 * block_us : 10000;
    }
    bc->max_error_us = max_error_us;
    bc->window = sample_rate / block_size > 0 ? sample_rate / block_size : 1;
    return 0;
}

/* The start (server-clock µs) of the block about to be rendered: call once per block
 * with the clock read at the top of the callback (bbx_clock_now_us) and the block's
 * frames (0: block_size). No allocation, no lock, no system call. */
static inline uint64_t bbx_block_clock_next(bbx_block_clock *bc, uint64_t now_us,
                                            uint32_t frames) {
    int64_t now = (int64_t)now_us;
    int64_t n = frames ? (int64_t)frames : (int64_t)bc->block_size;
    if (!bc->started) {
        bc->started = 1;
        bc->anchor_us = now;
        bc->frames = 0;
        bc->seen = 0;
    }
    int64_t start = bc->anchor_us + bc->frames * 1000000 / (int64_t)bc->sample_rate;
    int64_t err = now - start;
    bc->error_us = err;
    if (err > bc->max_error_us || -err > bc->max_error_us) {
        bc->reanchors++;
        bc->anchor_us = now;
        bc->frames = 0;
        bc->seen = 0;
        start = now;
    } else {
        if (bc->seen == 0 || err < bc->min_err) {
            bc->min_err = err;
        }
        bc->seen++;
        if (bc->seen >= bc->window) {
            /* A PI loop; C's division truncates towards zero, as the twin's _div. */
            bc->rate_us += bc->min_err / 16;
            bc->anchor_us += bc->min_err / 4 + bc->rate_us;
            bc->seen = 0;
        }
    }
    bc->frames += n;
    return start > 0 ? (uint64_t)start : 0;
}

#ifdef __cplusplus
}
#endif

#endif /* BBX_NET_H */
