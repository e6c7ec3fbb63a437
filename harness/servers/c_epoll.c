/*
 * c_epoll -- single-threaded C epoll echo server: the ceiling the Python servers are
 * measured against.
 *
 * This file is only an event layer and a loop.  The protocol (read exactly --size
 * bytes, send them back, close; surplus discarded), the accept loop and its EMFILE
 * policy, the idle sweep, the counters and the diet levers are c_echo_conn.c's,
 * shared with redis_ae.c; options, listener and READY/STATS are c_echo_common.h's.
 * So c_epoll and redis_ae differ in the event layer and nothing else, and c_epoll
 * against raw_epoll.py is C against Python for the same state machine.
 *
 * The event layer is raw epoll, level-triggered, one epoll_ctl per request of the
 * core: watch READ on a new fd = ADD EPOLLIN, watch WRITE = MOD EPOLLOUT (ADD when the
 * fd is not registered yet, as under lazy_watch), unwatch = DEL.  So the classic
 * pattern (no --diet) is raw_epoll.py's: accept4, ADD IN, recv, MOD OUT, send, DEL,
 * close.  Under lazy_watch the DEL is skipped (close_unwatches): close() removes the
 * fd from the epoll set, and no event library keeps a table that needs to hear about
 * it.  --diet (every lever) is accept4, recv, send, close: no epoll_ctl, and nearly
 * no epoll_wait per connection.  The trade-offs of each lever: c_echo_conn.h.
 *
 * The loop: epoll_wait's timeout is the time left to the nearest deadline -- the next
 * idle sweep (every --idle-timeout/4) or the end of an EMFILE pause -- from one clock
 * read per pass, after the pass's events (raw_epoll.py does the same).  With
 * --idle-timeout 0 and no pause it blocks with no timeout and reads no clock.
 *
 * Robustness, because a benchmark server must outlive bad clients: resets and early
 * closes are counted (errors) and never fatal; quiet clients are closed by the idle
 * sweep; on EMFILE the core sheds the pending connection with the spare descriptor,
 * and if even that fails the listener leaves the epoll set for ECHO_EMFILE_PAUSE_MS,
 * so it never spins.  SIGTERM/SIGINT arrive on a signalfd watched by the loop, so the
 * STATS line is printed from ordinary code, never from a signal handler.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>

#include "c_echo_common.h"

#define MAX_EVENTS 1024

static int epfd, lfd, sfd;
static int64_t listener_paused_until;   /* 0 = listening */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ the event layer */

static int ep_watch(struct echo_conn *c, enum echo_watch what)
{
    struct epoll_event e = { .events = what == ECHO_WATCH_READ ? EPOLLIN : EPOLLOUT,
                             .data.fd = c->fd };
    int op = c->watched == ECHO_WATCH_NONE ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (epoll_ctl(epfd, op, c->fd, &e) < 0) {
        perror("c_epoll: epoll_ctl");
        return -1;
    }
    return 0;
}

static void ep_unwatch(struct echo_conn *c)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
}

static void listener_watch(bool on)
{
    struct epoll_event e = { .events = EPOLLIN, .data.fd = lfd };
    epoll_ctl(epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, lfd, on ? &e : NULL);
}

static void ep_pause_listener(void)
{
    listener_watch(false);              /* the loop puts it back */
    listener_paused_until = now_ms() + ECHO_EMFILE_PAUSE_MS;
}

static const struct echo_events epoll_layer = {
    .watch = ep_watch,
    .unwatch = ep_unwatch,
    .pause_listener = ep_pause_listener,
    .close_unwatches = true,
};

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    static struct echo_opts opt;
    echo_parse_args(&opt, "c_epoll", argc, argv);
    if (!echo_core_init(&epoll_layer, echo_fd_limit(), opt.size, opt.backlog,
                        opt.idle_timeout, opt.levers)) {
        fputs("c_epoll: out of memory\n", stderr);
        return 1;
    }

    /* SIGTERM/SIGINT arrive as readable data on a signalfd, handled in the loop. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (sfd < 0 || epfd < 0) { perror("c_epoll: setup"); return 1; }
    lfd = echo_listen(&opt);
    struct epoll_event sev = { .events = EPOLLIN, .data.fd = sfd };
    epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &sev);
    listener_watch(true);
    echo_print_ready(&opt);

    const int64_t sweep_ms = echo_sweep_ms();
    int64_t now = sweep_ms ? now_ms() : 0;
    int64_t next_sweep = sweep_ms ? now + sweep_ms : 0;      /* 0 = no idle timeout */
    struct epoll_event evs[MAX_EVENTS];
    bool running = true;
    while (running) {
        int timeout = -1;
        if (next_sweep || listener_paused_until) {
            int64_t due = !next_sweep ? listener_paused_until
                        : !listener_paused_until || next_sweep < listener_paused_until
                          ? next_sweep : listener_paused_until;
            timeout = due <= now ? 0 : (int)(due - now);
        }
        int n = epoll_wait(epfd, evs, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("c_epoll: epoll_wait");
            return 1;
        }
        echo_count_pass(n);
        for (int k = 0; k < n; k++) {
            int fd = evs[k].data.fd;
            if (fd == sfd) {
                running = false;
            } else if (fd == lfd) {
                echo_accept(lfd);
            } else {
                /* Errors and hang-ups arrive with either event; the recv or send
                 * reports them. */
                struct echo_conn *c = echo_conn_of(fd);
                if (c)
                    echo_ready(c);
            }
        }
        if (next_sweep || listener_paused_until) {
            now = now_ms();
            if (next_sweep && now >= next_sweep) {
                echo_sweep();
                next_sweep = now + sweep_ms;
            }
            if (listener_paused_until && now >= listener_paused_until) {
                listener_paused_until = 0;
                echo_spare_open();
                listener_watch(true);
            }
        }
    }

    echo_print_stats(&opt);
    return 0;
}
