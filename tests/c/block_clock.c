/* Reads "now_us frames" lines, prints each block start from bbx_block_clock, then
 * "reanchors N". argv: sample_rate block_size max_error_us. */
#include "bbx_net/bbx_net.h" /* first: it sets the feature-test macros it needs */

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    bbx_block_clock bc;
    if (bbx_block_clock_init(&bc, (uint32_t)atol(argv[1]), (uint32_t)atol(argv[2]),
                             (int64_t)atoll(argv[3])) != 0) {
        return 3;
    }
    unsigned long long now;
    unsigned frames;
    while (scanf("%llu %u", &now, &frames) == 2) {
        printf("%llu\n", (unsigned long long)bbx_block_clock_next(&bc, (uint64_t)now, frames));
    }
    printf("reanchors %llu\n", (unsigned long long)bc.reanchors);
    return 0;
}
