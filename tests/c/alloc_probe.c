/* The consumer path under a heap-allocation counter (valgrind).
 *
 * Usage: alloc_probe ITERATIONS
 * Construction allocates twice; every iteration then pushes, pops, drains, drains a
 * block (with scheduled events held across blocks), drains a block from two rings at
 * once (bbx_rings_drain_block) and ticks the clock.  The test runs
 * it with 1 and with many iterations: equal allocation counts prove the loop allocates
 * nothing.  Built with -DBBX_PROBE_ALLOCATE it allocates in the loop on purpose, which
 * the test uses to show the check would catch it. */
#include "bbx_net/bbx_net.h"
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long iterations = argc > 1 ? atol(argv[1]) : 1;
    size_t capacity = 64, schedule = 128;
    size_t size = bbx_ring_footprint(capacity, schedule);
    void *mem = malloc(size);
    bbx_ring *ring = bbx_ring_init(mem, size, capacity, schedule);
    void *mem2 = malloc(size);
    bbx_ring *second = bbx_ring_init(mem2, size, capacity, schedule);
    if (ring == NULL || second == NULL) {
        return 2;
    }
    bbx_ring *rings[2] = {ring, second};
    bbx_clock clock;
    bbx_clock_init(&clock);
    bbx_block_clock blocks;
    if (bbx_block_clock_init(&blocks, 48000, 256, 0) != 0) {
        return 2;
    }
    bbx_message m;
    memset(&m, 0, sizeof m);
    bbx_message out[16];
    bbx_event events[32];
    uint64_t checksum = 0, block_start = 0;
    for (long i = 0; i < iterations; i++) {
        for (int k = 0; k < 48; k++) {
            m.type = (uint32_t)(k & 1);
            m.param_hash = bbx_hash_param_name("gain", 4);
            m.payload_kind = BBX_PAYLOAD_VALUE;
            m.payload[0] = (float)k;
            m.flags = (k % 3 == 0) ? BBX_FLAG_SCHEDULED : 0;
            m.timestamp_us = block_start + (uint64_t)(k * 700);
            bbx_ring_try_push(ring, &m);
            m.timestamp_us += 350;
            bbx_ring_try_push(second, &m);
        }
        bbx_message one;
        checksum += (uint64_t)bbx_ring_pop(ring, &one);
        checksum += bbx_ring_drain(ring, out, 8);
        size_t n = bbx_ring_drain_block(ring, events, 32, block_start, 48000, 256);
        for (size_t e = 0; e < n; e++) {
            checksum += events[e].sample_offset;
        }
        n = bbx_rings_drain_block(rings, 2, events, 32, block_start, 48000, 256);
        for (size_t e = 0; e < n; e++) {
            checksum += events[e].sample_offset;
        }
        checksum += bbx_ring_len(ring) + bbx_ring_pending(ring) + bbx_clock_tick(&clock) % 2;
        checksum += bbx_clock_cached_us(&clock) % 2 + bbx_clock_now_us(&clock) % 2;
        checksum += bbx_block_clock_next(&blocks, bbx_clock_now_us(&clock), 0) % 2;
        block_start += 5333;
#ifdef BBX_PROBE_ALLOCATE
        void *volatile leak = malloc(16);
        free(leak);
#endif
    }
    printf("checksum %llu dropped %llu\n", (unsigned long long)checksum,
           (unsigned long long)bbx_ring_dropped(ring));
    free(mem);
    free(mem2);
    return 0;
}
