/* The header must not change what later system headers declare: with -std=gnu11 (or
 * C++), <math.h> after it still has M_PI and <unistd.h> still has usleep, which a
 * feature-test macro defined by the header (_POSIX_C_SOURCE) would hide. */
#include "bbx_net/bbx_net.h"

#include <math.h>
#include <stdio.h>
#include <unistd.h>

int main(void) {
    usleep(1);
    printf("%.5f %lld\n", M_PI, (long long)(bbx_monotonic_ns() > 0));
    return 0;
}
