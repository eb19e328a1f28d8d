/*
 * bbx_shm.h -- attach a C or C++ audio host to a bbx_net server in another process.
 *
 * The server (`bbx-net --shm NAME`, or `bbx_net.SharedSegment.create` in Python) lays
 * its rings out in a POSIX shared-memory object; this header maps it by name:
 *
 *     bbx_shm shm;
 *     if (bbx_shm_attach("/bbx-show", &shm) != 0) { ... errno says why ... }
 *     ... bbx_ring_drain_block(shm.ring, ...), bbx_clock_now_us(&shm.clock),
 *         bbx_viz_try_push(shm.viz, ...) from the audio callback ...
 *     bbx_shm_detach(&shm);
 *
 * Attaching and detaching are system calls: do them outside the audio callback.  The
 * ring functions in bbx_net.h stay allocation-, lock- and system-call-free.  Link with
 * -lrt on glibc older than 2.34.  POSIX only.
 */
#ifndef BBX_SHM_H
#define BBX_SHM_H

#include "bbx_net.h"

#if defined(_WIN32)
#error "bbx_shm.h is POSIX-only (shm_open/mmap)"
#endif

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bbx_shm {
    bbx_clock clock;      /* reads the server's clock (its origin is in the segment) */
    void *base;           /* the mapping */
    size_t size;          /* bytes mapped */
    bbx_segment *segment; /* == base */
    bbx_ring *ring;       /* server -> audio messages: drain it from the callback */
    bbx_viz_ring *viz;    /* audio -> server frames, or NULL when the segment has none */
} bbx_shm;

/* Maps the segment `name` (for example "/bbx-show") read-write and checks it.
 * Returns 0, or -1 with errno set: ENOENT (no such segment), EPROTO (not a bbx_net
 * segment of this ABI, or still being laid out), or what shm_open/mmap set. */
static inline int bbx_shm_attach(const char *name, bbx_shm *out) {
    memset((void *)out, 0, sizeof(*out));
    int fd = shm_open(name, O_RDWR, 0);
    if (fd < 0) {
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    if (st.st_size < (off_t)sizeof(bbx_segment)) {
        close(fd);
        errno = EPROTO;
        return -1;
    }
    size_t size = (size_t)st.st_size;
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd); /* the mapping stays */
    if (base == MAP_FAILED) {
        errno = e;
        return -1;
    }
    bbx_segment *seg = bbx_segment_attach(base, size);
    if (seg == NULL) {
        munmap(base, size);
        errno = EPROTO;
        return -1;
    }
    out->base = base;
    out->size = size;
    out->segment = seg;
    out->ring = bbx_segment_ring(seg);
    out->viz = bbx_segment_viz(seg);
    bbx_clock_init_at(&out->clock, seg->clock_origin_ns);
    return 0;
}

/* Unmaps the segment; the pointers in *shm are invalid afterwards. */
static inline void bbx_shm_detach(bbx_shm *shm) {
    if (shm->base != NULL) {
        munmap(shm->base, shm->size);
    }
    memset((void *)shm, 0, sizeof(*shm));
}

#ifdef __cplusplus
}
#endif

#endif /* BBX_SHM_H */
