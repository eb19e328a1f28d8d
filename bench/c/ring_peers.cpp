// C-side ring measurements: bbx_net's ring beside boost::lockfree::spsc_queue and
// JACK's jack_ringbuffer, all carrying the same 48-byte bbx_message records, plus a
// plain memcpy floor. Built and run by bench/bench_ring.py; prints one JSON object per
// measurement. Every figure is the median of several repeats.
//
// Build: g++ -std=c++23 -O2 -I<bbx_net.get_include()> ring_peers.cpp -ljack -lpthread
// (bbx_net.h compiles as C11 or C++23: the same static-inline code a C host uses.)
#include "bbx_net/bbx_net.h"

#include <boost/lockfree/spsc_queue.hpp>
#include <jack/ringbuffer.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using Msg = bbx_message;
using Clock = std::chrono::steady_clock;
static_assert(sizeof(Msg) == 48);

static inline void barrier() { asm volatile("" ::: "memory"); }

static double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct BbxQueue {
    static constexpr const char *name = "bbx_net";
    void *mem;
    bbx_ring *r;
    explicit BbxQueue(size_t cap) {
        size_t size = bbx_ring_footprint(cap, 0);
        mem = std::malloc(size);
        r = bbx_ring_init(mem, size, cap, 0);
    }
    ~BbxQueue() { std::free(mem); }
    bool push(const Msg &m) { return bbx_ring_try_push(r, &m); }
    bool pop(Msg *out) { return bbx_ring_pop(r, out); }
    size_t drain(Msg *out, size_t n) { return bbx_ring_drain(r, out, n); }
};

struct BoostQueue {
    static constexpr const char *name = "boost::lockfree::spsc_queue";
    boost::lockfree::spsc_queue<Msg> q;
    explicit BoostQueue(size_t cap) : q(cap) {}
    bool push(const Msg &m) { return q.push(m); }
    bool pop(Msg *out) { return q.pop(*out); }
    size_t drain(Msg *out, size_t n) { return q.pop(out, n); }
};

// JACK sizes its buffer to a power of two of bytes (minus one). So that all three
// queues hold the same number of messages, CAP is what JACK holds in 256 KiB.
static size_t jack_capacity(size_t bytes) {
    jack_ringbuffer_t *rb = jack_ringbuffer_create(bytes);
    size_t cap = jack_ringbuffer_write_space(rb) / sizeof(Msg);
    jack_ringbuffer_free(rb);
    return cap;
}

struct JackQueue {
    static constexpr const char *name = "jack_ringbuffer";
    jack_ringbuffer_t *rb;
    explicit JackQueue(size_t cap) {
        rb = jack_ringbuffer_create(cap * sizeof(Msg) + 1);
        if (jack_ringbuffer_write_space(rb) / sizeof(Msg) != cap) std::abort();
    }
    ~JackQueue() { jack_ringbuffer_free(rb); }
    bool push(const Msg &m) {
        if (jack_ringbuffer_write_space(rb) < sizeof(Msg)) return false;
        jack_ringbuffer_write(rb, reinterpret_cast<const char *>(&m), sizeof(Msg));
        return true;
    }
    bool pop(Msg *out) {
        if (jack_ringbuffer_read_space(rb) < sizeof(Msg)) return false;
        jack_ringbuffer_read(rb, reinterpret_cast<char *>(out), sizeof(Msg));
        return true;
    }
    size_t drain(Msg *out, size_t n) {
        size_t avail = jack_ringbuffer_read_space(rb) / sizeof(Msg);
        n = std::min(n, avail);
        jack_ringbuffer_read(rb, reinterpret_cast<char *>(out), n * sizeof(Msg));
        return n;
    }
};

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

static void emit(const std::string &bench, const char *impl, double value, const char *unit) {
    std::printf("{\"bench\": \"%s\", \"impl\": \"%s\", \"value\": %.4f, \"unit\": \"%s\"}\n",
                bench.c_str(), impl, value, unit);
    std::fflush(stdout);
}

static Msg make(uint64_t seq) {
    Msg m{};
    m.type = BBX_PARAMETER_CHANGE;
    m.param_hash = (uint32_t)seq;
    m.payload_kind = BBX_PAYLOAD_VALUE;
    m.payload[0] = 0.5f;
    m.timestamp_us = seq;
    return m;
}

static size_t CAP = 4096;  // set in main: messages JACK holds in 256 KiB (5461)
constexpr int REPEATS = 7;

// Floor: one 48-byte memcpy per message over arrays.
static void bench_memcpy_floor() {
    const size_t n_src = 4096;
    std::vector<Msg> src(n_src), dst(64);
    for (size_t i = 0; i < n_src; i++) src[i] = make(i);
    std::vector<double> runs;
    const size_t n = 20'000'000;
    for (int r = 0; r < REPEATS; r++) {
        auto t0 = Clock::now();
        for (size_t i = 0; i < n; i++) {
            std::memcpy(&dst[i & 63], &src[i & (n_src - 1)], sizeof(Msg));
            barrier();
        }
        runs.push_back(seconds_since(t0) * 1e9 / n);
    }
    emit("memcpy floor (48 B per message)", "plain array", median(runs), "ns/msg");
}

// Consumer cost on one thread: fill the ring (untimed), then time pop or drain.
template <class Q> static void bench_single_thread() {
    Q q(CAP);
    std::vector<Msg> out(64);
    std::vector<double> pop_runs, drain_runs, push_runs;
    const int rounds = 2000;
    for (int r = 0; r < REPEATS; r++) {
        double pop_s = 0, drain_s = 0, push_s = 0;
        for (int k = 0; k < rounds; k++) {
            Msg m = make(k);
            auto t0 = Clock::now();
            for (size_t i = 0; i < CAP; i++) q.push(m);
            push_s += seconds_since(t0);
            t0 = Clock::now();
            for (size_t i = 0; i < CAP; i++) {
                q.pop(&out[i & 63]);
                barrier();
            }
            pop_s += seconds_since(t0);
            for (size_t i = 0; i < CAP; i++) q.push(m);
            t0 = Clock::now();
            for (size_t got = 0; got < CAP;) {
                got += q.drain(out.data(), 64);
                barrier();
            }
            drain_s += seconds_since(t0);
        }
        double n = double(rounds) * CAP;
        push_runs.push_back(push_s * 1e9 / n);
        pop_runs.push_back(pop_s * 1e9 / n);
        drain_runs.push_back(drain_s * 1e9 / n);
    }
    emit("C push, one thread", Q::name, median(push_runs), "ns/msg");
    emit("C pop, one thread", Q::name, median(pop_runs), "ns/msg");
    emit("C drain by 64, one thread", Q::name, median(drain_runs), "ns/msg");
}

// Producer thread -> consumer thread, consumer busy-polling with drain(64).
template <class Q> static void bench_threads_busy() {
    const uint64_t n = 20'000'000;
    std::vector<double> runs;
    for (int r = 0; r < 5; r++) {
        Q q(CAP);
        auto t0 = Clock::now();
        std::thread producer([&] {
            for (uint64_t seq = 0; seq < n;) {
                if (q.push(make(seq))) seq++;
            }
        });
        Msg out[64];
        uint64_t got = 0, bad = 0;
        while (got < n) {
            size_t k = q.drain(out, 64);
            for (size_t i = 0; i < k; i++) bad += out[i].timestamp_us != got + i;
            got += k;
        }
        producer.join();
        if (bad) std::abort();
        runs.push_back(n / seconds_since(t0) / 1e6);
    }
    emit("C->C threads, busy consumer", Q::name, median(runs), "Mmsg/s");
}

// Producer thread -> an audio-callback-like consumer: sleep ~200 us, then drain all.
template <class Q> static void bench_threads_callback() {
    const uint64_t n = 4'000'000;
    std::vector<double> cost_runs, rate_runs;
    for (int r = 0; r < 5; r++) {
        Q q(CAP);
        auto t0 = Clock::now();
        std::thread producer([&] {
            for (uint64_t seq = 0; seq < n;) {
                if (q.push(make(seq))) seq++;
            }
        });
        std::vector<Msg> out(CAP);
        uint64_t got = 0, bad = 0;
        double drain_s = 0;
        while (got < n) {
            std::this_thread::sleep_for(std::chrono::microseconds(200));
            auto d0 = Clock::now();
            size_t k, total = 0;
            while ((k = q.drain(out.data() + total, CAP - total)) > 0) {
                total += k;
                if (total == CAP) break;
            }
            drain_s += seconds_since(d0);
            for (size_t i = 0; i < total; i++) bad += out[i].timestamp_us != got + i;
            got += total;
        }
        producer.join();
        if (bad) std::abort();
        cost_runs.push_back(drain_s * 1e9 / n);
        rate_runs.push_back(n / seconds_since(t0) / 1e6);
    }
    emit("callback drain (200 us sleeps): cost", Q::name, median(cost_runs), "ns/msg");
    emit("callback drain (200 us sleeps): rate", Q::name, median(rate_runs), "Mmsg/s");
}

template <class Q> static void bench_all() {
    bench_single_thread<Q>();
    bench_threads_busy<Q>();
    bench_threads_callback<Q>();
}

int main() {
    CAP = jack_capacity(256 * 1024);
    std::printf("{\"bench\": \"capacity (messages, all queues)\", \"impl\": \"all\", "
                "\"value\": %zu, \"unit\": \"msgs\"}\n", CAP);
    bench_memcpy_floor();
    bench_all<BbxQueue>();
    bench_all<BoostQueue>();
    bench_all<JackQueue>();
    return 0;
}
