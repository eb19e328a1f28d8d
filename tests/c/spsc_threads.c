/* C producer thread -> C consumer thread: every message once, in order.
 * Usage: spsc_threads CAPACITY COUNT [block]
 * With "block" the consumer uses drain_block (unscheduled events) instead of drain. */
#include "bbx_net/bbx_net.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static bbx_ring *ring;
static uint64_t count;
static int use_block;

static void *produce(void *arg) {
    (void)arg;
    bbx_message m;
    memset(&m, 0, sizeof m);
    for (uint64_t seq = 0; seq < count;) {
        m.timestamp_us = seq;
        m.node_id_lo = ~seq;
        m.param_hash = (uint32_t)(seq * 2654435761u);
        if (bbx_ring_try_push(ring, &m)) {
            seq++;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        return 2;
    }
    size_t capacity = (size_t)atol(argv[1]);
    count = (uint64_t)atoll(argv[2]);
    use_block = argc > 3;
    size_t size = bbx_ring_footprint(capacity, 8);
    void *mem = malloc(size);
    ring = bbx_ring_init(mem, size, capacity, 8);
    pthread_t producer;
    pthread_create(&producer, NULL, produce, NULL);
    bbx_message out[16];
    bbx_event events[16];
    uint64_t expected = 0, errors = 0;
    int64_t deadline = bbx_monotonic_ns() + (int64_t)120 * 1000000000;
    while (expected < count && bbx_monotonic_ns() < deadline) {
        size_t n;
        if (use_block) {
            n = bbx_ring_drain_block(ring, events, 16, 0, 48000, 64);
            for (size_t i = 0; i < n; i++) out[i % 16] = events[i].message;
        } else {
            n = bbx_ring_drain(ring, out, 16);
        }
        for (size_t i = 0; i < n; i++) {
            const bbx_message *m = use_block ? &events[i].message : &out[i];
            uint64_t seq = expected + i;
            if (m->timestamp_us != seq || m->node_id_lo != ~seq ||
                m->param_hash != (uint32_t)(seq * 2654435761u)) {
                errors++;
            }
        }
        expected += n;
    }
    pthread_join(producer, NULL);
    printf("received %llu errors %llu dropped %llu\n", (unsigned long long)expected,
           (unsigned long long)errors, (unsigned long long)bbx_ring_dropped(ring));
    free(mem);
    return errors != 0 || expected != count;
}
