"""The echo servers' counters, printed on the STATS line (common.finish).

``Stats`` is plain attributes, bumped with ``+=`` by the one thread that runs the procs.
``ThreadStats`` is for servers whose procs run on several threads (mul_thread): without
the GIL two ``+=`` on one attribute can lose an update (a load, an add and a store), so
each thread counts in its own attributes and ``as_dict`` sums them -- exact, and no lock
on the hot path (tests/test_races.py finds the lost updates on a free-threaded build).
"""

from __future__ import annotations

import resource
import threading


COUNTERS = ("accepted", "served", "errors", "idle_timeouts", "emfile")


def _stats_line(counts: dict, diet_levers: list) -> dict:
    """The STATS fields: the counts, the levers applied, the process's CPU (all threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {**counts, "diet_levers": diet_levers,
            "cpu_user_s": round(ru.ru_utime, 6), "cpu_sys_s": round(ru.ru_stime, 6)}


class Stats:
    __slots__ = COUNTERS + ("diet_levers",)

    def __init__(self, diet_levers=()):
        self.accepted = self.served = self.errors = self.idle_timeouts = self.emfile = 0
        self.diet_levers = list(diet_levers)      # the levers applied (options.LEVERS order)

    def as_dict(self) -> dict:
        return _stats_line({key: getattr(self, key) for key in COUNTERS}, self.diet_levers)


class ThreadStats(threading.local):
    """``Stats`` for servers whose procs run on several threads: each thread counts in
    its own attributes (``threading.local``); ``as_dict`` sums every thread's counts,
    those of threads that have ended included.  See "Threads (mul_thread)" in common.py."""
    __slots__ = ("_counts", "_levers")   # a slot of a local is shared by all threads

    def __init__(self, diet_levers=()):
        # Runs once in each thread, on its first use; the first run (in the thread that
        # made the object, before any other can use it) makes the list of every thread's.
        try:
            counts = self._counts
        except AttributeError:
            counts = self._counts = []
            self._levers = list(diet_levers)
        self.accepted = self.served = self.errors = self.idle_timeouts = self.emfile = 0
        counts.append(self.__dict__)    # this thread's attributes

    def as_dict(self) -> dict:
        total = dict.fromkeys(COUNTERS, 0)
        for counts in list(self._counts):
            for key in COUNTERS:
                total[key] += counts.get(key, 0)
        return _stats_line(total, self._levers)
