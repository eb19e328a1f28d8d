/* Exercises the header after whatever the build put first (-include), in C or C++:
 * a ring in malloc'd memory, a visualization ring, the clock and the block clock. */
#include "bbx_net/bbx_net.h"

#include <stdio.h>
#include <stdlib.h>

int main(void) {
    size_t size = bbx_ring_footprint(8, 8);
    void *mem = malloc(size);
    bbx_ring *r = bbx_ring_init(mem, size, 8, 8);
    if (r == NULL || bbx_ring_attach(mem, size) != r) return 1;
    bbx_message m;
    memset(&m, 0, sizeof m);
    m.param_hash = bbx_hash_param_name("gain", 4);
    m.payload[0] = 0.5f;
    if (!bbx_ring_try_push(r, &m)) return 2;
    bbx_event ev[4];
    if (bbx_ring_drain_block(r, ev, 4, 0, 48000, 256) != 1) return 3;
    if (ev[0].message.param_hash != 0x1b5426feu) return 4;
    size_t vsize = bbx_viz_footprint(4, 3);
    void *vmem = malloc(vsize);
    bbx_viz_ring *v = bbx_viz_init(vmem, vsize, 4, 3);
    float in[3] = {1.0f, 2.0f, 3.0f}, out[3];
    bbx_viz_frame head;
    if (bbx_viz_try_push(v, 7, in, 3, 9) != 1 || bbx_viz_pop(v, &head, out, 3) != 1) return 5;
    if (head.stream != 7 || head.count != 3 || out[2] != 3.0f) return 6;
    bbx_clock c;
    bbx_clock_init(&c);
    bbx_block_clock bc;
    bbx_block_clock_init(&bc, 48000, 256, 0);
    uint64_t start = bbx_block_clock_next(&bc, bbx_clock_now_us(&c), 0);
    printf("ok %llu %zu %zu\n", (unsigned long long)start, offsetof(bbx_ring, read),
           sizeof(bbx_ring));
    free(vmem);
    free(mem);
    return 0;
}
