/* A host in another process: attaches a shared segment by name, drains `total`
 * sequence-numbered messages (as tests/test_ring.py sends them) with drain_block,
 * checks their order, then pushes `frames` visualization frames whose floats are
 * frame*10 + i.  Valid C11 and C++17: the tests build it both ways.
 * Usage: shm_host NAME TOTAL FRAMES */
#include "bbx_net/bbx_shm.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s NAME TOTAL FRAMES\n", argv[0]);
        return 2;
    }
    bbx_shm shm;
    if (bbx_shm_attach(argv[1], &shm) != 0) {
        perror("bbx_shm_attach");
        return 3;
    }
    uint64_t total = strtoull(argv[2], NULL, 10);
    uint64_t frames = strtoull(argv[3], NULL, 10);
    static bbx_event events[256];
    uint64_t seq = 0, bad = 0;
    int64_t deadline = bbx_monotonic_ns() + (int64_t)60 * 1000000000;
    while (seq < total) {
        size_t n = bbx_ring_drain_block(shm.ring, events, 256, bbx_clock_now_us(&shm.clock),
                                        48000, 256);
        for (size_t i = 0; i < n; i++) {
            const bbx_message *m = &events[i].message;
            if (m->node_id_lo != seq || m->timestamp_us != seq ||
                m->param_hash != (uint32_t)seq) {
                bad++;
            }
            seq++;
        }
        if (n == 0 && bbx_monotonic_ns() > deadline) {
            break;
        }
    }
    float data[8];
    uint64_t pushed = 0;
    for (uint64_t f = 0; f < frames; f++) {
        for (int i = 0; i < 8; i++) {
            data[i] = (float)(f * 10 + (uint64_t)i);
        }
        if (shm.viz != NULL && bbx_viz_try_push(shm.viz, (uint32_t)f % 3, data, 8, f) == 1) {
            pushed++;
        }
    }
    printf("received %llu bad %llu pushed %llu clock %lld\n", (unsigned long long)seq,
           (unsigned long long)bad, (unsigned long long)pushed,
           (long long)shm.segment->clock_origin_ns);
    bbx_shm_detach(&shm);
    return 0;
}
