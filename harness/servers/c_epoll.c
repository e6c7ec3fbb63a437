/*
 * c_epoll -- single-threaded C epoll echo server: the ceiling the Python servers are
 * measured against.
 *
 * Options, listener, READY/STATS and the EMFILE policy come from c_echo_common.h
 * (shared with redis_ae.c).  Protocol and settings are the contract's (docs/architecture.md section 2), the same
 * as every other server here: read exactly --size bytes, send them back, close;
 * surplus bytes are discarded; SO_REUSEADDR on the listener, listen(--backlog),
 * non-blocking sockets, default buffer sizes, no TCP_NODELAY.
 *
 * Two system-call patterns, chosen by --diet, so C and Python can be compared like
 * for like:
 *   classic (default): the pattern of harness/servers/raw_epoll.py -- accept, register
 *     EPOLLIN, recv, modify to EPOLLOUT, send, unregister, close.
 *   diet: TCP_DEFER_ACCEPT on the listener (the kernel wakes us when the request's
 *     first bytes are there), recv right after accept and send right after recv (so
 *     both almost always succeed at once), register with epoll only when one of them
 *     would block, and no EPOLL_CTL_DEL: close() removes the fd from the epoll set
 *     (no event library stands between us and the kernel here, so nothing else needs
 *     to hear about it).  The trade-off: a recv that finds nothing yet is a wasted
 *     system call, and TCP_DEFER_ACCEPT delays a client that connects and waits.
 *
 * Robustness, because a benchmark server must outlive bad clients:
 *   - resets and early closes are counted (errors) and never fatal;
 *   - a client that sends part of a request, or nothing, is closed after --idle-timeout
 *     seconds without progress (idle_timeouts).  Every connection has the same timeout,
 *     so a list kept in order of last activity (move to the tail on progress) gives the
 *     next expiry in O(1);
 *   - EMFILE/ENFILE during a storm: the spare-descriptor policy of c_echo_common.h
 *     (shed the pending connection, counted in emfile); if even that fails, the
 *     listener leaves the epoll set for 100 ms.  It never spins, and service resumes
 *     as soon as descriptors free up;
 *   - SIGTERM/SIGINT arrive on a signalfd watched by the loop, so the STATS line is
 *     printed from ordinary code, never from a signal handler.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>

#include "c_echo_common.h"

#define MAX_EVENTS 1024

struct conn {
    int fd;
    bool reading;                 /* else writing */
    bool in_epoll;                /* registered (diet mode registers lazily) */
    uint32_t done;                /* bytes received (reading) or sent (writing) */
    int64_t last_ms;              /* last progress, for the idle timeout */
    int prev, next;               /* idle list, by fd, oldest first */
    char *buf;                    /* --size bytes, kept for the slot's next connection */
};

static struct echo_opts opt;
static struct echo_stats stats;
static struct conn **conns;       /* indexed by fd */
static int max_fds;
static int epfd, lfd, sfd;
static int idle_head = -1, idle_tail = -1;
static int64_t idle_ms;           /* 0 = disabled */
static char *scratch;
static int64_t listener_paused_until;   /* 0 = listening */

/* ------------------------------------------------------------------ idle list */

static void idle_unlink(struct conn *c)
{
    if (c->prev >= 0) conns[c->prev]->next = c->next; else if (idle_head == c->fd) idle_head = c->next;
    if (c->next >= 0) conns[c->next]->prev = c->prev; else if (idle_tail == c->fd) idle_tail = c->prev;
    c->prev = c->next = -1;
}

static void idle_touch(struct conn *c)      /* progress: move to the tail */
{
    c->last_ms = echo_now_ms();
    if (idle_tail == c->fd)
        return;
    idle_unlink(c);
    c->prev = idle_tail;
    if (idle_tail >= 0) conns[idle_tail]->next = c->fd; else idle_head = c->fd;
    idle_tail = c->fd;
}

/* ------------------------------------------------------------------ connections */

static void conn_close(struct conn *c)
{
    /* Classic pattern unregisters explicitly, as raw_epoll.py does; diet lets close() do it. */
    if (c->in_epoll && !opt.diet)
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    idle_unlink(c);
    close(c->fd);
    c->fd = -1;
}

static void conn_drop(struct conn *c)       /* reset, early close, send error */
{
    stats.errors++;
    conn_close(c);
}

static void conn_watch(struct conn *c, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.fd = c->fd };
    int op = c->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0) {
        perror("c_epoll: epoll_ctl");
        conn_drop(c);
        return;
    }
    c->in_epoll = true;
}

/* Send what is left; close when done.  The connection may be gone on return. */
static void conn_write(struct conn *c)
{
    while (c->done < (uint32_t)opt.size) {
        ssize_t n = send(c->fd, c->buf + c->done, (size_t)opt.size - c->done, MSG_NOSIGNAL);
        if (n > 0) {
            c->done += (uint32_t)n;
            idle_touch(c);
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* Rare with one small write; diet mode pays an epoll_ctl only here. */
            if (opt.diet || !c->in_epoll)
                conn_watch(c, EPOLLOUT);
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
            idle_touch(c);
            if (c->done == (uint32_t)opt.size) {
                c->reading = false;
                c->done = 0;
                if (opt.diet)
                    conn_write(c);          /* send at once: it nearly always fits */
                else
                    conn_watch(c, EPOLLOUT);
                return;
            }
        } else if (n == 0) {
            conn_drop(c);                   /* EOF before N bytes */
            return;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (!c->in_epoll)
                conn_watch(c, EPOLLIN);     /* diet: the request is not all there yet */
            return;
        } else if (errno != EINTR) {
            conn_drop(c);
            return;
        }
    }
}

static void on_conn_event(int fd, uint32_t events)
{
    struct conn *c = conns[fd];
    if (!c || c->fd != fd)
        return;
    if (c->reading)
        conn_read(c);                       /* errors and hang-ups surface through recv */
    else if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
        conn_write(c);
}

static struct conn *conn_new(int fd)
{
    if (fd >= max_fds) {                     /* cannot happen below RLIMIT_NOFILE; be safe */
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
    c->in_epoll = false;
    c->done = 0;
    c->prev = c->next = -1;
    idle_touch(c);
    return c;
}

/* ------------------------------------------------------------------ listener */

static void listener_watch(bool on)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
    epoll_ctl(epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, lfd, on ? &ev : NULL);
}

static void on_accept(void)
{
    /* Accept policy of every server here (common.py): until EAGAIN, at most --backlog
     * per wake-up. */
    for (long k = 0; k < opt.backlog; k++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            enum echo_accept_next next = echo_accept_failed(lfd, errno, &stats);
            if (next == ECHO_ACCEPT_NEXT)
                continue;
            if (next == ECHO_ACCEPT_PAUSE) {
                listener_watch(false);      /* the main loop puts it back */
                listener_paused_until = echo_now_ms() + ECHO_EMFILE_PAUSE_MS;
            }
            return;
        }
        stats.accepted++;
        struct conn *c = conn_new(fd);
        if (!c)
            continue;
        if (opt.diet)
            conn_read(c);                   /* the request is usually there already */
        else
            conn_watch(c, EPOLLIN);
    }
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    echo_parse_args(&opt, "c_epoll", argc, argv);
    idle_ms = (int64_t)(opt.idle_timeout * 1000.0 + 0.5);
    if (opt.idle_timeout > 0 && idle_ms == 0)
        idle_ms = 1;

    max_fds = echo_fd_limit();
    conns = calloc((size_t)max_fds, sizeof *conns);
    scratch = malloc((size_t)opt.size > ECHO_RECV_SIZE ? (size_t)opt.size : ECHO_RECV_SIZE);
    if (!conns || !scratch) { fputs("c_epoll: out of memory\n", stderr); return 1; }

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
    echo_spare_open();
    struct epoll_event sev = { .events = EPOLLIN, .data.fd = sfd };
    epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &sev);
    listener_watch(true);
    echo_print_ready(&opt);

    struct epoll_event evs[MAX_EVENTS];
    bool running = true;
    while (running) {
        int timeout = -1;
        int64_t now = echo_now_ms();
        if (idle_ms > 0 && idle_head >= 0) {
            int64_t left = conns[idle_head]->last_ms + idle_ms - now;
            timeout = left < 0 ? 0 : (int)left + 1;
        }
        if (listener_paused_until) {
            int64_t left = listener_paused_until - now;
            if (left < 0) left = 0;
            if (timeout < 0 || left < timeout) timeout = (int)left;
        }
        int n = epoll_wait(epfd, evs, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("c_epoll: epoll_wait");
            return 1;
        }
        for (int k = 0; k < n; k++) {
            int fd = evs[k].data.fd;
            if (fd == sfd)
                running = false;
            else if (fd == lfd)
                on_accept();
            else
                on_conn_event(fd, evs[k].events);
        }
        now = echo_now_ms();
        while (idle_ms > 0 && idle_head >= 0 && conns[idle_head]->last_ms + idle_ms <= now) {
            stats.idle_timeouts++;
            conn_close(conns[idle_head]);
        }
        if (listener_paused_until && now >= listener_paused_until) {
            listener_paused_until = 0;
            echo_spare_open();
            listener_watch(true);
        }
    }

    long open_now = 0;
    for (int fd = idle_head; fd >= 0; fd = conns[fd]->next)
        open_now++;
    echo_print_stats(&stats, open_now);
    return 0;
}
