/*
 * c_echo_conn.c -- the per-connection state machine of the C echo servers (interface
 * and the diet levers: c_echo_conn.h).
 *
 * Idle timeout: a generation sweep, the policy of every Python server (common.py)
 * -------------------------------------------------------------------------------
 * A client that connects and never sends, or sends part of a request (or reads
 * nothing of its reply) and goes quiet, is closed after --idle-timeout seconds without
 * progress, counted in idle_timeouts.  The event layer calls echo_sweep() every
 * timeout/ECHO_SWEEP_SLICES; a sweep bumps a generation counter and closes every
 * connection whose last progress is more than ECHO_SWEEP_SLICES generations old, so a
 * quiet connection is closed between 1 and 1.25 timeouts after its last progress.
 * Progress costs one integer store (c->seen = gen).
 *
 * The two C servers used to differ here.  c_epoll kept a list in order of last
 * activity and read the clock on every progress (accept, each recv, each send: three
 * clock_gettime per connection on the fast path, plus moving the connection to the
 * tail each time), which bought a timeout exact to the millisecond; redis_ae had the
 * sweep.  We keep the sweep, because
 *   - it is what every Python server does, so all the servers of a comparison close
 *     a quiet client at the same moment, and the C floor pays for its idle timeout
 *     what the Python servers pay (one store per progress, no clock), not less;
 *   - the fast path, where a connection is done within one wake-up and never
 *     expires, is the one a benchmark measures; the timeout exists for bad clients,
 *     for whom a quarter-timeout of slack is immaterial.
 * What it costs: precision (up to 1.25 x the timeout, not 1.0 x), a wake-up every
 * timeout/4 even when the server has nothing to do, and a scan of every live
 * connection per sweep (O(open connections), a few times per timeout period: the
 * concurrency, 64 in a benchmark, is small).
 *
 * Accept: until EAGAIN, at most --backlog per wake-up (asyncio's rule, common.py's
 * "Accept policy"), with accept4(SOCK_NONBLOCK | SOCK_CLOEXEC): the socket is
 * non-blocking from the accept call on, with no further system call.
 *
 * One process, one thread, so the module's state is file-level: a table of
 * connections indexed by fd (slots and their buffers reused by the next connection on
 * that fd), the list of live ones, the counters, the spare descriptor.  Unlike
 * common.py's sweep (which only shuts sockets down, because mul_thread's workers may
 * be using a connection), the sweep here closes connections itself: no other code can
 * be holding one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "c_echo_conn.h"

const char *const echo_lever_names[ECHO_LEVER_COUNT] = {
    "defer_accept", "cork", "dontwait", "lazy_watch",
};

static const struct echo_events *ev;
static struct echo_stats stats;
static struct echo_conn **conns;   /* indexed by fd */
static int max_fds;
static struct echo_conn *live;     /* open connections, newest first */
static long n_live;
static uint32_t size;              /* --size (<= 16 MiB: fits) */
static long backlog;
static bool lazy;                  /* lazy_watch */
static long long sweep_ms;         /* 0 = no idle timeout */
static unsigned long long gen;     /* sweep generation */
static char *scratch;              /* recv buffer: max(--size, ECHO_RECV_SIZE) */

bool echo_core_init(const struct echo_events *events, int fds, long sz, long bl,
                    double idle_timeout_s, unsigned levers)
{
    ev = events;
    max_fds = fds;
    size = (uint32_t)sz;
    backlog = bl;
    lazy = levers & ECHO_LEVER_LAZY_WATCH;
    sweep_ms = 0;
    if (idle_timeout_s > 0) {
        sweep_ms = (long long)(idle_timeout_s * 1000.0 / ECHO_SWEEP_SLICES + 0.5);
        if (sweep_ms < 1)
            sweep_ms = 1;
    }
    conns = calloc((size_t)fds, sizeof *conns);
    scratch = malloc(size > ECHO_RECV_SIZE ? size : ECHO_RECV_SIZE);
    echo_spare_open();
    return conns && scratch;
}

const struct echo_stats *echo_stats(void) { return &stats; }

void echo_count_pass(long n)
{
    int b = 0;
    while (n >> b && b < ECHO_EVENT_BUCKETS - 1)   /* bucket = min(bit_length(n), 5) */
        b++;
    stats.passes++;
    stats.events += (unsigned long long)(n > 0 ? n : 0);
    stats.events_hist[b]++;
}
long echo_open_count(void) { return n_live; }
long long echo_sweep_ms(void) { return sweep_ms; }

struct echo_conn *echo_conn_of(int fd)
{
    if (fd < 0 || fd >= max_fds)
        return NULL;
    struct echo_conn *c = conns[fd];
    return c && c->fd == fd ? c : NULL;
}

/* ------------------------------------------------------------------ connections */

static void conn_close(struct echo_conn *c)
{
    /* Classic: unregister first, as raw_epoll.py does.  lazy_watch: let close() do it
     * where that is enough (c_echo_conn.h, the levers). */
    if (c->watched != ECHO_WATCH_NONE && !(lazy && ev->close_unwatches))
        ev->unwatch(c);
    c->watched = ECHO_WATCH_NONE;
    if (c->prev) c->prev->next = c->next; else live = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    n_live--;
    close(c->fd);
    c->fd = -1;
}

static void conn_drop(struct echo_conn *c)       /* reset, early close, send error */
{
    stats.errors++;
    conn_close(c);
}

/* Ask the event layer to watch c for `what`; false when it could not (c is closed). */
static bool conn_watch(struct echo_conn *c, enum echo_watch what)
{
    if (ev->watch(c, what) < 0) {
        conn_drop(c);
        return false;
    }
    c->watched = (uint8_t)what;
    return true;
}

/* Send what is left; close when done.  The connection may be gone on return. */
static void conn_write(struct echo_conn *c)
{
    while (c->done < size) {
        ssize_t n = send(c->fd, c->buf + c->done, size - c->done, MSG_NOSIGNAL);
        if (n > 0) {
            c->done += (uint32_t)n;
            c->seen = gen;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* Classic: already watched for writing.  lazy_watch: the first watch (or a
             * switch from reading), and rare with one small write. */
            if (c->watched != ECHO_WATCH_WRITE)
                conn_watch(c, ECHO_WATCH_WRITE);
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

/* Receive until --size bytes are in; the rest of what one recv returns is surplus. */
static void conn_read(struct echo_conn *c)
{
    for (;;) {
        size_t want = size - c->done;
        ssize_t n = recv(c->fd, scratch, want > ECHO_RECV_SIZE ? want : ECHO_RECV_SIZE, 0);
        if (n > 0) {
            size_t take = (size_t)n < want ? (size_t)n : want;
            memcpy(c->buf + c->done, scratch, take);
            c->done += (uint32_t)take;
            c->seen = gen;
            if (c->done < size)
                continue;
            c->reading = false;
            c->done = 0;
            if (lazy)
                conn_write(c);                  /* send at once: it nearly always fits */
            else
                conn_watch(c, ECHO_WATCH_WRITE);
            return;
        } else if (n == 0) {
            conn_drop(c);                       /* EOF before N bytes */
            return;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (c->watched != ECHO_WATCH_READ)
                conn_watch(c, ECHO_WATCH_READ); /* lazy_watch: not all there yet */
            return;
        } else if (errno != EINTR) {
            conn_drop(c);
            return;
        }
    }
}

void echo_ready(struct echo_conn *c)
{
    if (c->reading)
        conn_read(c);
    else
        conn_write(c);
}

static struct echo_conn *conn_new(int fd)
{
    if (fd >= max_fds) {                  /* cannot happen below the table's size; be safe */
        close(fd);
        stats.errors++;
        return NULL;
    }
    struct echo_conn *c = conns[fd];
    if (!c) {
        c = calloc(1, sizeof *c);
        char *buf = malloc(size);
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
    c->watched = ECHO_WATCH_NONE;
    c->done = 0;
    c->seen = gen;
    c->prev = NULL;
    c->next = live;
    if (live) live->prev = c;
    live = c;
    n_live++;
    return c;
}

/* ------------------------------------------------------------------ idle sweep */

void echo_sweep(void)
{
    gen++;
    struct echo_conn *c = live, *next;
    for (; c; c = next) {
        next = c->next;                   /* conn_close unlinks c only */
        if (c->seen + ECHO_SWEEP_SLICES < gen) {
            stats.idle_timeouts++;
            conn_close(c);
        }
    }
}

/* ------------------------------------------------------------------ accept, EMFILE */

/*
 * EMFILE/ENFILE with a connection pending.  A level-triggered listener would wake us
 * again at once, forever, at 100 % CPU.  So we keep one spare descriptor (on /dev/null):
 * close it, accept the pending connection and close that at once (the client sees its
 * connection closed without an echo: a failure it can count), reopen the spare
 * (libev's, libuv's and nginx's trick; common.py does the same).  Counted in emfile.
 * Returns true when a connection was shed and the accept loop may go on; false when it
 * could not (no spare left): the event layer then stops watching the listener for
 * ECHO_EMFILE_PAUSE_MS (pause_listener), so that it cannot spin either way.
 */
static int spare_fd = -1;

void echo_spare_open(void)
{
    if (spare_fd < 0)
        spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static bool shed_one(int lfd)
{
    stats.emfile++;
    if (spare_fd < 0)
        return false;
    close(spare_fd);
    spare_fd = -1;
    int fd = accept(lfd, NULL, NULL);
    if (fd >= 0)
        close(fd);
    echo_spare_open();
    return fd >= 0 && spare_fd >= 0;
}

enum accept_next { ACCEPT_DONE, ACCEPT_NEXT, ACCEPT_PAUSE };

/* What to do after accept4() failed with errno e. */
static enum accept_next accept_failed(int lfd, int e)
{
    if (e == EAGAIN || e == EWOULDBLOCK)
        return ACCEPT_DONE;                       /* backlog drained */
    if (e == EMFILE || e == ENFILE)
        return shed_one(lfd) ? ACCEPT_NEXT : ACCEPT_PAUSE;
    stats.errors++;
    /* ECONNABORTED & co: that client is gone, go on with the next.  ENOBUFS, ENOMEM...:
     * try again on the next wake-up. */
    if (e == ECONNABORTED || e == EPROTO || e == EINTR || e == EPERM)
        return ACCEPT_NEXT;
    return ACCEPT_DONE;
}

void echo_accept(int lfd)
{
    for (long k = 0; k < backlog; k++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            enum accept_next next = accept_failed(lfd, errno);
            if (next == ACCEPT_NEXT)
                continue;
            if (next == ACCEPT_PAUSE)
                ev->pause_listener();
            return;
        }
        stats.accepted++;
        struct echo_conn *c = conn_new(fd);
        if (!c)
            continue;
        if (lazy)
            conn_read(c);                     /* the request is usually there already */
        else
            conn_watch(c, ECHO_WATCH_READ);
    }
}
