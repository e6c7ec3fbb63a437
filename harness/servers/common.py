"""The echo protocol and the socket settings, written once for every Python server.

What a server does (docs/architecture.md, section 2)
----------------------------------------------------
Accept; read exactly N bytes (``--size``, default 100); send them back; close.
Bytes beyond N are discarded.  A peer that closes or resets before the exchange
is over is dropped and counted (``errors``), never fatal.  ``READY`` and ``STATS``
lines on stdout; SIGTERM/SIGINT -> STATS -> exit 0.

Why one file
------------
The study's claims are *ratios* between servers, so every server must do the same
work and differ only in the event API it sits on.  Everything that is not the event
API lives here: option parsing, the listener, the accept policy, the per-connection
state machine (:class:`EchoCore`), the idle sweep, the EMFILE policy and the
stats.  ``raw_epoll.py`` and the three variant servers subclass :class:`EchoCore`
and supply only three things an event API must do -- start watching a socket for
readable, switch it to writable, stop watching it -- and a loop that calls
``on_accept`` / ``on_readable`` / ``on_writable``.  The extra cost a variant shows
against ``raw_epoll`` is therefore the library's dispatch and nothing else.
asyncio and uvloop own their sockets, so they share the options, listener,
stats, signal handling and idle sweep but not the state machine
(``asyncio_server.py``).

Socket settings (identical everywhere)
--------------------------------------
SO_REUSEADDR on the listener; ``listen(--backlog)`` (the kernel caps it at
somaxconn); non-blocking sockets; default buffer sizes; no TCP_NODELAY (one
write per connection: Nagle never delays it).  asyncio and uvloop set
TCP_NODELAY on accepted sockets themselves; we leave their default.  ``--diet``
changes some of these on purpose (below).

Accept policy (the same in every server)
----------------------------------------
When the listener is readable, accept in a loop until EAGAIN, at most
``--backlog`` connections per wake-up.  That is exactly asyncio's rule (its
``_accept_connection`` loops ``backlog`` times) and, bar the bound, libuv's, so
the two library baselines and our servers accept the same way.  The cost is one
failing ``accept4`` per wake-up; the gain is fewer wake-ups under load.

Receive size: ``recv(65536)`` everywhere (measured here: as cheap as
``recv(100)`` for a 100-byte message -- the buffer comes from the heap and is
shrunk in place -- and it swallows modest surplus in the same call; 256 KiB would
cross glibc's mmap threshold and cost ~7x).

Idle timeout (issue 6): a generation sweep, no timer per connection
-------------------------------------------------------------------
A client that connects and never sends, or sends part of a request and goes
quiet, is closed after ``--idle-timeout`` seconds (count ``idle_timeouts``).
One periodic sweep runs every ``timeout / SWEEP_SLICES`` seconds and bumps a
generation counter ``gen``; a connection stores the generation of its last
progress in ``conn.seen`` (one attribute store -- cheaper than a clock read,
and nothing at all on the fast path where a connection is done within one
readable event).  A sweep closes every connection with
``seen < gen - SWEEP_SLICES``: it has been quiet for between ``timeout`` and
``timeout * (1 + 1/SWEEP_SLICES)`` seconds (it shuts the socket down and lets the
connection's own proc close it: see ``EchoCore.sweep``).  The alternative, a timer per
connection, costs a heap push and a delete for every connection even though
almost none ever expires.  A sweep scans the live connections (at most the
concurrency, 64 in a benchmark) a few times per timeout period.
``--idle-timeout 0`` disables the sweep entirely.

EMFILE (issue 6): the reserve descriptor
----------------------------------------
The listener is level-triggered: if ``accept`` fails with EMFILE and we simply
return, the poller reports the listener again at once and the server spins at
100% CPU without serving.  So we keep one spare descriptor open on /dev/null;
on EMFILE/ENFILE we close it, accept the pending connection, close that at once
(the client sees its connection closed without an echo: a failure it can count),
reopen the spare, and go on draining the backlog the same way.  ``emfile`` counts
the ``accept`` calls that failed with EMFILE/ENFILE (one per shed connection, plus
the last one of each wake-up, which finds the backlog empty: Linux reserves the fd
before it looks at the queue).
Connections already accepted finish normally and free their descriptors;
after that, new connections are served again.  (libuv does the same trick;
asyncio instead stops accepting for one second.)

The syscall diet (``--diet``, issues 7 and 16)
----------------------------------------------
Four independent levers (``defer_accept``, ``cork``, ``dontwait``, ``lazy_watch``),
explained, measured and declared per server in options.py.  :class:`EchoCore` and
:func:`listen` implement all four, so ``raw_epoll``, the three variants and ``loop:``
servers take every one; asyncio and uvloop take the listener's two.  ``--diet``
alone applies every lever the server supports, ``--diet=L1,L2`` those only (an
unknown or unsupported lever is a usage error); STATS reports ``diet_levers``.

Threads (mul_thread)
--------------------
Its procs run on worker threads.  The counters are ``+=`` on int attributes:
under the GIL that is atomic (no thread switch between the load and the store of
an ``+=`` since CPython 3.10), but on a free-threaded build (``make python-ft``)
two workers finishing exchanges at once lose one of the two updates.  So a
threaded server keeps its counters in a ``ThreadStats``: per thread, summed when
STATS is printed; exact on any build, and each ``+=`` is still one attribute load
and one store, with no lock (tests/test_races.py).  The connection table is a
dict: each of its operations, and ``list(conns.values())``, is atomic on both
builds.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import signal
import socket
import sys

from harness.servers import options
from harness.servers.counters import Stats, ThreadStats, pass_hook, sum_stats  # noqa: F401
from harness.servers.options import positive_int, seconds  # noqa: F401  (argparse types)

RECV_SIZE = 65536
SWEEP_SLICES = 4          # sweeps per idle-timeout period (precision 1/SWEEP_SLICES)
DEFER_ACCEPT_S = 1        # TCP_DEFER_ACCEPT seconds in diet mode

# conn.watched: what the connection is registered for.
IDLE, READING, WRITING = 0, 1, 2
TIMED_OUT = -1            # conn.seen of a connection the idle sweep has shut down

# The Events variants' file-event bits (ae's values, the same in all three variants:
# docs/architecture.md section 1); repeated here so raw_epoll need not import a variant.
READABLE, WRITABLE = 1, 2
BOTH = READABLE | WRITABLE    # why: one name, not an OR of two names per connection


# --------------------------------------------------------------------------- options

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # argparse's own format: usage line + one error line, exit 2.  No traceback.
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _port(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {text!r}")
    return value


def parse_args(name: str, argv=None, add_options=None) -> argparse.Namespace:
    """The common options of section 2 and the server's own, from their declarations in
    the server table (options.py), plus whatever ``add_options(parser)`` declares.
    ``args.diet`` is the tuple of diet levers applied (canonical order, () without)."""
    from harness.servers import declared_options, server_by_name
    server = server_by_name(name)
    p = _Parser(prog=f"python -m harness.servers.{name}" if "." not in name else name,
                description=f"{name} echo server (read N bytes, send them back, close)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=0, help="0 = any free port (see READY)")
    p.add_argument("--size", type=positive_int, default=100, help="bytes per request")
    for opt in declared_options(server) + (options.REUSE_PORT,):
        if opt.name != "diet":
            opt.add_to(p)
    levers = options.diet_argparse(p, name, server.diet)
    if add_options:
        add_options(p)
    args = p.parse_args(argv)
    args.diet = levers(args.diet)
    return args


def die(message: str, code: int = 1):
    """One clear line on stderr, no traceback."""
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()
    sys.exit(code)


# --------------------------------------------------------------------------- listener

def listen(args) -> socket.socket:
    """The listening socket with the common settings; exits 1 with one line on failure."""
    host = args.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        die(f"cannot create a socket for {host}: {e.strerror}")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if getattr(args, "reuse_port", False):      # one of N loops on one port (workers.py)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if "defer_accept" in args.diet:
            # The kernel wakes us only when the request's data is there (see docstring).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_S)
        if "cork" in args.diet:
            # Inherited by accepted sockets: the reply and the FIN leave in one segment.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        sock.bind((host, args.port))
        sock.listen(args.backlog)
        sock.setblocking(False)
    except socket.gaierror as e:
        die(f"cannot resolve host {host!r}: {e.strerror}")
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            die(f"port {args.port} on {host} is in use")
        if e.errno == errno.EADDRNOTAVAIL:
            die(f"address {host} is not available on this machine")
        if e.errno == errno.EACCES:
            die(f"permission denied to listen on port {args.port} on {host}")
        die(f"cannot listen on {host} port {args.port}: {e.strerror or e}")
    return sock


def say(tag: str, obj: dict):
    sys.stdout.write(f"{tag} {json.dumps(obj)}\n")
    sys.stdout.flush()


def ready(name: str, listener: socket.socket):
    addr = listener.getsockname()
    info = {"server": name, "host": addr[0], "port": addr[1], "pid": os.getpid()}
    lib = sys.modules.get("variants")
    lib_file = getattr(lib, "__file__", None) if lib is not None else None
    if lib_file:
        info["library"] = os.path.dirname(lib_file)         # which tree (NAME@REV) was imported
    say("READY", info)


def finish(stats: Stats):
    """Print STATS and exit 0 at once.

    ``os._exit``: the kernel closes every socket, there is nothing else to clean up,
    and a thread pool (mul_thread) must not be able to delay or block the exit."""
    try:
        say("STATS", stats.as_dict())
    finally:
        os._exit(0)


_wake_w = None          # keeps the write end of the wake-up socket alive


def on_signals(stats: Stats, stop) -> socket.socket:
    """SIGTERM/SIGINT: the first calls ``stop()``, asking the loop to return at the end
    of its pass, after which the server calls :func:`finish`; a second exits at once.

    Why not exit inside the handler: the handler runs between any two bytecodes, e.g.
    after a ``send`` completed but before ``served += 1``, and STATS would miss an
    exchange the client saw.  At the end of a pass every finished exchange is counted.

    Returns the read end of a wake-up socket that the server must watch for readable
    (and drain): Python restarts a poll interrupted by a signal (PEP 475), and a signal
    delivered to a worker thread does not interrupt the loop thread's poll at all; the
    C-level handler writes to this socket, so the poll returns either way."""
    global _wake_w
    seen: list = []

    def handler(signum, frame):
        if seen:
            finish(stats)
        seen.append(signum)
        stop()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    wake_r, _wake_w = socket.socketpair()
    wake_r.setblocking(False)
    _wake_w.setblocking(False)
    signal.set_wakeup_fd(_wake_w.fileno(), warn_on_full_buffer=False)
    return wake_r


def drain(sock: socket.socket):
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass


def stale(conns, gen: int) -> list:
    """Connections whose last progress is older than SWEEP_SLICES sweeps (see docstring).
    ``conns`` is any iterable of objects with a ``seen`` generation."""
    cutoff = gen - SWEEP_SLICES
    return [c for c in conns if c.seen < cutoff]


def sweep_interval(args) -> float:
    """Seconds between idle sweeps, 0 when the idle timeout is disabled."""
    return args.idle_timeout / SWEEP_SLICES if args.idle_timeout > 0 else 0.0


def fd_limit() -> int:
    """The soft RLIMIT_NOFILE: every fd this process can hold is below it."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


# --------------------------------------------------------------------------- the state machine

class Conn:
    """One client connection.  ``buf`` holds the bytes received so far, then the bytes
    still to send; ``seen`` is the sweep generation of its last progress."""
    __slots__ = ("sock", "fd", "buf", "seen", "watched")

    def __init__(self, sock, fd, seen):
        self.sock = sock
        self.fd = fd
        self.buf = b""
        self.seen = seen
        self.watched = IDLE


_EMFILE = (errno.EMFILE, errno.ENFILE)
# accept errors that concern only the one pending connection: skip it and go on.
_ACCEPT_SKIP = (errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN, errno.ENOPROTOOPT,
                errno.EHOSTDOWN, errno.ENONET, errno.EHOSTUNREACH, errno.EOPNOTSUPP,
                errno.ENETUNREACH)


class EchoCore:
    """The per-connection state machine, shared by every server built on an fd poller.

    accept -> [watch readable] -> recv until N bytes -> [switch to writable] ->
    send until N bytes -> [unwatch] -> close.   (Brackets: skipped by the diet's
    lazy_watch lever when the call would not block.)  A subclass provides ``watch_read``, ``watch_write``
    and ``unwatch`` for its event API and calls ``on_accept``, ``on_readable``,
    ``on_writable`` from its loop.
    """

    stats_class: type = Stats       # ThreadStats where procs run on several threads

    def __init__(self, args, listener: socket.socket):
        self.listener = listener
        self.size = args.size
        self.lazy = "lazy_watch" in args.diet        # the diet levers (docstring)
        self.dontwait = "dontwait" in args.diet
        self.flags = socket.MSG_DONTWAIT if self.dontwait else 0
        self.accept_bound = range(args.backlog)
        self.stats = self.stats_class(args.diet)
        self.conns: dict = {}      # fd -> Conn, every connection registered with the poller
        self.gen = 0               # idle-sweep generation
        self._reserve = self._open_reserve()

    # -- what an event API must provide ------------------------------------------
    def watch_read(self, conn: Conn):
        """Register ``conn.fd`` for readable; set ``conn.watched = READING``."""
        raise NotImplementedError

    def watch_write(self, conn: Conn):
        """Watch ``conn.fd`` for writable instead of readable (registering it if it is
        not watched yet, as with lazy_watch); set ``conn.watched = WRITING``."""
        raise NotImplementedError

    def unwatch(self, conn: Conn):
        """Remove ``conn.fd`` from the poller (it is about to be closed)."""
        raise NotImplementedError

    # -- accept ---------------------------------------------------------------------
    # The procs' signature, as the transitions below: a library calls it directly (no
    # adapter frame per wake-up); raw_epoll calls ``on_accept()``.
    def on_accept(self, loop=None, fd: int = -1, data=None, mask: int = 0):
        accept = self.listener.accept
        stats = self.stats
        stats.accept_calls += 1             # events per pass (counters.py)
        for _ in self.accept_bound:
            try:
                sock, _addr = accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in _EMFILE:
                    if not self._shed():
                        return
                    continue
                stats.errors += 1
                if e.errno in _ACCEPT_SKIP:
                    continue
                return                     # ENOBUFS, ENOMEM...: try again on the next event
            stats.accepted += 1
            conn = Conn(sock, sock.fileno(), self.gen)
            if not self.dontwait:
                sock.setblocking(False)
            if self.lazy:
                self.diet_start(conn)
                continue
            self.conns[conn.fd] = conn
            try:
                self.watch_read(conn)
            except ValueError:             # fd beyond the loop's setsize: refuse this one
                stats.refused += 1
                self._refuse(conn)

    def _open_reserve(self):
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def _shed(self) -> bool:
        """EMFILE: free the reserve fd, accept the pending connection and close it at once,
        take the reserve back.  False when there was nothing to shed (stop accepting for
        this event; with no reserve we cannot drain, but connections still finish)."""
        self.stats.emfile += 1
        if self._reserve is None:
            self._reserve = self._open_reserve()
            return False
        os.close(self._reserve)
        self._reserve = None
        try:
            sock, _ = self.listener.accept()
        except OSError:
            self._reserve = self._open_reserve()
            return False
        sock.close()
        self._reserve = self._open_reserve()
        return self._reserve is not None

    # -- reading and writing ----------------------------------------------------------
    def read(self, conn: Conn) -> int:
        """recv once: 1 = request complete (``conn.buf`` holds the N bytes to echo),
        0 = need more, -1 = the peer closed or reset early."""
        try:
            data = conn.sock.recv(RECV_SIZE, self.flags)
        except BlockingIOError:
            return 0
        except OSError:
            return -1
        if not data:
            return -1
        if conn.buf:                # a request in pieces: a bytearray grows in amortized O(1)
            conn.buf += data
            data = conn.buf
        size = self.size
        if len(data) >= size:
            conn.buf = data if len(data) == size else data[:size]   # surplus discarded
            return 1
        if not conn.buf:
            conn.buf = bytearray(data)
        conn.seen = self.gen
        return 0

    def write(self, conn: Conn) -> int:
        """send once: 1 = all sent, 0 = more to send, -1 = the peer went away."""
        buf = conn.buf
        try:
            n = conn.sock.send(buf, self.flags)
        except BlockingIOError:
            return 0
        except OSError:
            return -1
        if n == len(buf):
            return 1
        conn.buf = memoryview(buf)[n:]      # a partial send: slicing a view copies nothing
        conn.seen = self.gen
        return 0

    # -- transitions ---------------------------------------------------------------------
    # The transitions have the event libraries' proc signature, ``(loop, fd, conn, mask)``,
    # so a library calls them directly: why: one Python frame less per event than an
    # adapter proc (about 1,000 of the ~12,000 instructions per connection a library
    # added on top of raw_epoll, measured with callgrind).  raw_epoll calls them the same
    # way with ``loop=None``, so every server runs this very code.
    def on_readable(self, loop, fd: int, conn: Conn, mask: int):
        if conn.watched != READING:
            # Readable while waiting to write (surplus bytes or an early FIN), where the
            # library kept READABLE registered: stop listening, or a level-triggered
            # poller would report it on every pass.  (raw_epoll never gets here.)
            self.stats.stray += 1           # rare branches are counted: counters.py
            loop.delete_file_event(fd, READABLE)
            return
        r = self.read(conn)
        if r > 0:
            if self.lazy:
                self.respond(conn)
            else:
                self.watch_write(conn)
        elif r < 0:
            self.stats.reads_failed += 1
            self.drop(conn)
        else:
            self.stats.reads_partial += 1

    def on_writable(self, loop, fd: int, conn: Conn, mask: int):
        if not mask & WRITABLE:
            # Only READABLE fired while we wait to write: alone_proc's one proc per fd
            # sees it here.  Same remedy as in on_readable.
            self.stats.stray += 1
            loop.delete_file_event(fd, READABLE)
            return
        w = self.write(conn)
        if w > 0:
            self.stats.served += 1
            self.close(conn)
        elif w < 0:
            self.stats.writes_failed += 1
            self.drop(conn)
        else:
            self.stats.writes_partial += 1

    def diet_start(self, conn: Conn):
        """lazy_watch: the request is usually there already (TCP_DEFER_ACCEPT): read now,
        register only if it is not."""
        r = self.read(conn)
        if r > 0:
            self.respond(conn)
        elif r == 0:
            self.conns[conn.fd] = conn
            try:
                self.watch_read(conn)
                self.stats.waits_read += 1
            except ValueError:
                self._refuse(conn)
        else:
            self.drop(conn)

    def respond(self, conn: Conn):
        """lazy_watch: send right after reading; wait for writable only if the send would block."""
        w = self.write(conn)
        if w > 0:
            self.stats.served += 1
            self.close(conn)
        elif w == 0:
            self.conns[conn.fd] = conn
            try:
                self.watch_write(conn)
                self.stats.waits_write += 1
            except ValueError:
                self._refuse(conn)
        else:
            self.drop(conn)

    def _refuse(self, conn: Conn):
        """The event loop would not take this fd (beyond its setsize): close it, count it."""
        self.conns.pop(conn.fd, None)
        conn.watched = IDLE
        self.drop(conn)

    def drop(self, conn: Conn):
        if conn.seen == TIMED_OUT:          # shut down by the idle sweep
            self.stats.idle_timeouts += 1
        else:
            self.stats.errors += 1
        self.close(conn)

    def close(self, conn: Conn):
        if conn.watched:
            self.unwatch(conn)
            conn.watched = IDLE
            del self.conns[conn.fd]
        conn.sock.close()

    # -- idle timeout -----------------------------------------------------------------------
    def sweep(self):
        """Called every ``sweep_interval(args)`` seconds by the server's timer.

        It never closes a socket itself: it shuts the connection down, the poller
        then reports the fd, and the connection's own proc meets EOF or EPIPE and
        drops it (counted as an idle timeout).  So a connection is only ever closed
        by the code handling it: with mul_thread's workers running beside the loop
        thread, a close here could race a worker using the same connection, or free
        an fd number that a new connection takes while a stale proc still holds it.
        The price is one ``shutdown`` and one more wake-up per timed-out connection,
        which is rare by definition."""
        self.gen += 1
        for conn in stale(list(self.conns.values()), self.gen):
            conn.seen = TIMED_OUT
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass                        # already reset: its proc sees that anyway

    def stopped(self):
        """The loop has stopped (SIGTERM): finish the connections the sweep shut down
        but whose procs have not run yet, so STATS counts every timeout a client saw."""
        watched = [c.watched for c in list(self.conns.values())]     # events: counters.py
        self.stats.left = (watched.count(READING), watched.count(WRITING))
        for conn in list(self.conns.values()):
            if conn.seen == TIMED_OUT and conn.watched:
                self.drop(conn)


# --------------------------------------------------------------------------- Events variants

class EventsEcho(EchoCore):
    """The state machine on an Events ``EventLoop``, in master's terms: a read proc and a
    write proc per fd.  mul_thread uses it as is; alone_proc overrides the procs.

    Switching to writable *adds* WRITABLE and keeps READABLE (``epoll_ctl MOD IN|OUT``),
    the Redis idiom (a connection keeps its read handler and gains a write handler):
    one ``epoll_ctl`` like raw_epoll's ``modify(OUT)``, where "delete READABLE, create
    WRITABLE" would cost two.  If the fd turns readable while we wait to write
    (surplus bytes or an early FIN), the read proc drops READABLE, so a level-triggered
    poller cannot spin on it.  Closing deletes both bits (``epoll_ctl DEL``).  So the
    poller sees exactly raw_epoll's three calls per connection.
    """

    def __init__(self, args, listener, loop):
        super().__init__(args, listener)
        self.loop = loop
        # why: bound once; ``self.on_readable`` would build a new bound method per call.
        self.read_proc = self.on_readable
        self.write_proc = self.on_writable

    def watch_read(self, conn):
        conn.watched = READING
        self.loop.create_file_event(conn.fd, READABLE, self.read_proc, conn)

    def watch_write(self, conn):
        conn.watched = WRITING
        self.loop.create_file_event(conn.fd, WRITABLE, self.write_proc, conn)

    def unwatch(self, conn):
        self.loop.delete_file_event(conn.fd, BOTH)

    def sweep_proc(self, loop, id, ms):
        self.sweep()
        return ms                   # call again in as many ms
