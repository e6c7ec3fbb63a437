/*
 * loadgen -- the C load client: connections per second against an echo server.
 *
 * One connection = non-blocking connect, send N bytes, read the N-byte echo and
 * verify it, close.  The unit of work is the whole connection, so the client has to
 * be cheap per connection (one epoll_wait serves many) and honest about what it saw.
 *
 * Design, and the trade-offs it makes:
 *
 *  - Single thread, one epoll set, edge-triggered.  A socket is registered once,
 *    for EPOLLIN|EPOLLOUT|EPOLLET: the connect completion is the EPOLLOUT edge and
 *    the echo is the EPOLLIN edge, so no EPOLL_CTL_MOD/DEL is ever needed and close()
 *    removes the fd from the set.  That is socket, connect, epoll_ctl, send, recv,
 *    close (+ a share of epoll_wait) per connection: the fewest system calls we know
 *    how to make, because over loopback the client pays about as much CPU as the
 *    server and is often the bottleneck (FINAL reports client_cpu_share for that).
 *
 *  - Closed loop (default): --concurrency connections are always in flight; a finished
 *    one is replaced at once.  Open loop (--rate): connection k is scheduled at
 *    t0 + k/rate, whatever happened before, and its latency is measured from that
 *    scheduled time, not from when we managed to start it (no coordinated omission,
 *    as in wrk2).  --concurrency is then a cap on connections in flight: a start that
 *    finds the cap reached, or a client too busy to start on time, starts late and is
 *    counted in late_starts (its latency includes the wait); schedule slots never
 *    started before the deadline are reported as schedule_missed.
 *
 *  - Every connection started ends exactly once, as completed or failed with a cause,
 *    so started_total == completed_total + failed_total after the drain.  After the
 *    deadline nothing new starts and in-flight connections get up to --timeout-ms to
 *    finish.  The timeout runs from a connection's actual start (a late start must
 *    not time out at birth) and is checked in start order with a FIFO list, which is
 *    O(1) because every connection has the same timeout.
 *
 *  - Each connection sends its own byte pattern (a function of a per-connection seed
 *    and the byte offset), so a server that echoes another connection's bytes, or
 *    the right bytes at the wrong offset, is caught as a mismatch.
 *
 *  - Measured figures ("started", "completed", "failed", "failures", latency,
 *    conn_per_s) count events inside [end of warm-up, deadline]; *_total count the
 *    whole run.  With --count N the run starts N connections in total (warm-up
 *    included) and the window ends when the last one ends.
 *
 *  - Latency goes into a log-linear histogram of nanoseconds (128 sub-buckets per
 *    power of two: < 0.8 % error, fixed 36 KiB, O(1) record).
 *
 *  - TIME_WAIT and ephemeral ports are a choice, recorded in FINAL: --close fin (the
 *    client closes first and keeps TIME_WAIT) or rst (SO_LINGER 0: no TIME_WAIT, but
 *    the server sees a reset instead of a FIN: a different workload).  --src-addrs K
 *    spreads connections over 127.0.0.1..127.0.0.K (IP_BIND_ADDRESS_NO_PORT, so the
 *    kernel still picks the port per 4-tuple).  EADDRNOTAVAIL is counted and makes
 *    the client back off for 10 ms rather than spin.
 *
 *  - --clients N (issue 26: N server workers need a client that keeps up): N processes
 *    forked after the arguments are read, sharing t0, the warm-up and the deadline, each
 *    with its share of --concurrency, --rate and --count.  Each keeps its counters and
 *    histogram in one shared anonymous mapping; the first process prints the SNAPSHOTs
 *    (the sums, read live) and, after waiting for the others, one FINAL with everything
 *    merged.  client_cpu_share is then the mean over the N processes (of one core each:
 *    the client-bound rule stays "a client process saturated its core"), with
 *    client_cpu_share_max the busiest one's.  A signal to the first is passed on.
 *
 * Output (stdout, one flushed line each): SNAPSHOT {...} once a second, FINAL {...}
 * at the end.  Exit 0 when it ran (failures are data), 2 on bad arguments, 1 when it
 * could not run.  SIGINT/SIGTERM stop new starts and drain; a second one aborts the
 * drain (in-flight connections are then counted as failed: aborted).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define NS_PER_S 1000000000ULL
#define NS_PER_MS 1000000ULL
#define SCRATCH_SIZE 65536
#define MAX_SIZE (16 * 1024 * 1024)
#define MAX_CONCURRENCY 1000000
#define LATE_START_NS (1 * NS_PER_MS)        /* an open-loop start this late is "late" */
#define ADDRNOTAVAIL_BACKOFF_NS (10 * NS_PER_MS)
#define SYNC_FAIL_BACKOFF_NS (1 * NS_PER_MS)
#define ERRNO_SLOTS 256
#define MAX_CLIENTS 64

/* ---------------------------------------------------------------- configuration */

enum close_mode { CLOSE_FIN, CLOSE_RST };

struct config {
    const char *host;
    int port;
    long concurrency;
    long size;
    double duration;          /* seconds of measured time after warm-up; 0 = unbounded by time */
    long long count;          /* total connections to start; 0 = unbounded by count */
    double rate;              /* > 0: open loop */
    double warmup;
    long timeout_ms;
    enum close_mode close_mode;
    int src_addrs;            /* 0 = let the kernel choose */
    const char *run_id;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool duration_given;
    int clients;              /* processes sharing the load (--clients) */
    long concurrency_total;   /* the totals asked for; each process runs its share */
    double rate_total;
    long long count_total;
};

static struct config cfg = {
    .host = "127.0.0.1", .port = -1, .concurrency = 64, .size = 100,
    .timeout_ms = 5000, .close_mode = CLOSE_FIN, .run_id = "", .clients = 1,
};

/* ---------------------------------------------------------------- accounting */

enum cause { F_REFUSED, F_RESET, F_TIMEOUT, F_SHORT_READ, F_MISMATCH, F_ADDRNOTAVAIL,
             F_OTHER, F_ABORTED, F_NCAUSES };
static const char *cause_name[F_NCAUSES] = {
    "refused", "reset", "timeout", "short_read", "mismatch", "addrnotavail", "other", "aborted",
};

struct counts {
    uint64_t started, completed, failed;
    uint64_t failures[F_NCAUSES];
};

/* Log-linear histogram: values < 256 ns exact; above, 128 sub-buckets per octave. */
#define H_SUB_BITS 7
#define H_SUB (1 << H_SUB_BITS)
#define H_LINEAR 256
#define H_OCTAVES 48
#define H_BUCKETS (H_LINEAR + H_OCTAVES * H_SUB)

struct histogram {
    uint64_t n, sum_ns, max_ns, min_ns;
    uint64_t bucket[H_BUCKETS];
};

static int h_index(uint64_t v)
{
    if (v < H_LINEAR)
        return (int)v;
    int e = 63 - __builtin_clzll(v);                      /* >= 8 */
    int idx = H_LINEAR + (e - 8) * H_SUB + (int)((v >> (e - H_SUB_BITS)) & (H_SUB - 1));
    return idx < H_BUCKETS ? idx : H_BUCKETS - 1;
}

/* The middle of a bucket, the value we report for it. */
static double h_value(int idx)
{
    if (idx < H_LINEAR)
        return idx;
    int e = (idx - H_LINEAR) / H_SUB + 8, sub = (idx - H_LINEAR) % H_SUB;
    double width = (double)(1ULL << (e - H_SUB_BITS));
    return (double)(1ULL << e) + sub * width + width / 2;
}

static void h_record(struct histogram *h, uint64_t v)
{
    h->bucket[h_index(v)]++;
    if (h->n == 0 || v < h->min_ns)
        h->min_ns = v;
    if (v > h->max_ns)
        h->max_ns = v;
    h->n++;
    h->sum_ns += v;
}

static double h_quantile_ns(const struct histogram *h, double q)
{
    /* rank = ceil(q * n), without libm (the Makefile links none) */
    double qn = q * (double)h->n;
    uint64_t rank = (uint64_t)qn, seen = 0;
    if ((double)rank < qn)
        rank++;
    if (rank < 1)
        rank = 1;
    for (int i = 0; i < H_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank) {
            double v = h_value(i);
            if (v > (double)h->max_ns) v = (double)h->max_ns;   /* never above what we saw */
            if (v < (double)h->min_ns) v = (double)h->min_ns;
            return v;
        }
    }
    return (double)h->max_ns;
}

/* ---------------------------------------------------------------- connections */

enum state { S_FREE, S_CONNECTING, S_SENDING, S_READING };

struct conn {
    int fd;
    enum state state;
    uint32_t sent, recvd;
    bool saw_in;              /* an EPOLLIN edge arrived while we were still sending */
    uint64_t seed;
    uint64_t t_sched;         /* latency origin: scheduled start (open) or actual start */
    uint64_t t_start;         /* actual start: the timeout runs from here */
    int prev, next;           /* FIFO of in-flight connections, in start order */
};

static struct conn *conns;
static int *free_slots, n_free;
static int fifo_head = -1, fifo_tail = -1;
static int epfd = -1;
static unsigned char scratch[SCRATCH_SIZE], expect[SCRATCH_SIZE];

struct stats {
    struct counts total, window;
    struct histogram lat;
    uint64_t errno_other[ERRNO_SLOTS];
    uint64_t timeout_phase[4];        /* by enum state at the time of the timeout */
    uint64_t late_starts, max_start_lag_ns, backoffs;
    uint64_t seq;                     /* connections started, also the seed source */
    long in_flight;
    /* --clients: what a process reports at its end (the first merges them) */
    uint64_t end;
    double cpu, cpu_w;
    bool interrupted, aborted;
    uint64_t schedule_missed;
};
/* One per client process, in a shared mapping when --clients > 1 (header comment). */
static struct stats *all_stats, *stp;
static int me, n_children;
static pid_t children[MAX_CLIENTS];
#define st (*stp)

static uint64_t t0, warm_end, deadline;   /* deadline: UINT64_MAX when bounded by count only */
static uint64_t pause_until;               /* no new starts before this (backoff) */
static volatile sig_atomic_t signals_seen;
static uint64_t seed_salt;                 /* per run, so two clients' patterns differ too */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static bool in_window(uint64_t t)
{
    return t >= warm_end && t <= deadline;
}

/* The byte pattern: byte i of a connection with this seed.  Different seeds differ in
 * almost every byte, and the offset is mixed in, so shifted echoes are caught too. */
static void pattern_fill(uint64_t seed, uint64_t off, unsigned char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        uint64_t x = (seed ^ ((off + i) * 0x9E3779B97F4A7C15ULL)) * 0xBF58476D1CE4E5B9ULL;
        buf[i] = (unsigned char)(x >> 56);
    }
}

static uint64_t mix64(uint64_t x)     /* splitmix64 finaliser */
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static void fifo_push(int i)
{
    conns[i].prev = fifo_tail;
    conns[i].next = -1;
    if (fifo_tail >= 0) conns[fifo_tail].next = i; else fifo_head = i;
    fifo_tail = i;
}

static void fifo_remove(int i)
{
    struct conn *c = &conns[i];
    if (c->prev >= 0) conns[c->prev].next = c->next; else fifo_head = c->next;
    if (c->next >= 0) conns[c->next].prev = c->prev; else fifo_tail = c->prev;
    c->prev = c->next = -1;
}

static void release(int i)
{
    struct conn *c = &conns[i];
    if (cfg.close_mode == CLOSE_RST) {
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(c->fd);            /* also removes it from the epoll set */
    c->fd = -1;
    c->state = S_FREE;
    fifo_remove(i);
    free_slots[n_free++] = i;
    st.in_flight--;
}

static void count_failure(enum cause cause, int err, uint64_t t)
{
    st.total.failed++;
    st.total.failures[cause]++;
    if (in_window(t)) {
        st.window.failed++;
        st.window.failures[cause]++;
    }
    if (cause == F_OTHER)
        st.errno_other[err > 0 && err < ERRNO_SLOTS ? err : 0]++;
}

static enum cause classify(int err)
{
    switch (err) {
    case ECONNREFUSED: return F_REFUSED;
    case ECONNRESET: case EPIPE: case ECONNABORTED: return F_RESET;
    case ETIMEDOUT: return F_TIMEOUT;
    case EADDRNOTAVAIL: return F_ADDRNOTAVAIL;
    default: return F_OTHER;
    }
}

static void fail(int i, enum cause cause, int err)
{
    if (cause == F_TIMEOUT)
        st.timeout_phase[conns[i].state]++;
    count_failure(cause, err, now_ns());
    release(i);
}

static void complete(int i)
{
    uint64_t t = now_ns();
    st.total.completed++;
    if (in_window(t)) {
        st.window.completed++;
        h_record(&st.lat, t - conns[i].t_sched);
    }
    release(i);
}

static void do_recv(int i)
{
    struct conn *c = &conns[i];
    for (;;) {
        size_t want = (size_t)cfg.size - c->recvd;
        if (want > SCRATCH_SIZE) want = SCRATCH_SIZE;
        ssize_t n = recv(c->fd, scratch, want, 0);
        if (n > 0) {
            pattern_fill(c->seed, c->recvd, expect, (size_t)n);
            if (memcmp(scratch, expect, (size_t)n) != 0) {
                fail(i, F_MISMATCH, 0);
                return;
            }
            c->recvd += (uint32_t)n;
            if (c->recvd == (uint32_t)cfg.size) {
                complete(i);
                return;
            }
        } else if (n == 0) {
            fail(i, F_SHORT_READ, 0);          /* EOF before N bytes */
            return;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;                            /* wait for the next EPOLLIN edge */
        } else if (errno != EINTR) {
            int e = errno;
            fail(i, classify(e), e);
            return;
        }
    }
}

/* Returns true when everything has been sent. */
static bool do_send(int i)
{
    struct conn *c = &conns[i];
    while (c->sent < (uint32_t)cfg.size) {
        size_t len = (size_t)cfg.size - c->sent;
        if (len > SCRATCH_SIZE) len = SCRATCH_SIZE;
        pattern_fill(c->seed, c->sent, scratch, len);
        ssize_t n = send(c->fd, scratch, len, MSG_NOSIGNAL);
        if (n >= 0) {
            c->sent += (uint32_t)n;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return false;
        } else if (errno != EINTR) {
            int e = errno;
            fail(i, classify(e), e);
            return false;
        }
    }
    c->state = S_READING;
    return true;
}

static void on_event(int i, uint32_t ev)
{
    struct conn *c = &conns[i];
    if (c->state == S_FREE)
        return;
    if (ev & EPOLLERR) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
            fail(i, classify(err), err);
            return;
        }
        /* no pending error after all: let send/recv find out what happened */
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLRDHUP))
        c->saw_in = true;
    if (c->state == S_CONNECTING || c->state == S_SENDING) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        c->state = S_SENDING;
        if (!do_send(i))
            return;
        /* Sent everything.  Read now only if data (or EOF) was signalled: otherwise the
         * EPOLLIN edge will come when the echo arrives, and a recv now would just say EAGAIN. */
        if (!c->saw_in)
            return;
    }
    if (c->state == S_READING)
        do_recv(i);
}

/* Start one connection; `sched` is its latency origin.  Returns false if it failed
 * synchronously (then counted, and new starts are paused briefly so we never spin). */
static bool start_conn(uint64_t sched)
{
    uint64_t t = now_ns();
    int i = free_slots[--n_free];
    struct conn *c = &conns[i];
    uint64_t seq = st.seq++;
    st.total.started++;
    if (in_window(t))
        st.window.started++;
    st.in_flight++;
    c->state = S_CONNECTING;
    c->sent = c->recvd = 0;
    c->saw_in = false;
    c->seed = mix64(seq ^ seed_salt);
    c->t_sched = sched;
    c->t_start = t;
    fifo_push(i);

    int err = 0;
    c->fd = socket(cfg.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        err = errno;
        /* put the slot back without a close */
        fifo_remove(i);
        c->state = S_FREE;
        free_slots[n_free++] = i;
        st.in_flight--;
        count_failure(classify(err), err, t);
        pause_until = t + SYNC_FAIL_BACKOFF_NS;
        st.backoffs++;
        return false;
    }
    if (cfg.src_addrs > 0) {
        int one = 1;
        struct sockaddr_in src = { .sin_family = AF_INET };
        src.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)(seq % (uint64_t)cfg.src_addrs + 1));
        /* Port chosen at connect() time, per 4-tuple, instead of reserved here. */
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0)
            err = errno;
    }
    if (err == 0) {
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP,
                                  .data.u32 = (uint32_t)i };
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
            err = errno;
        } else if (connect(c->fd, (struct sockaddr *)&cfg.addr, cfg.addrlen) < 0
                   && errno != EINPROGRESS) {
            err = errno;
        }
    }
    if (err != 0) {
        enum cause cause = classify(err);
        fail(i, cause, err);
        pause_until = t + (cause == F_ADDRNOTAVAIL ? ADDRNOTAVAIL_BACKOFF_NS : SYNC_FAIL_BACKOFF_NS);
        st.backoffs++;
        return false;
    }
    /* A connect that succeeded at once will still report its EPOLLOUT edge. */
    return true;
}

/* ---------------------------------------------------------------- output */

/* The counters summed over the client processes (read live: a torn read of one counter
 * is impossible on the 64-bit targets we build for, and a snapshot is indicative). */
static uint64_t completed_all(void)
{
    uint64_t n = 0;
    for (int k = 0; k < cfg.clients; k++) n += all_stats[k].total.completed;
    return n;
}

static void print_snapshot(uint64_t t, uint64_t prev_t, uint64_t prev_completed)
{
    double dt = (double)(t - prev_t) / NS_PER_S;
    uint64_t started = 0, completed = 0, failed = 0;
    long in_flight = 0;
    for (int k = 0; k < cfg.clients; k++) {
        started += all_stats[k].total.started;
        completed += all_stats[k].total.completed;
        failed += all_stats[k].total.failed;
        in_flight += all_stats[k].in_flight;
    }
    double speed = dt > 0 ? (double)(completed - prev_completed) / dt : 0.0;
    printf("SNAPSHOT {\"t\": %.3f, \"warmup\": %s, \"connections\": %" PRIu64
           ", \"complete\": %" PRIu64 ", \"failed\": %" PRIu64 ", \"in_flight\": %ld"
           ", \"timespan\": %.3f, \"speed\": %.1f}\n",
           (double)(t - t0) / NS_PER_S, t < warm_end ? "true" : "false", started,
           completed, failed, in_flight, (double)(t - t0) / NS_PER_S, speed);
    fflush(stdout);
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static void json_failures(FILE *f, const struct counts *c)
{
    fputc('{', f);
    for (int k = 0; k < F_NCAUSES; k++)
        fprintf(f, "%s\"%s\": %" PRIu64, k ? ", " : "", cause_name[k], c->failures[k]);
    fputc('}', f);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
         + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

struct run_result {
    uint64_t end;             /* when the last connection ended */
    double cpu0, cpu_w0, cpu_w1, cpu1;
    bool cpu_w1_taken, interrupted, aborted;
    uint64_t schedule_missed;
    double share_max;         /* --clients: the busiest process's CPU share */
};

static void print_final(const struct run_result *r)
{
    FILE *f = stdout;
    uint64_t wend = r->end < deadline ? r->end : deadline;
    double measured = wend > warm_end ? (double)(wend - warm_end) / NS_PER_S : 0.0;
    double wall = (double)(r->end - t0) / NS_PER_S;
    double cpu = r->cpu1 - r->cpu0;
    double cpu_w = (r->cpu_w1_taken ? r->cpu_w1 : r->cpu1) - r->cpu_w0;

    fputs("FINAL {\"run_id\": ", f);
    json_string(f, cfg.run_id);
    fprintf(f, ", \"mode\": \"%s\", \"host\": ", cfg.rate > 0 ? "open" : "closed");
    json_string(f, cfg.host);
    fprintf(f, ", \"port\": %d, \"concurrency\": %ld, \"size\": %ld", cfg.port, cfg.concurrency_total, cfg.size);
    if (cfg.rate > 0) fprintf(f, ", \"rate\": %.3f", cfg.rate_total); else fputs(", \"rate\": null", f);
    if (cfg.duration > 0) fprintf(f, ", \"duration_s\": %.3f", cfg.duration); else fputs(", \"duration_s\": null", f);
    if (cfg.count > 0) fprintf(f, ", \"count\": %lld", cfg.count_total); else fputs(", \"count\": null", f);
    fprintf(f, ", \"warmup_s\": %.3f, \"measured_s\": %.6f, \"timeout_ms\": %ld",
            cfg.warmup, measured, cfg.timeout_ms);
    fprintf(f, ", \"started\": %" PRIu64 ", \"completed\": %" PRIu64 ", \"failed\": %" PRIu64,
            st.window.started, st.window.completed, st.window.failed);
    fputs(", \"failures\": ", f);
    json_failures(f, &st.window);
    fprintf(f, ", \"started_total\": %" PRIu64 ", \"completed_total\": %" PRIu64
            ", \"failed_total\": %" PRIu64, st.total.started, st.total.completed, st.total.failed);
    fputs(", \"failures_total\": ", f);
    json_failures(f, &st.total);
    fprintf(f, ", \"timeout_phase\": {\"connect\": %" PRIu64 ", \"send\": %" PRIu64
            ", \"read\": %" PRIu64 "}", st.timeout_phase[S_CONNECTING],
            st.timeout_phase[S_SENDING], st.timeout_phase[S_READING]);
    fputs(", \"errno_other\": {", f);
    for (int e = 0, first = 1; e < ERRNO_SLOTS; e++) {
        if (!st.errno_other[e]) continue;
        const char *name = e ? strerrorname_np(e) : NULL;
        if (name) fprintf(f, "%s\"%s\": %" PRIu64, first ? "" : ", ", name, st.errno_other[e]);
        else fprintf(f, "%s\"%d\": %" PRIu64, first ? "" : ", ", e, st.errno_other[e]);
        first = 0;
    }
    fputc('}', f);
    if (measured > 0) fprintf(f, ", \"conn_per_s\": %.3f", st.window.completed / measured);
    else fputs(", \"conn_per_s\": null", f);
    const struct histogram *h = &st.lat;
    if (h->n) {
        fprintf(f, ", \"latency_us\": {\"n\": %" PRIu64 ", \"min\": %.3f, \"p50\": %.3f, \"p90\": %.3f"
                ", \"p99\": %.3f, \"p999\": %.3f, \"max\": %.3f, \"mean\": %.3f}",
                h->n, h->min_ns / 1e3, h_quantile_ns(h, 0.50) / 1e3, h_quantile_ns(h, 0.90) / 1e3,
                h_quantile_ns(h, 0.99) / 1e3, h_quantile_ns(h, 0.999) / 1e3, h->max_ns / 1e3,
                (double)h->sum_ns / (double)h->n / 1e3);
    } else {
        fputs(", \"latency_us\": {\"n\": 0, \"min\": null, \"p50\": null, \"p90\": null, \"p99\": null"
              ", \"p999\": null, \"max\": null, \"mean\": null}", f);
    }
    fprintf(f, ", \"latency_origin\": \"%s\"", cfg.rate > 0 ? "scheduled_start" : "actual_start");
    fprintf(f, ", \"late_starts\": %" PRIu64 ", \"max_start_lag_us\": %.3f, \"schedule_missed\": %" PRIu64,
            st.late_starts, st.max_start_lag_ns / 1e3, r->schedule_missed);
    fprintf(f, ", \"backoffs\": %" PRIu64, st.backoffs);
    /* --clients N: the mean share of one process's core (header comment), and the busiest. */
    fprintf(f, ", \"client_cpu_s\": %.6f, \"client_wall_s\": %.6f, \"client_cpu_share\": %.4f",
            cpu, wall, wall > 0 ? cpu / wall / cfg.clients : 0.0);
    fprintf(f, ", \"client_cpu_share_measured\": %.4f",
            measured > 0 ? cpu_w / measured / cfg.clients : 0.0);
    fprintf(f, ", \"clients\": %d, \"client_cpu_share_max\": %.4f", cfg.clients,
            cfg.clients > 1 ? r->share_max : (wall > 0 ? cpu / wall : 0.0));
    fprintf(f, ", \"close_mode\": \"%s\", \"src_addrs\": %d", cfg.close_mode == CLOSE_RST ? "rst" : "fin",
            cfg.src_addrs);
    fprintf(f, ", \"interrupted\": %s, \"drain_aborted\": %s}\n",
            r->interrupted ? "true" : "false", r->aborted ? "true" : "false");
    fflush(f);
}

/* ---------------------------------------------------------------- arguments */

#define USAGE_SYNOPSIS \
    "usage: loadgen --host H --port P [--concurrency 64] [--size 100]\n" \
    "               [--duration SECONDS | --count N] [--rate CONN_PER_S] [--warmup SECONDS]\n" \
    "               [--timeout-ms 5000] [--close fin|rst] [--src-addrs K] [--run-id ID]\n" \
    "               [--clients N]\n"

static void usage(FILE *f)
{
    if (f == stderr) {                     /* after an error: the synopsis, not the manual */
        fputs(USAGE_SYNOPSIS "(loadgen --help explains the options)\n", f);
        return;
    }
    fprintf(f, USAGE_SYNOPSIS
        "  one connection = connect, send SIZE bytes, read and verify the echo, close.\n"
        "  --concurrency/-c  connections in flight (closed loop), or the in-flight cap (open loop)\n"
        "  --duration        measured seconds after the warm-up (default 10 unless --count)\n"
        "  --count           total connections to start (warm-up included); with --duration,\n"
        "                    whichever comes first\n"
        "  --rate            open loop: fixed schedule, latency from each scheduled start\n"
        "  --close rst       SO_LINGER 0 (no TIME_WAIT, server sees RST); fin = normal close\n"
        "  --src-addrs K     bind round-robin to 127.0.0.1..127.0.0.K (loopback targets only)\n"
        "  --clients N       N processes sharing --concurrency/--rate/--count; one output stream\n"
        "  output: SNAPSHOT {...} once a second, FINAL {...} at the end (JSON)\n");
}

/* A bad argument: one line saying what is wrong, the synopsis, exit 2. */
__attribute__((format(printf, 1, 2), noreturn))
static void bad_arg(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n", stderr);
    usage(stderr);
    exit(2);
}

static long long parse_int(const char *opt, const char *s, long long lo, long long hi)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        bad_arg("%s needs an integer in [%lld, %lld], got '%s'", opt, lo, hi, s);
    }
    return v;
}

static double parse_double(const char *opt, const char *s, double lo, double hi, bool lo_open)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || (lo_open && v == lo) || v > hi) {
        bad_arg("%s needs a number %s %g and <= %g, got '%s'", opt, lo_open ? ">" : ">=", lo, hi, s);
    }
    return v;
}

static void parse_args(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, 0, 'H'}, {"port", required_argument, 0, 'p'},
        {"concurrency", required_argument, 0, 'c'}, {"size", required_argument, 0, 's'},
        {"duration", required_argument, 0, 'd'}, {"count", required_argument, 0, 'n'},
        {"rate", required_argument, 0, 'r'}, {"warmup", required_argument, 0, 'w'},
        {"timeout-ms", required_argument, 0, 't'}, {"close", required_argument, 0, 'C'},
        {"src-addrs", required_argument, 0, 'S'}, {"run-id", required_argument, 0, 'i'},
        {"clients", required_argument, 0, 'K'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    opterr = 0;
    int o;
    while ((o = getopt_long(argc, argv, ":c:h", opts, NULL)) != -1) {
        switch (o) {
        case 'H': cfg.host = optarg; break;
        case 'p': cfg.port = (int)parse_int("--port", optarg, 1, 65535); break;
        case 'c': cfg.concurrency = (long)parse_int("--concurrency", optarg, 1, MAX_CONCURRENCY); break;
        case 's': cfg.size = (long)parse_int("--size", optarg, 1, MAX_SIZE); break;
        case 'd': cfg.duration = parse_double("--duration", optarg, 0, 1e7, true);
                  cfg.duration_given = true; break;
        case 'n': cfg.count = parse_int("--count", optarg, 1, (long long)1 << 50); break;
        case 'r': cfg.rate = parse_double("--rate", optarg, 0, 1e8, true); break;
        case 'w': cfg.warmup = parse_double("--warmup", optarg, 0, 1e7, false); break;
        case 't': cfg.timeout_ms = (long)parse_int("--timeout-ms", optarg, 1, 3600000); break;
        case 'C':
            if (strcmp(optarg, "fin") == 0) cfg.close_mode = CLOSE_FIN;
            else if (strcmp(optarg, "rst") == 0) cfg.close_mode = CLOSE_RST;
            else bad_arg("--close must be 'fin' or 'rst', got '%s'", optarg);
            break;
        case 'S': cfg.src_addrs = (int)parse_int("--src-addrs", optarg, 1, 254); break;
        case 'K': cfg.clients = (int)parse_int("--clients", optarg, 1, MAX_CLIENTS); break;
        case 'i':
            if (strlen(optarg) > 256) bad_arg("--run-id is too long (max 256 characters)");
            cfg.run_id = optarg;
            break;
        case 'h': usage(stdout); exit(0);
        case ':': bad_arg("option %s needs a value", argv[optind - 1]); break;
        default:  bad_arg("unknown option '%s'", argv[optind - 1]); break;
        }
    }
    if (optind < argc)
        bad_arg("unexpected argument '%s'", argv[optind]);
    if (cfg.port < 0)
        bad_arg("--port is required");
    if (!cfg.duration_given && cfg.count == 0)
        cfg.duration = 10.0;
    if (cfg.clients > cfg.concurrency)
        bad_arg("--clients %d is more than --concurrency %ld: each client needs a connection",
                cfg.clients, cfg.concurrency);
    if (cfg.count > 0 && cfg.clients > cfg.count)
        bad_arg("--clients %d is more than --count %lld", cfg.clients, cfg.count);

    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *res;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg.port);
    int rc = getaddrinfo(cfg.host, port, &hints, &res);
    if (rc != 0)
        bad_arg("cannot resolve --host '%s': %s", cfg.host, gai_strerror(rc));
    memcpy(&cfg.addr, res->ai_addr, res->ai_addrlen);
    cfg.addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    if (cfg.src_addrs > 0) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&cfg.addr;
        if (cfg.addr.ss_family != AF_INET || (ntohl(sin->sin_addr.s_addr) >> 24) != 127)
            bad_arg("--src-addrs binds to 127.0.0.1..K and only works with an IPv4 loopback "
                    "target (127.x.x.x); --host '%s' is not one", cfg.host);
    }
}

/* ---------------------------------------------------------------- main loop */

static void on_signal(int sig)
{
    signals_seen++;
    for (int k = 0; k < n_children; k++)      /* --clients: the others stop and drain too */
        kill(children[k], sig);
}

/* --clients: fork the other N-1 processes; each runs its share of the load (header
 * comment).  Returns false when the shared mapping or a fork failed. */
static bool start_clients(void)
{
    cfg.concurrency_total = cfg.concurrency;
    cfg.rate_total = cfg.rate;
    cfg.count_total = cfg.count;
    size_t bytes = (size_t)cfg.clients * sizeof(struct stats);
    all_stats = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (all_stats == MAP_FAILED)
        return false;
    memset(all_stats, 0, bytes);
    fflush(stdout);
    for (int k = 1; k < cfg.clients; k++) {
        pid_t pid = fork();
        if (pid < 0)
            return false;
        if (pid == 0) {
            me = k;
            n_children = 0;
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            break;
        }
        children[n_children++] = pid;
    }
    int n = cfg.clients;
    cfg.concurrency = cfg.concurrency_total / n + (me < cfg.concurrency_total % n);
    cfg.rate = cfg.rate_total / n;
    if (cfg.count_total > 0)
        cfg.count = cfg.count_total / n + (me < cfg.count_total % n);
    stp = &all_stats[me];
    return true;
}

static void merge_stats(struct stats *a, const struct stats *b)
{
    const struct counts *bc[2] = { &b->total, &b->window };
    struct counts *ac[2] = { &a->total, &a->window };
    for (int j = 0; j < 2; j++) {
        ac[j]->started += bc[j]->started;
        ac[j]->completed += bc[j]->completed;
        ac[j]->failed += bc[j]->failed;
        for (int k = 0; k < F_NCAUSES; k++) ac[j]->failures[k] += bc[j]->failures[k];
    }
    if (b->lat.n && (!a->lat.n || b->lat.min_ns < a->lat.min_ns)) a->lat.min_ns = b->lat.min_ns;
    if (b->lat.max_ns > a->lat.max_ns) a->lat.max_ns = b->lat.max_ns;
    a->lat.n += b->lat.n;
    a->lat.sum_ns += b->lat.sum_ns;
    for (int k = 0; k < H_BUCKETS; k++) a->lat.bucket[k] += b->lat.bucket[k];
    for (int k = 0; k < ERRNO_SLOTS; k++) a->errno_other[k] += b->errno_other[k];
    for (int k = 0; k < 4; k++) a->timeout_phase[k] += b->timeout_phase[k];
    a->late_starts += b->late_starts;
    if (b->max_start_lag_ns > a->max_start_lag_ns) a->max_start_lag_ns = b->max_start_lag_ns;
    a->backoffs += b->backoffs;
    a->seq += b->seq;
    a->in_flight += b->in_flight;
    if (b->end > a->end) a->end = b->end;
    a->cpu += b->cpu;
    a->cpu_w += b->cpu_w;
    a->interrupted |= b->interrupted;
    a->aborted |= b->aborted;
    a->schedule_missed += b->schedule_missed;
}

static int wait_events(struct epoll_event *evs, int max, int64_t timeout_ns)
{
    static bool no_pwait2;
    if (timeout_ns < 0) timeout_ns = 0;
    if (!no_pwait2) {
        struct timespec ts = { .tv_sec = timeout_ns / (int64_t)NS_PER_S,
                               .tv_nsec = timeout_ns % (int64_t)NS_PER_S };
        int n = epoll_pwait2(epfd, evs, max, &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        no_pwait2 = true;                    /* kernel < 5.11: millisecond timeouts */
    }
    return epoll_wait(epfd, evs, max, (int)((timeout_ns + (int64_t)NS_PER_MS - 1) / (int64_t)NS_PER_MS));
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

int main(int argc, char **argv)
{
    parse_args(argc, argv);

    /* Enough descriptors for the connections in flight, or refuse to run. */
    struct rlimit rl;
    rlim_t need = (rlim_t)cfg.concurrency + 32;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need) {
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
            fprintf(stderr, "loadgen: --concurrency %ld needs %lu file descriptors; the hard limit "
                    "is %lu (raise it with ulimit -Hn, or lower --concurrency)\n",
                    cfg.concurrency, (unsigned long)need, (unsigned long)rl.rlim_max);
            return 1;
        }
        rl.rlim_cur = need;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            fprintf(stderr, "loadgen: cannot raise the descriptor limit to %lu: %s\n",
                    (unsigned long)need, strerror(errno));
            return 1;
        }
    }

    uint64_t t_start = now_ns();           /* every client process's t0 */
    if (!start_clients()) {
        fprintf(stderr, "loadgen: cannot start %d client processes: %s\n", cfg.clients, strerror(errno));
        return 1;
    }
    conns = calloc((size_t)cfg.concurrency, sizeof *conns);
    free_slots = calloc((size_t)cfg.concurrency, sizeof *free_slots);
    int max_events = cfg.concurrency < 1024 ? (int)cfg.concurrency : 1024;
    struct epoll_event *evs = calloc((size_t)max_events, sizeof *evs);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || !free_slots || !evs || epfd < 0) {
        fprintf(stderr, "loadgen: cannot set up: %s\n", strerror(errno ? errno : ENOMEM));
        return 1;
    }
    for (long k = cfg.concurrency - 1; k >= 0; k--) {
        conns[k].fd = -1;
        conns[k].prev = conns[k].next = -1;
        free_slots[n_free++] = (int)k;
    }

    struct sigaction sa = { .sa_handler = on_signal };   /* no SA_RESTART: epoll_wait -> EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct run_result r = { 0 };
    r.cpu0 = cpu_seconds();
    t0 = t_start;
    seed_salt = mix64(t0 ^ ((uint64_t)getpid() << 32));
    warm_end = t0 + (uint64_t)(cfg.warmup * NS_PER_S);
    deadline = cfg.duration > 0 ? warm_end + (uint64_t)(cfg.duration * NS_PER_S) : UINT64_MAX;
    r.cpu_w0 = r.cpu0;                 /* re-read when the warm-up ends */
    bool cpu_w0_taken = cfg.warmup <= 0;
    uint64_t timeout_ns = (uint64_t)cfg.timeout_ms * NS_PER_MS;
    uint64_t next_snap = t0 + NS_PER_S, prev_snap = t0, prev_snap_completed = 0;
    double interval_ns = cfg.rate > 0 ? (double)NS_PER_S / cfg.rate : 0;
    uint64_t sched_k = 0;          /* open loop: index of the next scheduled start */
    bool starting = true;          /* false once the deadline, the count or a signal stops starts */
    int handled_signals = 0;

    for (;;) {
        uint64_t now = now_ns();

        if (!cpu_w0_taken && now >= warm_end) {
            r.cpu_w0 = cpu_seconds();
            cpu_w0_taken = true;
        }
        if (signals_seen != handled_signals) {
            handled_signals = signals_seen;
            if (starting) {
                r.interrupted = true;
                starting = false;
                if (deadline > now) deadline = now;
            } else if (!r.aborted) {
                r.aborted = true;                 /* second signal: give up the drain */
            }
        }
        if (starting && (now >= deadline || (cfg.count > 0 && st.seq >= (uint64_t)cfg.count)))
            starting = false;
        if (!r.cpu_w1_taken && now >= deadline) {       /* end of the measured window */
            r.cpu_w1 = cpu_seconds();
            r.cpu_w1_taken = true;
        }
        if (r.aborted) {
            while (fifo_head >= 0)
                fail(fifo_head, F_ABORTED, 0);
        }

        /* Timeouts, oldest first. */
        while (fifo_head >= 0 && conns[fifo_head].t_start + timeout_ns <= now)
            fail(fifo_head, F_TIMEOUT, 0);

        /* New starts. */
        if (starting && now >= pause_until) {
            if (cfg.rate <= 0) {
                while (n_free > 0 && (cfg.count == 0 || st.seq < (uint64_t)cfg.count)) {
                    if (!start_conn(now_ns()))
                        break;
                }
            } else {
                while (cfg.count == 0 || sched_k < (uint64_t)cfg.count) {
                    uint64_t sched = t0 + (uint64_t)((double)sched_k * interval_ns);
                    if (sched > now || sched >= deadline)
                        break;
                    if (n_free == 0)
                        break;                    /* cap reached: this start will be late */
                    uint64_t t = now_ns(), lag = t > sched ? t - sched : 0;
                    if (lag > LATE_START_NS) st.late_starts++;
                    if (lag > st.max_start_lag_ns) st.max_start_lag_ns = lag;
                    sched_k++;
                    if (!start_conn(sched))
                        break;
                }
            }
        }

        if (!starting && st.in_flight == 0)
            break;

        /* Sleep until the next thing we must do: an event, a timeout, a scheduled start,
         * the end of a backoff, the deadline, or the next snapshot. */
        now = now_ns();
        int64_t wait = (int64_t)(next_snap - now);
        if (fifo_head >= 0)
            wait = min64(wait, (int64_t)(conns[fifo_head].t_start + timeout_ns - now));
        if (starting) {
            if (deadline != UINT64_MAX) wait = min64(wait, (int64_t)(deadline - now));
            if (!cpu_w0_taken) wait = min64(wait, (int64_t)(warm_end - now));
            if (pause_until > now) {
                wait = min64(wait, (int64_t)(pause_until - now));
            } else if (cfg.rate > 0 && n_free > 0) {
                uint64_t sched = t0 + (uint64_t)((double)sched_k * interval_ns);
                wait = min64(wait, (int64_t)(sched - now));
            } else if (cfg.rate <= 0 && n_free > 0) {
                wait = 0;           /* closed loop with a free slot (after a backoff) */
            }
        }
        int n = wait_events(evs, max_events, wait);
        if (n < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "loadgen: epoll_wait: %s\n", strerror(errno));
            return 1;
        }
        for (int k = 0; k < n; k++)
            on_event((int)evs[k].data.u32, evs[k].events);

        now = now_ns();
        if (now >= next_snap) {
            if (me == 0)
                print_snapshot(now, prev_snap, prev_snap_completed);
            prev_snap = now;
            prev_snap_completed = completed_all();
            while (next_snap <= now) next_snap += NS_PER_S;
        }
    }

    r.end = now_ns();
    r.cpu1 = cpu_seconds();
    if (!r.cpu_w1_taken) { r.cpu_w1 = r.cpu1; r.cpu_w1_taken = true; }
    if (!cpu_w0_taken) r.cpu_w0 = r.cpu1;
    if (cfg.rate > 0) {
        /* Scheduled slots inside the run that were never started. */
        uint64_t stop = deadline < r.end ? deadline : r.end;
        uint64_t due = (uint64_t)((double)(stop - t0) / interval_ns);
        if (cfg.count > 0 && due > (uint64_t)cfg.count) due = (uint64_t)cfg.count;
        r.schedule_missed = due > sched_k ? due - sched_k : 0;
    }
    if (cfg.clients > 1) {
        /* Each process leaves its end, CPU and flags beside its counters; the first
         * waits for the others and merges everything into one FINAL. */
        st.end = r.end;
        st.cpu = r.cpu1 - r.cpu0;
        st.cpu_w = r.cpu_w1 - r.cpu_w0;
        st.interrupted = r.interrupted;
        st.aborted = r.aborted;
        st.schedule_missed = r.schedule_missed;
        if (me != 0)
            _exit(0);
        int failed = 0;
        for (int k = 0; k < n_children; k++) {
            int status;
            while (waitpid(children[k], &status, 0) < 0 && errno == EINTR) {}
            failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
        n_children = 0;
        if (failed) {
            fprintf(stderr, "loadgen: %d of the %d client processes failed\n", failed, cfg.clients);
            return 1;
        }
        for (int k = 0; k < cfg.clients; k++) {
            double wall = (double)(all_stats[k].end - t0) / NS_PER_S;
            if (wall > 0 && all_stats[k].cpu / wall > r.share_max) r.share_max = all_stats[k].cpu / wall;
            if (k) merge_stats(&all_stats[0], &all_stats[k]);
        }
        r.end = st.end;
        r.cpu0 = r.cpu_w0 = 0;
        r.cpu1 = st.cpu;
        r.cpu_w1 = st.cpu_w;
        r.interrupted = st.interrupted;
        r.aborted = st.aborted;
        r.schedule_missed = st.schedule_missed;
    }
    print_final(&r);
    free(evs);
    free(free_slots);
    free(conns);
    close(epfd);
    return 0;
}
