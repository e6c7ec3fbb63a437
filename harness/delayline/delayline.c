/*
 * delayline -- the emulated link's wire: one-way delay and random loss between the
 * client's and the server's network namespaces, on a kernel without netem.
 *
 * Why a program, and why TUN.  The emulated link (harness/link.py) is two network
 * namespaces.  Bandwidth is tbf, which this kernel has; delay and loss are netem,
 * which it has not (nor fq, nor sfq).  A TUN device is the kernel's own way to hand
 * IP packets to a user-space program and take them back, so the link becomes: a TUN
 * device in each namespace (evt-cli in the client's, evt-srv in the server's), each
 * the only route to the other side's address, and this program in between.  A
 * packet the client's stack sends leaves through evt-cli's qdisc (tbf: the rate),
 * is read here, held for the one-way delay, and written into evt-srv, where the
 * server's stack receives it as if from a wire; the same the other way round.  Two
 * user-space crossings per packet cost CPU (a read and a write, ~2-4 us here), which
 * is why the plain veth link stays the default and this path is only taken when a
 * delay or a loss is asked for; our own CPU time is reported so the cost is recorded
 * beside every figure it may have touched.
 *
 * Namespaces.  A TUN device is created in the network namespace of the process that
 * opens /dev/net/tun and calls TUNSETIFF, and its fd stays bound to that device (and
 * holds a reference to that namespace) wherever the process goes next.  So: setns()
 * into the client's namespace, create evt-cli; setns() into the server's, create
 * evt-srv; stay there.  The devices are not persistent: they vanish with our fds,
 * i.e. when this process exits for any reason, so a dead delay line never leaves a
 * device behind (and, holding the namespaces' references until then, never lets a
 * device be moved to the host's namespace).  Living in the server's namespace, we
 * are found by `ip netns pids`, which is how link.py's stale-namespace cleanup finds
 * and kills a delay line orphaned by a SIGKILLed harness; PR_SET_PDEATHSIG makes us
 * exit when the harness dies in the first place.
 *
 * Order and timing.  One FIFO per direction.  The delay is constant per direction,
 * so a packet read later is due later: FIFO order *is* due-time order, no sorting,
 * and packet order per direction is kept by construction (like a wire, unlike
 * netem with jitter).  Each packet is stamped on arrival (CLOCK_MONOTONIC, taken
 * once per wake-up, right after ppoll returns) and written when now >= stamp +
 * delay.  The loop sleeps in ppoll() with a nanosecond timeout to the earliest due
 * packet of either direction (timer slack set to 1 ns, so the kernel does not round
 * our wake-ups up by its default 50 us); how late each packet actually left is
 * measured and reported (mean and max), so the delay's precision is a recorded
 * figure, not an assumption.  Reads are taken in batches of at most 64 packets per
 * direction per wake-up, so one busy direction cannot starve the other.
 *
 * Rate.  Left to tbf, on each TUN device's egress, before the packet reaches us:
 * serialisation first, then propagation, as on a real link.  Doing the rate here too
 * would duplicate a mechanism the kernel has and that the veth link already uses.
 *
 * Loss.  Each packet is dropped with probability --loss on arrival, independently
 * per direction, from a seeded PRNG (splitmix64, one stream per direction), so a
 * run is repeatable given its seed, which is recorded.  Drops are counted by cause:
 * loss (the random drop asked for), queue (our FIFO full: --queue packets per
 * direction), write (the kernel refused a write).  The kernel's own drops before we
 * read (the TUN ring, sized by txqueuelen) show in the device's tx_dropped, which
 * link.py records beside ours.
 *
 * Interface.  Arguments name the two namespaces (paths under /run/netns), the two
 * devices, the delay in microseconds, the loss as a fraction, the seed.  stdout: one
 * "READY {...}" line once both devices exist, then "STATS {...}" (cumulative
 * counters per direction, CPU user/sys seconds from getrusage) on each SIGUSR1 and a
 * last one on SIGTERM/SIGINT, after which we exit 0.  Signals are blocked except
 * inside ppoll (the pselect pattern), so a signal is never lost between a check and
 * the sleep.  Exit 2 on bad arguments, 1 when it cannot run (no /dev/net/tun, no
 * privilege), with one line on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000ULL
#define MAX_PKT 65536
#define READ_BATCH 64
#define DEFAULT_QUEUE 65536
#define NICE (-10)

struct pkt {
    uint64_t due;
    uint32_t len;
    unsigned char *data;
};

struct dir {
    const char *name;          /* "client_to_server" or "server_to_client" */
    int in_fd, out_fd;
    struct pkt *q;
    size_t cap, head, count;
    uint64_t rng;
    uint64_t packets_in, bytes_in, packets_out, bytes_out;
    uint64_t dropped_loss, dropped_queue, write_errors;
    uint64_t late_sum_ns, late_max_ns, max_queued;
};

static volatile sig_atomic_t want_stats, want_stop;
static uint64_t delay_ns;
static double loss;
static uint64_t seed = 1;
static size_t queue_cap = DEFAULT_QUEUE;
static uint64_t t_start;

static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("delayline: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static bool lose(struct dir *d)
{
    if (loss <= 0)
        return false;
    double u = (double)(splitmix64(&d->rng) >> 11) * (1.0 / 9007199254740992.0);
    return u < loss;
}

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        want_stats = 1;
    else
        want_stop = 1;
}

/* Create TUN device `dev` inside the network namespace at `nspath`; we stay there. */
static int tun_in(const char *nspath, const char *dev)
{
    int nsfd = open(nspath, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0)
        die(1, "cannot open network namespace %s: %s", nspath, strerror(errno));
    if (setns(nsfd, CLONE_NEWNET) < 0)
        die(1, "cannot enter network namespace %s: %s (needs CAP_SYS_ADMIN: run as root)",
            nspath, strerror(errno));
    close(nsfd);
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        die(1, "cannot open /dev/net/tun: %s (load the tun module, or in a container pass "
               "the device through)", strerror(errno));
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", dev);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0)
        die(1, "cannot create TUN device %s in %s: %s (needs CAP_NET_ADMIN: run as root)",
            dev, nspath, strerror(errno));
    return fd;
}

static void flush_due(struct dir *d, uint64_t now)
{
    while (d->count && d->q[d->head].due <= now) {
        struct pkt *p = &d->q[d->head];
        ssize_t w = write(d->out_fd, p->data, p->len);
        if (w == (ssize_t)p->len) {
            d->packets_out++;
            d->bytes_out += p->len;
            uint64_t late = now - p->due;
            d->late_sum_ns += late;
            if (late > d->late_max_ns)
                d->late_max_ns = late;
        } else {
            d->write_errors++;
        }
        free(p->data);
        p->data = NULL;
        d->head = (d->head + 1) % d->cap;
        d->count--;
    }
}

static void read_some(struct dir *d, uint64_t now, unsigned char *buf)
{
    for (int k = 0; k < READ_BATCH; k++) {
        ssize_t n = read(d->in_fd, buf, MAX_PKT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            die(1, "read from the %s TUN device failed: %s", d->name, strerror(errno));
        }
        if (n == 0)
            return;
        d->packets_in++;
        d->bytes_in += (uint64_t)n;
        if (lose(d)) {
            d->dropped_loss++;
            continue;
        }
        if (d->count == d->cap) {
            d->dropped_queue++;
            continue;
        }
        unsigned char *copy = malloc((size_t)n);
        if (!copy) {
            d->dropped_queue++;
            continue;
        }
        memcpy(copy, buf, (size_t)n);
        struct pkt *p = &d->q[(d->head + d->count) % d->cap];
        p->due = now + delay_ns;
        p->len = (uint32_t)n;
        p->data = copy;
        d->count++;
        if (d->count > d->max_queued)
            d->max_queued = d->count;
    }
}

static void print_dir(FILE *f, const struct dir *d)
{
    fprintf(f, "\"%s\": {\"packets_in\": %" PRIu64 ", \"bytes_in\": %" PRIu64
            ", \"packets_out\": %" PRIu64 ", \"bytes_out\": %" PRIu64
            ", \"dropped_loss\": %" PRIu64 ", \"dropped_queue\": %" PRIu64
            ", \"write_errors\": %" PRIu64 ", \"queued\": %zu, \"max_queued\": %" PRIu64
            ", \"late_sum_us\": %.3f, \"late_max_us\": %.3f}",
            d->name, d->packets_in, d->bytes_in, d->packets_out, d->bytes_out, d->dropped_loss,
            d->dropped_queue, d->write_errors, d->count, d->max_queued,
            (double)d->late_sum_ns / 1e3, (double)d->late_max_ns / 1e3);
}

static void print_stats(const struct dir *c2s, const struct dir *s2c, bool final)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("STATS {\"pid\": %d, \"final\": %s, \"uptime_s\": %.3f, \"delay_us\": %.3f, "
           "\"loss\": %.6g, \"seed\": %" PRIu64 ", \"queue\": %zu, "
           "\"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f, ",
           (int)getpid(), final ? "true" : "false", (double)(now_ns() - t_start) / 1e9,
           (double)delay_ns / 1e3, loss, seed, queue_cap,
           ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
           ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    print_dir(stdout, c2s);
    fputs(", ", stdout);
    print_dir(stdout, s2c);
    fputs("}\n", stdout);
    fflush(stdout);
}

static void usage(FILE *f)
{
    fputs("usage: delayline --client-ns PATH --server-ns PATH [--client-dev evt-cli]\n"
          "                 [--server-dev evt-srv] [--delay-us 0] [--loss 0] [--seed 1]\n"
          "                 [--queue 65536]\n"
          "  Moves IP packets between a TUN device in each namespace, holding each for\n"
          "  --delay-us and dropping each with probability --loss (a fraction, 0..0.5).\n"
          "  stdout: READY {...}, then STATS {...} on SIGUSR1 and on SIGTERM (then exits).\n", f);
}

static double parse_num(const char *opt, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "delayline: error: %s must be a number in [%g, %g], not '%s'\n",
                opt, lo, hi, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    const char *client_ns = NULL, *server_ns = NULL;
    const char *client_dev = "evt-cli", *server_dev = "evt-srv";
    static const struct option opts[] = {
        {"client-ns", required_argument, 0, 'c'}, {"server-ns", required_argument, 0, 's'},
        {"client-dev", required_argument, 0, 'C'}, {"server-dev", required_argument, 0, 'S'},
        {"delay-us", required_argument, 0, 'd'}, {"loss", required_argument, 0, 'l'},
        {"seed", required_argument, 0, 'r'}, {"queue", required_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'c': client_ns = optarg; break;
        case 's': server_ns = optarg; break;
        case 'C': client_dev = optarg; break;
        case 'S': server_dev = optarg; break;
        case 'd': delay_ns = (uint64_t)(parse_num("--delay-us", optarg, 0, 60e6) * 1e3); break;
        case 'l': loss = parse_num("--loss", optarg, 0, 0.5); break;
        case 'r': seed = (uint64_t)parse_num("--seed", optarg, 0, 9007199254740991.0); break;
        case 'q': queue_cap = (size_t)parse_num("--queue", optarg, 16, 1 << 22); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || !client_ns || !server_ns) {
        usage(stderr);
        return 2;
    }
    if (strlen(client_dev) >= IFNAMSIZ || strlen(server_dev) >= IFNAMSIZ) {
        fprintf(stderr, "delayline: error: device names must be shorter than %d bytes\n", IFNAMSIZ);
        return 2;
    }

    /* Exit with the harness that started us: a SIGKILLed harness leaves no wire running. */
    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        return 1;
    prctl(PR_SET_TIMERSLACK, 1UL);
    /* Ahead of the server and the client for the CPU: a packet's due time should not
     * wait for their time slice.  Best effort (needs CAP_SYS_NICE); reported. */
    int niced = setpriority(PRIO_PROCESS, 0, NICE) == 0;
    signal(SIGPIPE, SIG_IGN);

    sigset_t block, orig;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, &orig);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigdelset(&orig, SIGTERM);
    sigdelset(&orig, SIGINT);
    sigdelset(&orig, SIGUSR1);
    sigdelset(&orig, SIGHUP);

    int cfd = tun_in(client_ns, client_dev);
    int sfd = tun_in(server_ns, server_dev);

    struct dir c2s = {.name = "client_to_server", .in_fd = cfd, .out_fd = sfd,
                      .rng = seed * 2 + 1};
    struct dir s2c = {.name = "server_to_client", .in_fd = sfd, .out_fd = cfd,
                      .rng = seed * 2 + 2};
    c2s.cap = s2c.cap = queue_cap;
    c2s.q = calloc(queue_cap, sizeof(struct pkt));
    s2c.q = calloc(queue_cap, sizeof(struct pkt));
    unsigned char *buf = malloc(MAX_PKT);
    if (!c2s.q || !s2c.q || !buf)
        die(1, "out of memory for a queue of %zu packets", queue_cap);
    /* Warm the PRNG streams so nearby seeds do not start correlated. */
    for (int k = 0; k < 4; k++) {
        splitmix64(&c2s.rng);
        splitmix64(&s2c.rng);
    }

    t_start = now_ns();
    printf("READY {\"pid\": %d, \"client_dev\": \"%s\", \"server_dev\": \"%s\", "
           "\"delay_us\": %.3f, \"loss\": %.6g, \"seed\": %" PRIu64 ", \"queue\": %zu, "
           "\"nice\": %d}\n",
           (int)getpid(), client_dev, server_dev, (double)delay_ns / 1e3, loss, seed, queue_cap,
           niced ? NICE : 0);
    fflush(stdout);

    struct dir *dirs[2] = {&c2s, &s2c};
    while (!want_stop) {
        uint64_t now = now_ns();
        flush_due(&c2s, now);
        flush_due(&s2c, now);

        uint64_t next = UINT64_MAX;
        for (int k = 0; k < 2; k++)
            if (dirs[k]->count && dirs[k]->q[dirs[k]->head].due < next)
                next = dirs[k]->q[dirs[k]->head].due;
        struct timespec ts, *tsp = NULL;
        if (next != UINT64_MAX) {
            uint64_t wait = next > now ? next - now : 0;
            ts.tv_sec = (time_t)(wait / NS_PER_S);
            ts.tv_nsec = (long)(wait % NS_PER_S);
            tsp = &ts;
        }
        struct pollfd pfd[2] = {{.fd = cfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        int rc = ppoll(pfd, 2, tsp, &orig);
        if (rc < 0 && errno != EINTR)
            die(1, "ppoll failed: %s", strerror(errno));
        if (rc > 0) {
            now = now_ns();
            for (int k = 0; k < 2; k++) {
                if (pfd[k].revents & (POLLERR | POLLNVAL))
                    die(1, "the %s TUN device failed (poll revents 0x%x)", dirs[k]->name,
                        pfd[k].revents);
                if (pfd[k].revents & POLLIN)
                    read_some(dirs[k], now, buf);
            }
        }
        if (want_stats) {
            want_stats = 0;
            print_stats(&c2s, &s2c, false);
        }
    }
    print_stats(&c2s, &s2c, true);
    return 0;
}
