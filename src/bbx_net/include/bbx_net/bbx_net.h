/*
 * bbx_net.h -- the C API of bbx_net for audio hosts written in C, C++ or Cython.
 *
 * Everything here is `static inline`: the Python extension and a C host compile the
 * same code, and the host links nothing.  Include it from the directory returned by
 * `bbx_net.get_include()` and compile as C11 (or C++20 with `std::atomic_ref`-free
 * C11 atomics support, e.g. gcc/clang in C mode).
 *
 * What crosses to the audio thread is a fixed-size `bbx_message` (48 bytes, the same
 * bytes as `bbx_net.MESSAGE_DTYPE`).  The ring is single-producer (the server's event
 * loop thread) / single-consumer (the audio thread).  Consumer functions never
 * allocate, never lock, never call into Python and never block: call them from the
 * audio callback.
 *
 * Lifetime rule: the ring belongs to the Python `NetBufferConsumer` object that hands
 * out its address (`consumer.ring_address` or the capsule named BBX_RING_CAPSULE_NAME).
 * Keep that Python object alive for as long as any C code holds the pointer.
 */
#ifndef BBX_NET_H
#define BBX_NET_H

/* clock_gettime under strict -std=c11; include this header first, or build as gnu11. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200112L
#endif

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- platform: C11 atomics, alignment, monotonic clock (the one platform spot) ---- */
#if defined(__cplusplus)
/* C++23 provides <stdatomic.h> with the _Atomic(T) macro used below. */
#if __cplusplus <= 202002L
#error "bbx_net.h needs C11, or C++23 for <stdatomic.h>"
#endif
#include <stdatomic.h>
#define BBX_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#include <stdatomic.h>
#include <stdalign.h>
#define BBX_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#else
#include <time.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever the struct layouts below change. Checked by the capsule importer. */
#define BBX_NET_ABI_VERSION 1
/* Name of the PyCapsule that carries a `bbx_ring *` (see NetBufferConsumer.capsule). */
#define BBX_RING_CAPSULE_NAME "bbx_net._ring.bbx_ring_v1"
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

typedef struct bbx_ring {
    /* Line 0: fixed at construction, read-only afterwards (shared freely). */
    alignas(BBX_CACHE_LINE) bbx_message *slots;
    size_t n_slots;          /* capacity + 1: one spare slot tells full from empty */
    size_t capacity;
    bbx_pending *pending;    /* consumer's schedule storage */
    size_t pending_capacity;
    uint32_t abi_version;

    /* Each index has a line of its own: the owner writes it, the other side reads it.
     * The owner's private state sits on a further line, so a producer spinning on a
     * full ring (or a consumer polling an empty one) does not invalidate the line the
     * other side is reading. */
    /* Line 1: written by the producer, read by the consumer. */
    alignas(BBX_CACHE_LINE) _Atomic(size_t) write; /* next slot to fill */
    /* Line 2: the producer's own. */
    alignas(BBX_CACHE_LINE) size_t read_cache; /* copy of `read`, reloaded when full */
    _Atomic(uint64_t) dropped; /* pushes refused because the ring was full */
    /* Line 3: written by the consumer, read by the producer. */
    alignas(BBX_CACHE_LINE) _Atomic(size_t) read; /* next slot to take */
    /* Line 4: the consumer's own. */
    alignas(BBX_CACHE_LINE) size_t write_cache; /* copy of `write`, reloaded when empty */
    _Atomic(size_t) pending_count; /* messages held in `pending` (atomic: read by stats) */
    uint64_t pending_seq;
    _Atomic(uint64_t) schedule_full; /* drain_block calls that left messages in the ring
                                       because the schedule storage was full */
} bbx_ring;

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
 * Call once, before either thread uses the ring; this is the only step that needs
 * memory, and the caller provides it. */
static inline bbx_ring *bbx_ring_init(void *mem, size_t mem_size, size_t capacity,
                                      size_t pending_capacity) {
    size_t need = bbx_ring_footprint(capacity, pending_capacity);
    if (mem == NULL || need == 0 || mem_size < need) {
        return NULL;
    }
    memset(mem, 0, need);
    uintptr_t p = ((uintptr_t)mem + (BBX_CACHE_LINE - 1)) & ~(uintptr_t)(BBX_CACHE_LINE - 1);
    bbx_ring *r = (bbx_ring *)p;
    r->slots = (bbx_message *)(void *)(r + 1);
    r->n_slots = capacity + 1;
    r->capacity = capacity;
    r->pending = (bbx_pending *)(void *)(r->slots + r->n_slots);
    r->pending_capacity = pending_capacity;
    r->abi_version = BBX_NET_ABI_VERSION;
    atomic_init(&r->write, 0);
    atomic_init(&r->read, 0);
    atomic_init(&r->dropped, 0);
    atomic_init(&r->pending_count, 0);
    atomic_init(&r->schedule_full, 0);
    r->read_cache = 0;
    r->write_cache = 0;
    r->pending_seq = 0;
    return r;
}

static inline size_t bbx__ring_distance(const bbx_ring *r, size_t from, size_t to) {
    return to >= from ? to - from : r->n_slots - from + to;
}

/* Producer: copies *m into the ring. Returns 1, or 0 (and counts a drop) when full. */
static inline int bbx_ring_try_push(bbx_ring *r, const bbx_message *m) {
    /* relaxed: only this thread stores `write`. */
    size_t w = atomic_load_explicit(&r->write, memory_order_relaxed);
    size_t next = w + 1 == r->n_slots ? 0 : w + 1;
    if (next == r->read_cache) {
        /* acquire: pairs with the release store of `read` in bbx_ring_pop/drain, so the
         * consumer has finished copying out the slot we are about to overwrite. */
        r->read_cache = atomic_load_explicit(&r->read, memory_order_acquire);
        if (next == r->read_cache) {
            /* relaxed load + store, not a locked add: only this thread writes it, and
             * other threads read it as a statistic with nothing behind it. */
            atomic_store_explicit(
                &r->dropped, atomic_load_explicit(&r->dropped, memory_order_relaxed) + 1,
                memory_order_relaxed);
            return 0;
        }
    }
    r->slots[w] = *m;
    /* release: publishes slot w to the acquire load of `write` in pop/drain. */
    atomic_store_explicit(&r->write, next, memory_order_release);
    return 1;
}

/* Consumer: number of messages ready to take. Never blocks. */
static inline size_t bbx__ring_readable(bbx_ring *r, size_t rd, size_t want) {
    size_t avail = bbx__ring_distance(r, rd, r->write_cache);
    if (avail < want) {
        /* acquire: pairs with the release store of `write` in bbx_ring_try_push; the
         * slots up to the loaded index are fully written. */
        r->write_cache = atomic_load_explicit(&r->write, memory_order_acquire);
        avail = bbx__ring_distance(r, rd, r->write_cache);
    }
    return avail;
}

/* Consumer: copies the oldest message into *out. Returns 1, or 0 when empty.
 * Audio-thread safe: no allocation, no lock, no system call. */
static inline int bbx_ring_pop(bbx_ring *r, bbx_message *out) {
    /* relaxed: only this thread stores `read`. */
    size_t rd = atomic_load_explicit(&r->read, memory_order_relaxed);
    if (bbx__ring_readable(r, rd, 1) == 0) {
        return 0;
    }
    *out = r->slots[rd];
    /* release: hands slot rd back to the producer's acquire load of `read`. */
    atomic_store_explicit(&r->read, rd + 1 == r->n_slots ? 0 : rd + 1, memory_order_release);
    return 1;
}

/* Consumer: copies up to max_out messages, oldest first. Returns the count.
 * Audio-thread safe: no allocation, no lock, no system call. */
static inline size_t bbx_ring_drain(bbx_ring *r, bbx_message *out, size_t max_out) {
    /* relaxed: only this thread stores `read`. */
    size_t rd = atomic_load_explicit(&r->read, memory_order_relaxed);
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
    memcpy(out, r->slots + rd, first * sizeof(bbx_message));
    memcpy(out + first, r->slots, (n - first) * sizeof(bbx_message));
    size_t nr = rd + n;
    if (nr >= r->n_slots) {
        nr -= r->n_slots;
    }
    /* release: hands the n slots back to the producer's acquire load of `read`. */
    atomic_store_explicit(&r->read, nr, memory_order_release);
    return n;
}

/* Either side: messages in the ring (a snapshot; exact when the other side is idle). */
static inline size_t bbx_ring_len(bbx_ring *r) {
    /* acquire on both: pairs with the release stores in push and pop. */
    size_t w = atomic_load_explicit(&r->write, memory_order_acquire);
    size_t rd = atomic_load_explicit(&r->read, memory_order_acquire);
    return bbx__ring_distance(r, rd, w);
}

/* Statistics, readable from any thread (relaxed: lone counters, nothing behind them). */
static inline uint64_t bbx_ring_dropped(bbx_ring *r) {
    return atomic_load_explicit(&r->dropped, memory_order_relaxed);
}

/* Messages held in the schedule storage by bbx_ring_drain_block (declared below). */
static inline size_t bbx_ring_pending(bbx_ring *r) {
    return atomic_load_explicit(&r->pending_count, memory_order_relaxed);
}

static inline uint64_t bbx_ring_schedule_full(bbx_ring *r) {
    return atomic_load_explicit(&r->schedule_full, memory_order_relaxed);
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
    bbx_pending *h = r->pending;
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
    bbx_pending *h = r->pending;
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
    size_t n_pending = atomic_load_explicit(&r->pending_count, memory_order_relaxed);
    /* Take at most what is in the ring now, so a busy producer cannot keep us here. */
    size_t budget = bbx__ring_readable(
        r, atomic_load_explicit(&r->read, memory_order_relaxed), SIZE_MAX);
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
            size_t rd = atomic_load_explicit(&r->read, memory_order_relaxed);
            for (size_t k = 0; k < take; k++) {
                bbx__heap_push(r, n_pending++, &r->slots[rd]);
                rd = rd + 1 == r->n_slots ? 0 : rd + 1;
            }
            budget -= take;
            /* release: hands the copied slots back to the producer's acquire load of
             * `read` in bbx_ring_try_push. */
            atomic_store_explicit(&r->read, rd, memory_order_release);
        }
        /* 2. Emit due events in (key, seq) order. */
        size_t emitted = 0;
        while (n_out < max_out && n_pending > 0) {
            const bbx_pending *top = &r->pending[0];
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
        atomic_store_explicit(
            &r->schedule_full,
            atomic_load_explicit(&r->schedule_full, memory_order_relaxed) + 1,
            memory_order_relaxed);
    }
    /* relaxed: only this thread writes it; others read it as a statistic. */
    atomic_store_explicit(&r->pending_count, n_pending, memory_order_relaxed);
    return n_out;
}

/* ---- the clock ---- */

typedef struct bbx_clock {
    int64_t origin_ns;            /* raw monotonic reading at creation */
    alignas(BBX_CACHE_LINE) _Atomic(uint64_t) cached_us; /* set by bbx_clock_tick */
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
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
#endif
}

static inline void bbx_clock_init(bbx_clock *c) {
    c->origin_ns = bbx_monotonic_ns();
    atomic_init(&c->cached_us, 0);
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
    atomic_store_explicit(&c->cached_us, now, memory_order_relaxed);
    return now;
}

/* The value stored by the last bbx_clock_tick: one load, cheaper than a clock read. */
static inline uint64_t bbx_clock_cached_us(bbx_clock *c) {
    /* relaxed: pairs with the relaxed store in bbx_clock_tick (a lone value). */
    return atomic_load_explicit(&c->cached_us, memory_order_relaxed);
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
