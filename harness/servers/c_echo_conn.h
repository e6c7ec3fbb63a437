/*
 * c_echo_conn.h -- the per-connection half of the C echo servers, written once.
 *
 * The C counterpart of common.py's EchoCore.  c_epoll.c and redis_ae.c are meant to
 * differ only in the event layer, so everything that is not the event layer lives in
 * c_echo_conn.c: the accept loop with its EMFILE policy, the per-connection state
 * machine (read exactly --size bytes, send them back, close; surplus discarded;
 * errors counted, never fatal), the counters, the idle sweep, and the syscall-diet
 * levers.  A server supplies a small event layer (struct echo_events: watch, unwatch,
 * pause the listener) and a loop that calls echo_accept(), echo_ready() and
 * echo_sweep().  The options, the listener and the READY/STATS lines are in
 * c_echo_common.h.
 *
 * The state machine, with what the event layer is asked to do in brackets:
 *
 *   accept -> [watch READ] -> recv until N bytes -> [watch WRITE] -> send until N
 *          -> [unwatch] -> close
 *
 * Classic (no lazy_watch): every bracket happens, which is raw_epoll.py's pattern on
 * epoll (ADD IN, MOD OUT, DEL) and ae's by the book on ae (create READABLE; delete it
 * and create WRITABLE; delete), so the C servers and the Python ones pay the same
 * event-layer calls.  With lazy_watch, a bracket happens only when the call before it
 * would block (see the levers below).
 *
 * Why a separate compilation unit, when c_echo_common.h is header-only: the event
 * layer is a real interface here (function pointers the two servers fill in), and a
 * .c file keeps the module's state (connection table, live list, counters, spare fd)
 * in one place.  The cost is an indirect call per watch/unwatch, which is nothing next
 * to the epoll_ctl it leads to.
 */
#ifndef C_ECHO_CONN_H
#define C_ECHO_CONN_H

#include <stdbool.h>
#include <stdint.h>

#define ECHO_RECV_SIZE 65536       /* as common.py: recv(65536) swallows modest surplus too */
#define ECHO_EMFILE_PAUSE_MS 100   /* listener pause when even the spare fd is gone */
#define ECHO_SWEEP_SLICES 4        /* idle sweeps per timeout period, as common.py */

/*
 * The syscall-diet levers (issue 7; the same names in every server of the project,
 * canonical order as listed).  `--diet` turns on every lever a server supports,
 * `--diet=LEVER,LEVER` just those; STATS reports the ones that are on
 * ("diet_levers").  What each one saves on this side, per connection:
 *
 * defer_accept  TCP_DEFER_ACCEPT (1 s) on the listener: the kernel wakes us only when
 *               the request's first bytes have arrived, so the recv that follows accept
 *               almost never finds nothing.  Saves the wake-up between accept and the
 *               data; costs a client that connects and waits to speak first about a
 *               second before it is accepted (then the idle timeout applies).
 * cork          TCP_CORK on the listener, inherited by every accepted socket: the reply
 *               waits in the kernel until close(), and the data and the FIN leave in one
 *               segment.  One packet less each way (the client's ACKs of data and FIN
 *               merge too), so less TCP work in both kernels, for no extra system call
 *               and no added latency (close follows the last send at once, so cork's
 *               200 ms ceiling never applies).  In the Python servers it was the largest
 *               single saving of the diet (docs/performance.md).
 * dontwait      (Python servers) MSG_DONTWAIT on each recv/send instead of
 *               setblocking(False)'s ioctl(FIONBIO).  Built into the C servers: accept4
 *               with SOCK_NONBLOCK makes the socket non-blocking inside the accept call,
 *               in both patterns, so there is nothing for the diet to change.  It is
 *               therefore refused on the command line (a lever that does nothing would
 *               look like a measured effect) and never listed in diet_levers.
 * lazy_watch    recv right after accept, send right after the request is complete, and
 *               register with the event layer only when a call would block: a connection
 *               whose request is already there (defer_accept makes that the rule) needs
 *               no watch at all.  A connection that did get registered is not
 *               unregistered before close where nothing but the kernel needs to hear
 *               about it (raw epoll: close() drops the fd from the epoll set, as no
 *               duplicate of the fd exists); ae keeps its own table of registered fds, so
 *               redis_ae still deletes the event.  Saves the three (epoll) or four (ae)
 *               epoll_ctl calls of the classic pattern; costs a wasted recv when the
 *               request is not there yet (rare with defer_accept, common without it).
 */
enum echo_lever {
    ECHO_LEVER_DEFER_ACCEPT = 1u << 0,
    ECHO_LEVER_CORK         = 1u << 1,
    ECHO_LEVER_DONTWAIT     = 1u << 2,
    ECHO_LEVER_LAZY_WATCH   = 1u << 3,
};
#define ECHO_LEVER_COUNT 4
/* The levers the C servers take: every one but dontwait (built in, above). */
#define ECHO_LEVERS_C (ECHO_LEVER_DEFER_ACCEPT | ECHO_LEVER_CORK | ECHO_LEVER_LAZY_WATCH)

/* Lever names in canonical order; bit k of a lever set is echo_lever_names[k]. */
extern const char *const echo_lever_names[ECHO_LEVER_COUNT];

/* What the event layer watches a connection for. */
enum echo_watch { ECHO_WATCH_NONE = 0, ECHO_WATCH_READ = 1, ECHO_WATCH_WRITE = 2 };

struct echo_conn {
    int fd;                        /* -1 once closed (the slot is kept for reuse) */
    bool reading;                  /* else writing */
    uint8_t watched;               /* enum echo_watch: what the event layer watches */
    uint32_t done;                 /* bytes received (reading) or sent (writing) */
    unsigned long long seen;       /* sweep generation of the last progress */
    struct echo_conn *prev, *next; /* live connections, for the sweep */
    char *buf;                     /* --size bytes, kept for the slot's next connection */
};

/* Passes by events returned: 0, 1, 2-3, 4-7, 8-15, 16+ (harness/servers/counters.py). */
#define ECHO_EVENT_BUCKETS 6

struct echo_stats {
    unsigned long long accepted, served, errors, idle_timeouts, emfile;
    /* Events per pass (issue 28): polls of the event layer, the events they returned,
     * and the histogram of events per poll. */
    unsigned long long passes, events, events_hist[ECHO_EVENT_BUCKETS];
};

/* What a server's event layer supplies. */
struct echo_events {
    /* Watch c->fd for `what` only: register it if c->watched is ECHO_WATCH_NONE,
     * else switch it from c->watched.  0 on success; -1 (the core counts an error
     * and closes the connection).  The core sets c->watched afterwards. */
    int (*watch)(struct echo_conn *c, enum echo_watch what);
    /* Stop watching c->fd (c->watched != NONE): it is about to be closed. */
    void (*unwatch)(struct echo_conn *c);
    /* Accepting failed for want of descriptors and the spare is gone: stop watching
     * the listener, and after ECHO_EMFILE_PAUSE_MS call echo_spare_open() and watch
     * it again.  The listener can then spin neither way. */
    void (*pause_listener)(void);
    /* True when close() alone removes the fd from everything the layer keeps (raw
     * epoll); lazy_watch then skips unwatch before close.  False for ae. */
    bool close_unwatches;
};

/* Set up: `max_fds` sizes the connection table (an accepted fd >= max_fds is closed
 * and counted as an error); `size` is --size, `idle_timeout_s` --idle-timeout
 * (0 disables the sweep), `levers` the diet levers that are on.  Opens the spare
 * descriptor.  Returns false when memory is short. */
bool echo_core_init(const struct echo_events *ev, int max_fds, long size, long backlog,
                    double idle_timeout_s, unsigned levers);

/* The listener is readable: accept until EAGAIN, at most --backlog connections. */
void echo_accept(int lfd);

/* The connection's fd was reported by the event layer (readable, writable, error or
 * hang-up: the core dispatches on what the connection waits for, and the recv or send
 * reports any error).  The connection may be closed on return. */
void echo_ready(struct echo_conn *c);

/* The connection on fd, or NULL (not a connection, or already closed). */
struct echo_conn *echo_conn_of(int fd);

/* Milliseconds between idle sweeps; 0 when the idle timeout is disabled. */
long long echo_sweep_ms(void);

/* One idle sweep: call every echo_sweep_ms().  Closes (and counts) connections
 * without progress for ECHO_SWEEP_SLICES sweeps. */
void echo_sweep(void);

/* (Re)open the spare descriptor of the EMFILE policy, if it is not open. */
void echo_spare_open(void);

/* The event layer polled once and got n events (n >= 0): counted for STATS. */
void echo_count_pass(long n);

/* Connections open now (for STATS' open_at_exit). */
long echo_open_count(void);

const struct echo_stats *echo_stats(void);

#endif
