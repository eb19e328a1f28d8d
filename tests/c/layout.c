/* Prints sizeof/offsetof of the shipped structs as the C compiler lays them out. */
#include "bbx_net/bbx_net.h"
#include <stdio.h>

#define FIELD(s, f) printf("%s.%s %zu\n", #s, #f, offsetof(s, f))

int main(void) {
    printf("sizeof.bbx_message %zu\n", sizeof(bbx_message));
    printf("sizeof.bbx_event %zu\n", sizeof(bbx_event));
    FIELD(bbx_message, type);
    FIELD(bbx_message, param_hash);
    FIELD(bbx_message, payload_kind);
    FIELD(bbx_message, payload);
    FIELD(bbx_message, flags);
    FIELD(bbx_message, node_id_hi);
    FIELD(bbx_message, node_id_lo);
    FIELD(bbx_message, timestamp_us);
    FIELD(bbx_event, message);
    FIELD(bbx_event, sample_offset);
    FIELD(bbx_event, reserved);
    printf("hash.gain %u\n", (unsigned)bbx_hash_param_name("gain", 4));
    return 0;
}
