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
 * This file is only an event layer and a loop.  The protocol, the accept loop and
 * its EMFILE policy, the idle sweep, the counters and the diet levers are
 * c_echo_conn.c's, shared with c_epoll.c; options, listener and READY/STATS are
 * c_echo_common.h's.  So the two C servers differ in the event layer and nothing else.
 *
 * The event layer is ae's by the book, the pattern the Events "master" variant
 * copies: watch READ = create a file event for AE_READABLE; watch WRITE = delete it
 * and create one for AE_WRITABLE; unwatch = delete.  With ae's epoll backend the
 * classic pattern is four epoll_ctl calls per connection (ADD, DEL, ADD, DEL: deleting
 * the only event of an fd unregisters it), the 4 the study's strace showed -- one
 * more than c_epoll's MOD, and that difference is the point of measuring ae.  Under
 * lazy_watch a file event is created only when a call would block, but a registered
 * fd is still deleted before close (close_unwatches is false): ae keeps its own table
 * of registered fds (events[fd].mask), and a stale entry there would make the next
 * connection on that fd number MOD an fd the kernel no longer has.
 *
 * Timers: the idle sweep is a periodic time event every --idle-timeout/4 (ae has
 * timers, and a periodic one is what the sweep needs); the EMFILE pause is a one-shot
 * time event that gives the listener its file event back.
 *
 * Signals: ae has none of its own.  A self-pipe -- the handler writes one byte, a read
 * proc on the other end calls aeStop -- keeps everything outside the handler ordinary
 * code, and cannot miss a signal that lands just before epoll_wait.
 *
 * Trade-off admitted: aeCreateEventLoop(setsize) allocates its tables for setsize fds
 * up front; we size it from RLIMIT_NOFILE (capped), as Redis does from maxclients.
 */
#include "fmacros.h"        /* Redis's feature macros (_GNU_SOURCE...), first, as in every Redis .c */
#include <fcntl.h>
#include <signal.h>

#include "ae.h"
#if defined(__has_include)
#if __has_include("monotonic.h")
#include "monotonic.h"
#define HAVE_MONOTONIC_INIT 1
#endif
#endif

#include "c_echo_common.h"

#define MAX_SETSIZE (1 << 18)
#define FDSET_INCR 128            /* Redis's CONFIG_FDSET_INCR: room above the fd limit */

static aeEventLoop *loop;
static int lfd, sig_pipe[2] = { -1, -1 };

/* Events per pass: ae does not tell its hooks how many fds a poll returned, so each
 * file proc counts one, and the beforesleep hook -- run once before every poll, in
 * every ae from 3.x on -- closes the pass before it (-1: no pass yet). */
static long pass_events = -1;

static void before_sleep(aeEventLoop *el)
{
    (void)el;
    if (pass_events >= 0)
        echo_count_pass(pass_events);
    pass_events = 0;
}

/* ------------------------------------------------------------------ the event layer */

static void conn_proc(aeEventLoop *el, int fd, void *data, int mask)
{
    (void)el; (void)fd; (void)mask;
    pass_events++;
    echo_ready(data);             /* one mask at a time: the core knows which */
}

static int ae_mask(enum echo_watch w)
{
    return w == ECHO_WATCH_READ ? AE_READABLE : w == ECHO_WATCH_WRITE ? AE_WRITABLE : AE_NONE;
}

static int ae_watch(struct echo_conn *c, enum echo_watch what)
{
    if (c->watched != ECHO_WATCH_NONE)
        aeDeleteFileEvent(loop, c->fd, ae_mask(c->watched));
    if (aeCreateFileEvent(loop, c->fd, ae_mask(what), conn_proc, c) == AE_ERR)
        return -1;                /* fd beyond setsize, or epoll_ctl failed */
    return 0;
}

static void ae_unwatch(struct echo_conn *c)
{
    aeDeleteFileEvent(loop, c->fd, AE_READABLE | AE_WRITABLE);
}

static void accept_proc(aeEventLoop *el, int fd, void *data, int mask)
{
    (void)el; (void)data; (void)mask;
    pass_events++;
    echo_accept(fd);
}

static int resume_listener(aeEventLoop *el, long long id, void *data)
{
    (void)id; (void)data;
    echo_spare_open();
    if (aeCreateFileEvent(el, lfd, AE_READABLE, accept_proc, NULL) == AE_ERR)
        return ECHO_EMFILE_PAUSE_MS;        /* try again later */
    return AE_NOMORE;
}

static void ae_pause_listener(void)
{
    aeDeleteFileEvent(loop, lfd, AE_READABLE);
    aeCreateTimeEvent(loop, ECHO_EMFILE_PAUSE_MS, resume_listener, NULL, NULL);
}

static const struct echo_events ae_layer = {
    .watch = ae_watch,
    .unwatch = ae_unwatch,
    .pause_listener = ae_pause_listener,
    .close_unwatches = false,
};

/* ------------------------------------------------------------------ timers, signals */

static int sweep_proc(aeEventLoop *el, long long id, void *data)
{
    (void)el; (void)id; (void)data;
    echo_sweep();
    return (int)echo_sweep_ms();            /* call again in as many ms */
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
    pass_events++;
    aeStop(el);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    static struct echo_opts opt;
    echo_parse_args(&opt, "redis_ae", argc, argv);
#ifdef HAVE_MONOTONIC_INIT
    monotonicInit();
#endif
    int limit = echo_fd_limit();
    int setsize = (limit < MAX_SETSIZE ? limit : MAX_SETSIZE) + FDSET_INCR;
    loop = aeCreateEventLoop(setsize);
    if (!loop || !echo_core_init(&ae_layer, setsize, opt.size, opt.backlog,
                                 opt.idle_timeout, opt.levers)) {
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
    if (aeCreateFileEvent(loop, sig_pipe[0], AE_READABLE, signal_proc, NULL) == AE_ERR
        || aeCreateFileEvent(loop, lfd, AE_READABLE, accept_proc, NULL) == AE_ERR) {
        fprintf(stderr, "redis_ae: aeCreateFileEvent failed: %s\n", strerror(errno));
        return 1;
    }
    if (echo_sweep_ms() > 0)
        aeCreateTimeEvent(loop, echo_sweep_ms(), sweep_proc, NULL, NULL);
    echo_print_ready(&opt);

    aeSetBeforeSleepProc(loop, before_sleep);
    aeMain(loop);
    before_sleep(loop);                     /* the last pass */

    echo_print_stats(&opt);
    return 0;
}
