/*
 * redis_ae -- an echo server written by us on Redis's own event library, ae.
 *
 * The study compared its Python library with "Redis AE"; this is that comparison
 * made reproducible: Redis's ae.c (and the anet.c/zmalloc.c/monotonic.c it needs),
 * compiled from a Redis source tree named by REDIS_SRC (`make build
 * REDIS_SRC=/path/to/redis`), driving the same protocol as every other server.
 * Only ae's public API is used -- aeCreateEventLoop, aeCreateFileEvent,
 * aeDeleteFileEvent, aeCreateTimeEvent, aeMain, aeStop -- so it builds against any
 * Redis from 3.x on (monotonicInit() is called when the tree has monotonic.h, 6.2+,
 * whose ae reads the clock through a pointer that must be initialised first).
 *
 * Options, listener and socket settings, READY/STATS and the EMFILE policy come from
 * c_echo_common.h (shared with c_epoll.c), so the two C servers differ only in the
 * event layer.
 *
 * The per-connection pattern is ae's by the book, the one the Events "master"
 * variant copies: a read proc registered for AE_READABLE; once N bytes are in, delete
 * it and create a write proc for AE_WRITABLE; once sent, delete that and close.  With
 * ae's epoll backend that is four epoll_ctl calls per connection (ADD, DEL, ADD, DEL:
 * deleting the only event of an fd unregisters it), the 4 the study's strace showed.
 * --diet: recv right after accept and send right after the read, creating a file
 * event only when a call would block (the same experiment as common.py's); ae keeps
 * its own table of registered fds, so a registered fd is still deleted before close.
 *
 * Idle timeout: ae has timers, so it is built on one -- a periodic time event every
 * idle_timeout/4 seconds bumps a generation counter and closes connections whose last
 * progress is more than 4 generations old (common.py's sweep: a connection is closed
 * between 1 and 1.25 timeouts after its last progress, and the fast path pays one
 * integer store, not a timer per connection).
 *
 * Signals: ae has none of its own.  A self-pipe -- the handler writes one byte, a read
 * proc on the other end calls aeStop -- keeps everything outside the handler ordinary
 * code, and cannot miss a signal that lands just before epoll_wait.
 *
 * Trade-off admitted: aeCreateEventLoop(setsize) allocates its tables for setsize fds
 * up front; we size it from RLIMIT_NOFILE (capped), as Redis does from maxclients.
 */
#include "fmacros.h"        /* Redis's feature macros (_GNU_SOURCE...), first, as in every Redis .c */
#include <signal.h>

#include "ae.h"
#if defined(__has_include)
#if __has_include("monotonic.h")
#include "monotonic.h"
#define HAVE_MONOTONIC_INIT 1
#endif
#endif

#include "c_echo_common.h"

#define SWEEP_SLICES 4
#define MAX_SETSIZE (1 << 18)
#define FDSET_INCR 128            /* Redis's CONFIG_FDSET_INCR: room above the fd limit */

struct conn {
    int fd;
    bool reading;                 /* else writing */
    uint32_t done;                /* bytes received (reading) or sent (writing) */
    unsigned long long seen;      /* sweep generation of the last progress */
    struct conn *prev, *next;     /* live connections, for the idle sweep */
    char *buf;                    /* --size bytes */
};

static struct echo_opts opt;
static struct echo_stats stats;
static aeEventLoop *loop;
static struct conn **conns;       /* indexed by fd, slots reused */
static struct conn *live;         /* list head */
static int lfd, sig_pipe[2] = { -1, -1 };
static unsigned long long gen;
static char *scratch;

static void read_proc(aeEventLoop *el, int fd, void *data, int mask);
static void write_proc(aeEventLoop *el, int fd, void *data, int mask);
static void accept_proc(aeEventLoop *el, int fd, void *data, int mask);

/* ------------------------------------------------------------------ connections */

static void conn_close(struct conn *c)
{
    aeDeleteFileEvent(loop, c->fd, AE_READABLE | AE_WRITABLE);   /* no-op if none */
    if (c->prev) c->prev->next = c->next; else live = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    close(c->fd);
    c->fd = -1;
}

static void conn_drop(struct conn *c)
{
    stats.errors++;
    conn_close(c);
}

static bool conn_want(struct conn *c, int mask, aeFileProc *proc)
{
    if (aeCreateFileEvent(loop, c->fd, mask, proc, c) == AE_ERR) {
        conn_drop(c);             /* fd beyond setsize, or epoll_ctl failed */
        return false;
    }
    return true;
}

static void conn_write(struct conn *c)
{
    while (c->done < (uint32_t)opt.size) {
        ssize_t n = send(c->fd, c->buf + c->done, (size_t)opt.size - c->done, MSG_NOSIGNAL);
        if (n > 0) {
            c->done += (uint32_t)n;
            c->seen = gen;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!(aeGetFileEvents(loop, c->fd) & AE_WRITABLE))
                conn_want(c, AE_WRITABLE, write_proc);   /* diet mode, rare */
            return;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            conn_drop(c);
            return;
        }
    }
    stats.served++;
    conn_close(c);
}

static void conn_read(struct conn *c)
{
    for (;;) {
        size_t want = (size_t)opt.size - c->done;
        ssize_t n = recv(c->fd, scratch, want > ECHO_RECV_SIZE ? want : ECHO_RECV_SIZE, 0);
        if (n > 0) {
            size_t take = (size_t)n < want ? (size_t)n : want;   /* the rest is surplus */
            memcpy(c->buf + c->done, scratch, take);
            c->done += (uint32_t)take;
            c->seen = gen;
            if (c->done < (uint32_t)opt.size)
                continue;
            c->reading = false;
            c->done = 0;
            aeDeleteFileEvent(loop, c->fd, AE_READABLE);    /* no-op if diet never registered */
            if (opt.diet)
                conn_write(c);                              /* send at once */
            else
                conn_want(c, AE_WRITABLE, write_proc);
            return;
        } else if (n == 0) {
            conn_drop(c);                   /* EOF before N bytes */
            return;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (!(aeGetFileEvents(loop, c->fd) & AE_READABLE))
                conn_want(c, AE_READABLE, read_proc);           /* diet: not all there yet */
            return;
        } else if (errno != EINTR) {
            conn_drop(c);
            return;
        }
    }
}

static void read_proc(aeEventLoop *el, int fd, void *data, int mask)
{
    (void)el; (void)fd; (void)mask;
    conn_read(data);
}

static void write_proc(aeEventLoop *el, int fd, void *data, int mask)
{
    (void)el; (void)fd; (void)mask;
    conn_write(data);
}

static struct conn *conn_new(int fd)
{
    if (fd >= aeGetSetSize(loop)) {
        close(fd);
        stats.errors++;
        return NULL;
    }
    struct conn *c = conns[fd];
    if (!c) {
        c = calloc(1, sizeof *c);
        char *buf = malloc((size_t)opt.size);
        if (!c || !buf) {
            free(c);
            free(buf);
            close(fd);
            stats.errors++;
            return NULL;
        }
        c->buf = buf;
        conns[fd] = c;
    }
    c->fd = fd;
    c->reading = true;
    c->done = 0;
    c->seen = gen;
    c->prev = NULL;
    c->next = live;
    if (live) live->prev = c;
    live = c;
    return c;
}

/* ------------------------------------------------------------------ listener */

static int resume_listener(aeEventLoop *el, long long id, void *data)
{
    (void)id; (void)data;
    echo_spare_open();
    if (aeCreateFileEvent(el, lfd, AE_READABLE, accept_proc, NULL) == AE_ERR)
        return ECHO_EMFILE_PAUSE_MS;        /* try again later */
    return AE_NOMORE;
}

static void accept_proc(aeEventLoop *el, int fd, void *data, int mask)
{
    (void)data; (void)mask;
    /* Accept policy of every server here (common.py): until EAGAIN, at most --backlog. */
    for (long k = 0; k < opt.backlog; k++) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            enum echo_accept_next next = echo_accept_failed(fd, errno, &stats);
            if (next == ECHO_ACCEPT_NEXT)
                continue;
            if (next == ECHO_ACCEPT_PAUSE) {
                aeDeleteFileEvent(el, fd, AE_READABLE);
                aeCreateTimeEvent(el, ECHO_EMFILE_PAUSE_MS, resume_listener, NULL, NULL);
            }
            return;
        }
        stats.accepted++;
        struct conn *c = conn_new(cfd);
        if (!c)
            continue;
        if (opt.diet)
            conn_read(c);
        else
            conn_want(c, AE_READABLE, read_proc);
    }
}

/* ------------------------------------------------------------------ timers, signals */

static int idle_sweep(aeEventLoop *el, long long id, void *data)
{
    (void)el; (void)id;
    long long period = *(long long *)data;
    gen++;
    struct conn *c = live, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->seen + SWEEP_SLICES < gen) {
            stats.idle_timeouts++;
            conn_close(c);
        }
    }
    return (int)period;
}

static void on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    ssize_t r = write(sig_pipe[1], "x", 1);
    (void)r;
    errno = saved;
}

static void signal_proc(aeEventLoop *el, int fd, void *data, int mask)
{
    (void)fd; (void)data; (void)mask;
    aeStop(el);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    echo_parse_args(&opt, "redis_ae", argc, argv);
#ifdef HAVE_MONOTONIC_INIT
    monotonicInit();
#endif
    int limit = echo_fd_limit();
    int setsize = (limit < MAX_SETSIZE ? limit : MAX_SETSIZE) + FDSET_INCR;
    loop = aeCreateEventLoop(setsize);
    conns = calloc((size_t)setsize, sizeof *conns);
    scratch = malloc((size_t)opt.size > ECHO_RECV_SIZE ? (size_t)opt.size : ECHO_RECV_SIZE);
    if (!loop || !conns || !scratch) {
        fprintf(stderr, "redis_ae: cannot create the event loop (setsize %d): %s\n", setsize, strerror(errno));
        return 1;
    }

    if (pipe2(sig_pipe, O_NONBLOCK | O_CLOEXEC) != 0) { perror("redis_ae: pipe2"); return 1; }
    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    lfd = echo_listen(&opt);
    echo_spare_open();
    if (aeCreateFileEvent(loop, sig_pipe[0], AE_READABLE, signal_proc, NULL) == AE_ERR
        || aeCreateFileEvent(loop, lfd, AE_READABLE, accept_proc, NULL) == AE_ERR) {
        fprintf(stderr, "redis_ae: aeCreateFileEvent failed: %s\n", strerror(errno));
        return 1;
    }
    static long long sweep_ms;
    if (opt.idle_timeout > 0) {
        sweep_ms = (long long)(opt.idle_timeout * 1000.0 / SWEEP_SLICES + 0.5);
        if (sweep_ms < 1)
            sweep_ms = 1;
        aeCreateTimeEvent(loop, sweep_ms, idle_sweep, &sweep_ms, NULL);
    }
    echo_print_ready(&opt);

    aeMain(loop);

    long open_now = 0;
    for (struct conn *c = live; c; c = c->next)
        open_now++;
    echo_print_stats(&stats, open_now);
    return 0;
}
