/*
 * jack_host.c -- a JACK client steered by phones: a sine whose gain and frequency
 * follow the `gain` and `freq` parameters, sample-accurately, with the server in
 * another process (`bbx-net serve --shm /my-show`).
 *
 *   cc -std=c11 -O2 -I"$(python -c 'import bbx_net; print(bbx_net.get_include())')" \
 *      examples/jack_host.c -o jack_host -ljack -lm
 *   ./jack_host /my-show                 # runs until Ctrl-C
 *   ./jack_host /my-show 10 out.f32      # 10 s, records what it rendered (tests)
 *   ./jack_host - 10 probe.f32           # no ring: a probe of the graph's timing
 *
 * The process callback drains the ring with bbx_ring_drain_block, applies each event
 * at its sample offset and sends a peak meter back to the phones with
 * bbx_viz_try_push: no allocation, no lock, no system call. With a recording file it
 * also writes, per block, its first frame and server-clock start (out.f32.blocks) and
 * its own callback durations, and counts xruns while its own callback ran long.
 */
#define _POSIX_C_SOURCE 200809L /* this program's own choice: nanosleep */

#include "bbx_net/bbx_shm.h"

#include <jack/jack.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#define GAIN_HASH 0x1b5426feu /* bbx_hash_param_name("gain", 4) */
#define FREQ_HASH 0x8db3dbf7u /* bbx_hash_param_name("freq", 4) */
#define TWO_PI 6.283185307179586

typedef struct block_log {
    uint64_t first_frame;
    uint64_t start_us;
    uint32_t callback_ns; /* how long this callback ran */
    uint32_t events;      /* events it applied */
    uint32_t late_ns;     /* from the cycle's start to the callback's first line */
    uint32_t reserved;
} block_log;

static bbx_shm shm;
static jack_port_t *port;
static jack_client_t *jack;
static int probe; /* SHM_NAME "-": no ring, only a probe of the graph's timing */
static bbx_block_clock blocks;
static bbx_event events[256];
static double gain = 0.5, freq = 440.0, phase = 0.0;
static uint32_t rate;
static uint64_t frames_done;
/* Recording (preallocated before the stream starts). */
static float *recording;
static block_log *log_blocks;
static uint64_t record_frames, max_blocks, n_blocks;
static _Atomic(uint64_t) xruns, xruns_host;
static _Atomic(uint32_t) last_callback_ns;
static volatile sig_atomic_t stop;

static int process(jack_nframes_t nframes, void *arg) {
    (void)arg;
    int64_t t0 = bbx_monotonic_ns();
    uint32_t late_ns = (uint32_t)((double)jack_frames_since_cycle_start(jack) * 1e9 / rate);
    float *out = (float *)jack_port_get_buffer(port, nframes);
    uint64_t start = 0;
    size_t n = 0;
    if (!probe) {
        start = bbx_block_clock_next(&blocks, bbx_clock_now_us(&shm.clock), nframes);
        n = bbx_ring_drain_block(shm.ring, events, 256, start, rate, nframes);
    }
    size_t e = 0;
    float peak = 0.0f;
    for (uint32_t i = 0; i < nframes; i++) {
        while (e < n && events[e].sample_offset <= i) {
            const bbx_message *m = &events[e].message;
            if (m->type == BBX_PARAMETER_CHANGE && m->param_hash == GAIN_HASH) {
                gain = m->payload[0];
            } else if (m->type == BBX_PARAMETER_CHANGE && m->param_hash == FREQ_HASH) {
                freq = m->payload[0];
            }
            e++;
        }
        float v = (float)(gain * sin(phase));
        phase += TWO_PI * freq / rate;
        if (phase > TWO_PI) phase -= TWO_PI;
        out[i] = v;
        if (fabsf(v) > peak) peak = fabsf(v);
    }
    if (!probe && shm.viz != NULL) {
        bbx_viz_try_push(shm.viz, 0, &peak, 1, start);
    }
    if (recording != NULL) {
        for (uint32_t i = 0; i < nframes && frames_done + i < record_frames; i++) {
            recording[frames_done + i] = out[i];
        }
        if (n_blocks < max_blocks) {
            log_blocks[n_blocks].first_frame = frames_done;
            log_blocks[n_blocks].start_us = start;
            log_blocks[n_blocks].events = (uint32_t)n;
            log_blocks[n_blocks].callback_ns = (uint32_t)(bbx_monotonic_ns() - t0);
            log_blocks[n_blocks].late_ns = late_ns;
            n_blocks++;
        }
    }
    frames_done += nframes;
    atomic_store_explicit(&last_callback_ns, (uint32_t)(bbx_monotonic_ns() - t0),
                          memory_order_relaxed);
    return 0;
}

/* An xrun: ours if our last callback took more than half the period. */
static int on_xrun(void *arg) {
    jack_client_t *client = (jack_client_t *)arg;
    double period_ns = 1e9 * jack_get_buffer_size(client) / jack_get_sample_rate(client);
    atomic_fetch_add(&xruns, 1);
    if (atomic_load_explicit(&last_callback_ns, memory_order_relaxed) > period_ns / 2) {
        atomic_fetch_add(&xruns_host, 1);
    }
    return 0;
}

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s SHM_NAME [SECONDS [RECORDING.f32]]\n", argv[0]);
        return 2;
    }
    double seconds = argc > 2 ? atof(argv[2]) : 0.0;
    const char *record_path = argc > 3 ? argv[3] : NULL;
    probe = strcmp(argv[1], "-") == 0;
    if (!probe && bbx_shm_attach(argv[1], &shm) != 0) {
        perror("bbx_shm_attach");
        return 3;
    }
    jack_status_t status;
    jack_client_t *client =
        jack_client_open(probe ? "bbx_probe" : "bbx_jack_host", JackNoStartServer, &status);
    jack = client;
    if (client == NULL) {
        fprintf(stderr, "cannot connect to JACK (status 0x%x)\n", (unsigned)status);
        return 4;
    }
    rate = jack_get_sample_rate(client);
    uint32_t period = jack_get_buffer_size(client);
    bbx_block_clock_init(&blocks, rate, period, 0);
    if (record_path != NULL && seconds > 0) {
        record_frames = (uint64_t)(seconds * rate) + period;
        max_blocks = record_frames / period + 2;
        recording = (float *)calloc(record_frames, sizeof(float));
        log_blocks = (block_log *)calloc(max_blocks, sizeof(block_log));
        if (recording == NULL || log_blocks == NULL) return 5;
    }
    port = jack_port_register(client, "out", JACK_DEFAULT_AUDIO_TYPE, JackPortIsOutput, 0);
    jack_set_process_callback(client, process, NULL);
    jack_set_xrun_callback(client, on_xrun, client);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (jack_activate(client) != 0) {
        fprintf(stderr, "cannot activate the JACK client\n");
        return 6;
    }
    const char **playback = jack_get_ports(client, NULL, NULL, JackPortIsPhysical | JackPortIsInput);
    if (playback != NULL && playback[0] != NULL) {
        jack_connect(client, jack_port_name(port), playback[0]);
    }
    jack_free(playback);
    printf("ready %u %u\n", rate, period);
    fflush(stdout);
    int64_t end = bbx_monotonic_ns() + (int64_t)(seconds * 1e9);
    while (!stop && (seconds <= 0 || bbx_monotonic_ns() < end)) {
        struct timespec nap = {0, 10000000};
        nanosleep(&nap, NULL);
    }
    jack_deactivate(client);
    jack_client_close(client);
    uint32_t worst = 0;
    for (uint64_t b = 0; b < n_blocks; b++) {
        if (log_blocks[b].callback_ns > worst) worst = log_blocks[b].callback_ns;
    }
    if (recording != NULL) {
        char path[4096];
        FILE *f = fopen(record_path, "wb");
        if (f == NULL) return 7;
        uint64_t frames = frames_done < record_frames ? frames_done : record_frames;
        fwrite(recording, sizeof(float), frames, f);
        fclose(f);
        snprintf(path, sizeof path, "%s.blocks", record_path);
        f = fopen(path, "wb");
        if (f == NULL) return 7;
        fwrite(log_blocks, sizeof(block_log), n_blocks, f);
        fclose(f);
    }
    printf("done frames %llu blocks %llu xruns %llu host_xruns %llu worst_callback_us %.1f\n",
           (unsigned long long)frames_done, (unsigned long long)n_blocks,
           (unsigned long long)atomic_load(&xruns), (unsigned long long)atomic_load(&xruns_host),
           worst / 1000.0);
    if (!probe) {
        bbx_shm_detach(&shm);
    }
    return 0;
}
