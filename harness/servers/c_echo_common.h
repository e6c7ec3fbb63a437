/*
 * c_echo_common.h -- what the C echo servers (c_epoll.c, redis_ae.c) share, written once.
 *
 * The C counterpart of common.py: the command line, the listener and its socket
 * settings, the READY and STATS lines, and the EMFILE shedding policy.  What differs
 * between the servers -- the event API each one sits on -- stays in their own file,
 * so a difference in their numbers is the event layer's and nothing else.
 *
 * Header-only (static functions) because the Makefile builds each server from one
 * .c file; the cost is that `make` does not notice an edit here by itself
 * (touch the .c files, or `make clean build`).
 *
 * Contract (docs/architecture.md section 2): --host H --port P (0 = any) --size N
 * (default 100) --backlog B (default 4096) --idle-timeout SECONDS (default 10, 0
 * disables) [--diet]; SO_REUSEADDR on the listener, listen(backlog), non-blocking
 * sockets, default buffer sizes, no TCP_NODELAY; READY {...} at start, STATS {...}
 * on SIGTERM/SIGINT then exit 0; bad arguments: one line on stderr, exit 2.
 */
#ifndef C_ECHO_COMMON_H
#define C_ECHO_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ECHO_RECV_SIZE 65536       /* as common.py: recv(65536) swallows modest surplus too */
#define ECHO_DEFER_ACCEPT_S 1      /* diet mode: TCP_DEFER_ACCEPT seconds, as common.py */
#define ECHO_EMFILE_PAUSE_MS 100   /* listener pause when even the spare fd is gone */

struct echo_opts {
    const char *name;              /* server name for READY and messages */
    const char *host;
    int port;
    long size;
    long backlog;
    double idle_timeout;           /* seconds; 0 disables */
    bool diet;
    char bound_host[NI_MAXHOST];   /* numeric address actually bound (READY) */
};

struct echo_stats {
    unsigned long long accepted, served, errors, idle_timeouts, emfile;
};

static inline int64_t echo_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void echo_usage_line(FILE *f, const char *name)
{
    fprintf(f, "usage: %s [--host H] [--port P] [--size N] [--backlog B] "
               "[--idle-timeout SECONDS] [--diet]\n", name);
}

/* One clear line on stderr (plus the usage line), exit 2. */
static void echo_bad_arg(const struct echo_opts *o, const char *what, const char *arg)
{
    fprintf(stderr, "%s: %s '%s'\n", o->name, what, arg);
    echo_usage_line(stderr, o->name);
    exit(2);
}

static long echo_parse_long(const struct echo_opts *o, const char *what, const char *s,
                            long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        echo_bad_arg(o, what, s);
    return v;
}

static void echo_parse_args(struct echo_opts *o, const char *name, int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, 0, 'H'}, {"port", required_argument, 0, 'p'},
        {"size", required_argument, 0, 's'}, {"backlog", required_argument, 0, 'b'},
        {"idle-timeout", required_argument, 0, 'i'}, {"diet", no_argument, 0, 'd'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    *o = (struct echo_opts){ .name = name, .host = "127.0.0.1", .port = 0, .size = 100,
                             .backlog = 4096, .idle_timeout = 10.0 };
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'H': o->host = optarg; break;
        case 'p': o->port = (int)echo_parse_long(o, "--port needs an integer in [0, 65535], got", optarg, 0, 65535); break;
        case 's': o->size = echo_parse_long(o, "--size needs an integer in [1, 16777216], got", optarg, 1, 16 << 20); break;
        case 'b': o->backlog = echo_parse_long(o, "--backlog needs an integer in [1, 1048576], got", optarg, 1, 1 << 20); break;
        case 'i': {
            char *end;
            errno = 0;
            double v = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(v >= 0 && v <= 1e6))
                echo_bad_arg(o, "--idle-timeout needs seconds >= 0 (0 disables), got", optarg);
            o->idle_timeout = v;
            break;
        }
        case 'd': o->diet = true; break;
        case 'h': echo_usage_line(stdout, name); exit(0);
        case ':': echo_bad_arg(o, "this option needs a value:", argv[optind - 1]); break;
        default:  echo_bad_arg(o, "unknown option", argv[optind - 1]); break;
        }
    }
    if (optind < argc)
        echo_bad_arg(o, "unexpected argument", argv[optind]);
}

/* The listener with the common settings, non-blocking.  Fills o->port (the port
 * actually bound, for --port 0) and o->bound_host.  Exits 2 on an unresolvable host,
 * 1 on any other failure, with one line. */
static int echo_listen(struct echo_opts *o)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *res;
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    int rc = getaddrinfo(o->host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "%s: cannot resolve --host '%s': %s\n", o->name, o->host, gai_strerror(rc));
        exit(2);
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0
        || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, (int)o->backlog) < 0) {
        int e = errno;
        if (e == EADDRINUSE)
            fprintf(stderr, "%s: port %d on %s is in use\n", o->name, o->port, o->host);
        else if (e == EADDRNOTAVAIL)
            fprintf(stderr, "%s: address %s is not available on this machine\n", o->name, o->host);
        else
            fprintf(stderr, "%s: cannot listen on %s port %d: %s\n", o->name, o->host, o->port, strerror(e));
        exit(1);
    }
    freeaddrinfo(res);
    if (o->diet) {
        /* As common.py: the kernel wakes us only when the request's first bytes are there. */
        int secs = ECHO_DEFER_ACCEPT_S;
        setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs);
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    if (getnameinfo((struct sockaddr *)&ss, len, o->bound_host, sizeof o->bound_host, NULL, 0,
                    NI_NUMERICHOST) != 0)
        snprintf(o->bound_host, sizeof o->bound_host, "%s", o->host);
    o->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

/* The soft descriptor limit: every fd the process can get is below it. */
static int echo_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1 << 22))
        return 1 << 22;
    return (int)rl.rlim_cur;
}

static void echo_json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20) printf("\\u%04x", (unsigned char)*s);
        else putchar(*s);
    }
    putchar('"');
}

static void echo_print_ready(const struct echo_opts *o)
{
    printf("READY {\"server\": ");
    echo_json_string(o->name);
    printf(", \"host\": ");
    echo_json_string(o->bound_host);
    printf(", \"port\": %d, \"pid\": %d}\n", o->port, (int)getpid());
    fflush(stdout);
}

/* open_now: connections still open at exit (an extra field, not in the contract). */
static void echo_print_stats(const struct echo_stats *s, long open_now)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("STATS {\"accepted\": %llu, \"served\": %llu, \"errors\": %llu, \"idle_timeouts\": %llu, "
           "\"emfile\": %llu, \"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f, \"open_at_exit\": %ld}\n",
           s->accepted, s->served, s->errors, s->idle_timeouts, s->emfile,
           ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
           open_now);
    fflush(stdout);
}

/*
 * EMFILE/ENFILE with a connection pending.  A level-triggered listener would wake us
 * again at once, forever, at 100 % CPU.  So we keep one spare descriptor (on /dev/null):
 * close it, accept the pending connection and close that at once (the client sees its
 * connection closed without an echo: a failure it can count), reopen the spare
 * (libev's, libuv's and nginx's trick; common.py does the same).  Counted in emfile.
 * Returns true when a connection was shed and the caller may go on accepting; false
 * when it could not (no spare left): the caller must then stop watching the listener
 * for ECHO_EMFILE_PAUSE_MS, so that it cannot spin either way.
 */
static int echo_spare_fd = -1;

static void echo_spare_open(void)
{
    if (echo_spare_fd < 0)
        echo_spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static bool echo_shed_one(int lfd, struct echo_stats *s)
{
    s->emfile++;
    if (echo_spare_fd < 0)
        return false;
    close(echo_spare_fd);
    echo_spare_fd = -1;
    int fd = accept(lfd, NULL, NULL);
    if (fd >= 0)
        close(fd);
    echo_spare_open();
    return fd >= 0 && echo_spare_fd >= 0;
}

/* What to do after accept4() failed with errno e. */
enum echo_accept_next { ECHO_ACCEPT_DONE, ECHO_ACCEPT_NEXT, ECHO_ACCEPT_PAUSE };

static enum echo_accept_next echo_accept_failed(int lfd, int e, struct echo_stats *s)
{
    if (e == EAGAIN || e == EWOULDBLOCK)
        return ECHO_ACCEPT_DONE;                       /* backlog drained */
    if (e == EMFILE || e == ENFILE)
        return echo_shed_one(lfd, s) ? ECHO_ACCEPT_NEXT : ECHO_ACCEPT_PAUSE;
    s->errors++;
    /* ECONNABORTED & co: that client is gone, go on with the next.  ENOBUFS, ENOMEM...:
     * try again on the next wake-up. */
    if (e == ECONNABORTED || e == EPROTO || e == EINTR || e == EPERM)
        return ECHO_ACCEPT_NEXT;
    return ECHO_ACCEPT_DONE;
}

#endif
