/* Private to the extension: start and join one native thread (POSIX and Windows).
 * Used by the self-test consumer thread in _ring.pyx; hosts never need it. */
#ifndef BBX_NET_THREAD_H
#define BBX_NET_THREAD_H

#if defined(_WIN32)
#include <windows.h>
typedef HANDLE bbx_thread;
typedef struct { void (*fn)(void *); void *arg; } bbx__thread_start;
static DWORD WINAPI bbx__thread_main(LPVOID p) {
    bbx__thread_start *s = (bbx__thread_start *)p;
    s->fn(s->arg);
    return 0;
}
/* `start` must stay valid until the thread is joined. */
static int bbx_thread_create(bbx_thread *t, bbx__thread_start *start) {
    *t = CreateThread(NULL, 0, bbx__thread_main, start, 0, NULL);
    return *t == NULL ? -1 : 0;
}
static int bbx_thread_join(bbx_thread t) {
    WaitForSingleObject(t, INFINITE);
    CloseHandle(t);
    return 0;
}
static void bbx_thread_sleep_us(unsigned us) {
    Sleep(us < 1000 ? 1 : us / 1000);
}
#else
#include <pthread.h>
#include <time.h>
typedef pthread_t bbx_thread;
typedef struct { void (*fn)(void *); void *arg; } bbx__thread_start;
static void *bbx__thread_main(void *p) {
    bbx__thread_start *s = (bbx__thread_start *)p;
    s->fn(s->arg);
    return NULL;
}
/* `start` must stay valid until the thread is joined. */
static int bbx_thread_create(bbx_thread *t, bbx__thread_start *start) {
    return pthread_create(t, NULL, bbx__thread_main, start);
}
static int bbx_thread_join(bbx_thread t) {
    return pthread_join(t, NULL);
}
static void bbx_thread_sleep_us(unsigned us) {
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}
#endif

#endif /* BBX_NET_THREAD_H */
