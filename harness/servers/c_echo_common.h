/*
 * c_echo_common.h -- what the C echo servers (c_epoll.c, redis_ae.c) share besides the
 * per-connection code: the command line, the listener and its socket settings, and the
 * READY and STATS lines.  The accept loop, the state machine, the idle sweep, the
 * EMFILE policy and the counters are in c_echo_conn.c; what differs between the
 * servers -- the event API each one sits on -- stays in their own file, so a
 * difference in their numbers is the event layer's and nothing else.
 *
 * Header-only (static functions): each server includes it once, and c_echo_conn.c,
 * which needs none of it, does not include it.  The Makefile lists it as a
 * prerequisite of both servers, so an edit here rebuilds them.
 *
 * Contract (docs/architecture.md section 2): --host H --port P (0 = any) --size N
 * (default 100) --backlog B (default 4096) --idle-timeout SECONDS (default 10, 0
 * disables) [--diet[=LEVER,...]]; SO_REUSEADDR on the listener, listen(backlog),
 * non-blocking sockets, default buffer sizes, no TCP_NODELAY; READY {...} at start,
 * STATS {...} on SIGTERM/SIGINT then exit 0; bad arguments: a line naming the problem
 * (plus the usage line) on stderr, exit 2.
 */
#ifndef C_ECHO_COMMON_H
#define C_ECHO_COMMON_H

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "c_echo_conn.h"

#define ECHO_DEFER_ACCEPT_S 1      /* defer_accept lever: TCP_DEFER_ACCEPT seconds, as common.py */

struct echo_opts {
    const char *name;              /* server name for READY and messages */
    const char *host;
    int port;
    long size;
    long backlog;
    double idle_timeout;           /* seconds; 0 disables */
    unsigned levers;               /* diet levers on (enum echo_lever bits); 0 = classic */
    bool reuse_port;               /* --reuse-port: SO_REUSEPORT, one of N workers on a port */
    char bound_host[NI_MAXHOST];   /* numeric address actually bound (READY) */
};

static void echo_usage_line(FILE *f, const char *name)
{
    fprintf(f, "usage: %s [--host H] [--port P] [--size N] [--backlog B] "
               "[--idle-timeout SECONDS] [--diet[=LEVER,...]] [--reuse-port]\n", name);
}

/* One clear line on stderr (plus the usage line), exit 2. */
__attribute__((format(printf, 2, 3), noreturn))
static void echo_usage_error(const struct echo_opts *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", o->name);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    echo_usage_line(stderr, o->name);
    exit(2);
}

static void echo_bad_arg(const struct echo_opts *o, const char *what, const char *arg)
{
    echo_usage_error(o, "%s '%s'", what, arg);
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

/* The names of a lever set, canonical order, comma-separated, into buf. */
static const char *echo_lever_list(unsigned levers, char *buf, size_t len)
{
    size_t at = 0;
    buf[0] = '\0';
    for (int k = 0; k < ECHO_LEVER_COUNT; k++)
        if (levers & (1u << k))
            at += (size_t)snprintf(buf + at, at < len ? len - at : 0, "%s%s",
                                   at ? ", " : "", echo_lever_names[k]);
    return buf;
}

/* --diet=LEVER,LEVER: the levers named, each one a lever of ECHO_LEVERS_C. */
static unsigned echo_parse_levers(const struct echo_opts *o, const char *arg)
{
    char allowed[128];
    echo_lever_list(ECHO_LEVERS_C, allowed, sizeof allowed);
    unsigned levers = 0;
    const char *p = arg;
    for (;;) {
        size_t n = strcspn(p, ",");
        int k = 0;
        while (k < ECHO_LEVER_COUNT
               && !(strlen(echo_lever_names[k]) == n && strncmp(p, echo_lever_names[k], n) == 0))
            k++;
        if (n == 0)
            echo_usage_error(o, "--diet: empty lever name in '%s' (--diet alone turns on every "
                             "lever); this server takes: %s", arg, allowed);
        if (k == ECHO_LEVER_COUNT)
            echo_usage_error(o, "--diet: unknown lever '%.*s'; this server takes: %s",
                             (int)n, p, allowed);
        if ((1u << k) == ECHO_LEVER_DONTWAIT)     /* c_echo_conn.h: why it is refused */
            echo_usage_error(o, "--diet: dontwait is built into the C servers (accept4 with "
                             "SOCK_NONBLOCK: no per-connection call to save); this server takes: %s",
                             allowed);
        if (!((1u << k) & ECHO_LEVERS_C))
            echo_usage_error(o, "--diet: this server cannot take lever '%s'; it takes: %s",
                             echo_lever_names[k], allowed);
        levers |= 1u << k;
        if (p[n] == '\0')
            return levers;
        p += n + 1;
    }
}

static void echo_parse_args(struct echo_opts *o, const char *name, int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, 0, 'H'}, {"port", required_argument, 0, 'p'},
        {"size", required_argument, 0, 's'}, {"backlog", required_argument, 0, 'b'},
        {"idle-timeout", required_argument, 0, 'i'}, {"diet", optional_argument, 0, 'd'},
        {"reuse-port", no_argument, 0, 'r'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    *o = (struct echo_opts){ .name = name, .host = "127.0.0.1", .port = 0, .size = 100,
                             .backlog = 4096, .idle_timeout = 10.0 };
    opterr = 0;
    int c;
    bool bare_diet = false;
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
        case 'd':
            /* --diet alone: every lever this server takes; --diet=A,B: just those. */
            o->levers = optarg ? echo_parse_levers(o, optarg) : ECHO_LEVERS_C;
            bare_diet |= !optarg;
            break;
        case 'r': o->reuse_port = true; break;
        case 'h': echo_usage_line(stdout, name); exit(0);
        case ':': echo_bad_arg(o, "this option needs a value:", argv[optind - 1]); break;
        default:  echo_bad_arg(o, "unknown option", argv[optind - 1]); break;
        }
    }
    if (optind < argc) {
        if (bare_diet && strspn(argv[optind], "abcdefghijklmnopqrstuvwxyz_,") == strlen(argv[optind]))
            echo_usage_error(o, "unexpected argument '%s' (levers go after an '=': --diet=LEVER,...)",
                             argv[optind]);
        echo_bad_arg(o, "unexpected argument", argv[optind]);
    }
}

/* The listener with the common settings, non-blocking, and the listener's levers.
 * Fills o->port (the port actually bound, for --port 0) and o->bound_host.  Exits 2 on
 * an unresolvable host, 1 on any other failure, with one line. */
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
    /* --reuse-port: the harness's workers (harness/servers/workers.py) each bind their own
     * listener to one port; the kernel spreads new connections over them by 4-tuple hash. */
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0
        || (o->reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
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
    /* Both inherited by every accepted socket (c_echo_conn.h, the levers).  A failure
     * is reported, not fatal: the server still serves, only without that lever. */
    if (o->levers & ECHO_LEVER_DEFER_ACCEPT) {
        int secs = ECHO_DEFER_ACCEPT_S;
        if (setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs) < 0)
            fprintf(stderr, "%s: warning: TCP_DEFER_ACCEPT: %s\n", o->name, strerror(errno));
    }
    if ((o->levers & ECHO_LEVER_CORK)
        && setsockopt(fd, IPPROTO_TCP, TCP_CORK, &one, sizeof one) < 0)
        fprintf(stderr, "%s: warning: TCP_CORK: %s\n", o->name, strerror(errno));
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

/* READY carries no options (as the Python servers' READY): the levers are in STATS. */
static void echo_print_ready(const struct echo_opts *o)
{
    printf("READY {\"server\": ");
    echo_json_string(o->name);
    printf(", \"host\": ");
    echo_json_string(o->bound_host);
    printf(", \"port\": %d, \"pid\": %d}\n", o->port, (int)getpid());
    fflush(stdout);
}

/* The counters of c_echo_conn.c.  Extra fields beyond the contract: open_at_exit
 * (connections still open at exit), passes/events/events_hist (events per pass,
 * counted by the event layer through echo_count_pass) and diet_levers (the levers --diet turned on,
 * canonical order; [] without --diet). */
static void echo_print_stats(const struct echo_opts *o)
{
    const struct echo_stats *s = echo_stats();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("STATS {\"accepted\": %llu, \"served\": %llu, \"errors\": %llu, \"idle_timeouts\": %llu, "
           "\"emfile\": %llu, \"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f, \"open_at_exit\": %ld, ",
           s->accepted, s->served, s->errors, s->idle_timeouts, s->emfile,
           ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
           echo_open_count());
    printf("\"passes\": %llu, \"events\": %llu, \"events_hist\": [", s->passes, s->events);
    for (int k = 0; k < ECHO_EVENT_BUCKETS; k++)
        printf("%s%llu", k ? ", " : "", s->events_hist[k]);
    printf("], \"diet_levers\": [");
    const char *sep = "";
    for (int k = 0; k < ECHO_LEVER_COUNT; k++)
        if (o->levers & (1u << k)) {
            printf("%s\"%s\"", sep, echo_lever_names[k]);
            sep = ", ";
        }
    printf("]}\n");
    fflush(stdout);
}

#endif
