"""The echo servers' counters, printed on the STATS line (common.finish).

``Stats`` is plain attributes, bumped with ``+=`` by the one thread that runs the procs.
``ThreadStats`` is for servers whose procs run on several threads (mul_thread): without
the GIL two ``+=`` on one attribute can lose an update (a load, an add and a store), so
each thread counts in its own attributes and ``as_dict`` sums them -- exact, and no lock
on the hot path (tests/test_races.py finds the lost updates on a free-threaded build).

Events per pass (issue 28)
--------------------------
How many events one poll hands the loop decides how much a design's per-pass costs
weigh, so STATS carries ``passes``, ``events`` and ``events_hist`` (passes by events
returned: EVENT_BUCKETS).  The constraint: counting must not change what is measured.
A ``+=`` per event costs ~240 instructions, 1.5-2 % of a connection (`make icount`),
so nothing is added on the paths every connection takes:

* ``passes``: where the server owns its loop (raw_epoll) the loop bumps
  ``polls[len(events)]`` once per pass, which is also the exact histogram; where a
  library owns it, its after_sleep hook is :func:`pass_hook`, a C-level partial of
  ``next`` on an itertools.count (no Python frame per pass, the library untouched),
  which sees no events: the histogram is then None (not available).
* ``events`` (the procs the loop called, file events only) is *derived* from counts
  kept on the paths that are rare anyway: a request in pieces (``reads_partial``),
  a failed recv (``reads_failed``), a readable fd while we wait to write (``stray``),
  a partial or failed send, an fd the loop refused, a lazy_watch registration
  (``waits_read``/``waits_write``); plus one count per listener event
  (``accept_calls``).  Every connection registered for reading leaves that state by
  exactly one complete read, one failed read, or is still reading at exit; the same
  holds for writing with served and failed sends; EchoCore.stopped() counts the
  connections still in each state (``left``).  So the complete reads and the
  successful sends -- the hot events -- are the registrations minus the other exits:
  see :func:`derive_events`.  tests/test_events_per_pass.py checks the derivation
  against raw_epoll's own count of the events its polls returned.
"""

from __future__ import annotations

import functools
import itertools
import resource
import threading


COUNTERS = ("accepted", "served", "errors", "idle_timeouts", "emfile")
# The rare-path counts events are derived from (docstring; not printed).
PARTS = ("accept_calls", "reads_partial", "reads_failed", "stray", "writes_partial",
         "writes_failed", "refused", "waits_read", "waits_write")
# The histogram of events per pass on the STATS line: passes that returned 0 events
# (a timer's wake-up), 1, 2-3, 4-7, 8-15, 16 or more: bucket = min(n.bit_length(), 5).
EVENT_BUCKETS = ("0", "1", "2-3", "4-7", "8-15", "16+")
# select.epoll.poll returns at most FD_SETSIZE - 1 events by default (CPython).
MAX_POLL_EVENTS = 1024


def bucket_of(n: int) -> int:
    return min(n.bit_length(), len(EVENT_BUCKETS) - 1)


def bucketed(polls: list) -> list:
    """``polls[n]`` = passes that returned n events -> counts per EVENT_BUCKETS."""
    out = [0] * len(EVENT_BUCKETS)
    for n, k in enumerate(polls):
        if k:
            out[bucket_of(n)] += k
    return out


def derive_events(c: dict, lazy: bool, left) -> int | None:
    """The procs EchoCore's loop called, from the counts ``c`` (COUNTERS + PARTS) and
    ``left`` = (connections still reading, still writing) at exit; None without ``left``.

    Registered for reading: every accepted connection the loop took (lazy_watch: only
    those whose request was not there yet).  Each leaves by one complete read, one
    failed read, or is left; so complete reads = registered - failed - left.  Writing
    alike: registered (a complete read; lazy_watch: a send that would block) = served
    by an event + failed sends + left."""
    if left is None:
        return None
    reading_left, writing_left = left
    reg_read = c["waits_read"] if lazy else c["accepted"] - c["refused"]
    reads_done = reg_read - c["reads_failed"] - reading_left
    reg_write = c["waits_write"] if lazy else reads_done
    sends_done = reg_write - c["writes_failed"] - writing_left
    return (c["accept_calls"] + reads_done + c["reads_partial"] + c["reads_failed"] + c["stray"]
            + sends_done + c["writes_partial"] + c["writes_failed"])


def _stats_line(counts: dict, diet_levers: list, polls, pass_counter, left) -> dict:
    """The STATS fields: the counts, the levers applied, the process's CPU (all threads),
    and the passes and events (None where they were not counted)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    passes = hist = polled = None
    if polls is not None:
        passes, hist = sum(polls), bucketed(polls)
        polled = sum(n * k for n, k in enumerate(polls))    # the derivation's cross-check
    elif pass_counter is not None:
        passes = next(pass_counter)     # the number of earlier calls: the hook's count
    events = derive_events(counts, "lazy_watch" in diet_levers, left)
    return {**{k: counts[k] for k in COUNTERS}, "passes": passes, "events": events,
            "events_hist": hist, "events_polled": polled, "diet_levers": diet_levers,
            "cpu_user_s": round(ru.ru_utime, 6), "cpu_sys_s": round(ru.ru_stime, 6)}


def pass_hook(stats) -> object:
    """A sleep hook ``hook(loop)`` that counts one pass in ``stats`` per call: a C-level
    partial of ``next`` on an itertools.count (the loop argument becomes next's unused
    default), so a library's main() pays a C call per pass and no Python frame."""
    stats.pass_counter = counter = itertools.count()
    return functools.partial(next, counter)


class Stats:
    __slots__ = COUNTERS + PARTS + ("diet_levers", "polls", "pass_counter", "left")

    def __init__(self, diet_levers=()):
        for key in COUNTERS + PARTS:
            setattr(self, key, 0)
        self.diet_levers = list(diet_levers)      # the levers applied (options.LEVERS order)
        self.polls: list | None = None            # raw_epoll: passes by events returned
        self.pass_counter = None                  # a library's loop: pass_hook's counter
        self.left = None                          # (reading, writing) at exit: EchoCore.stopped

    def count_polls(self) -> list:
        """The list a loop that owns its poll bumps: ``polls[len(events)] += 1``."""
        self.polls = [0] * (MAX_POLL_EVENTS + 1)
        return self.polls

    def as_dict(self) -> dict:
        return _stats_line({key: getattr(self, key) for key in COUNTERS + PARTS}, self.diet_levers,
                           self.polls, self.pass_counter, self.left)


class ThreadStats(threading.local):
    """``Stats`` for servers whose procs run on several threads: each thread counts in
    its own attributes (``threading.local``); ``as_dict`` sums every thread's counts,
    those of threads that have ended included.  See "Threads (mul_thread)" in common.py."""
    # A slot of a local is shared by all threads.
    __slots__ = ("_counts", "_levers", "pass_counter", "left")

    def __init__(self, diet_levers=()):
        # Runs once in each thread, on its first use; the first run (in the thread that
        # made the object, before any other can use it) makes the list of every thread's.
        try:
            counts = self._counts
        except AttributeError:
            counts = self._counts = []
            self._levers = list(diet_levers)
            self.pass_counter = self.left = None
        for key in COUNTERS + PARTS:
            setattr(self, key, 0)
        counts.append(self.__dict__)    # this thread's attributes

    def as_dict(self) -> dict:
        total = dict.fromkeys(COUNTERS + PARTS, 0)
        for counts in list(self._counts):
            for key in COUNTERS + PARTS:
                total[key] += counts.get(key, 0)
        return _stats_line(total, self._levers, None, self.pass_counter, self.left)


# Fields of a process's STATS that are not counts (never summed over workers).
_NOT_SUMMED = ("diet_levers", "workers", "pid")
# What each worker's entry of a summed STATS keeps: its share is visible (an idle one too).
WORKER_FIELDS = COUNTERS + ("passes", "events", "cpu_user_s", "cpu_sys_s")


def sum_stats(lines: list, one_process: bool = False) -> dict:
    """The STATS of N event loops behind one port (issue 26, harness/servers/workers.py),
    as one STATS dict: counts summed (None where any loop reported None: not counted),
    histograms summed bucket by bucket, the rest from the first; ``workers`` lists each
    loop's own counts, so a loop that served nothing is seen.  ``one_process``: the loops
    are threads of one process, whose CPU fields are already the process's (not summed)."""
    out: dict = dict(lines[0])
    for key, first in lines[0].items():
        if key in _NOT_SUMMED or (one_process and key.startswith("cpu_")):
            continue
        values = [d.get(key) for d in lines]
        if any(v is None for v in values):
            out[key] = None
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            total = sum(values)
            out[key] = round(total, 6) if isinstance(total, float) else total
        elif all(isinstance(v, list) and len(v) == len(first) for v in values) \
                and all(isinstance(x, int) for v in values for x in v):
            out[key] = [sum(col) for col in zip(*values)]
    out["workers"] = [{k: None if one_process and k.startswith("cpu_") else d.get(k)
                       for k in WORKER_FIELDS} for d in lines]     # threads: no CPU apart
    return out
