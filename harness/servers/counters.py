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


class Stats:
    __slots__ = ("accepted", "served", "errors", "idle_timeouts", "emfile", "diet_levers")

    def __init__(self, diet_levers=()):
        self.accepted = self.served = self.errors = self.idle_timeouts = self.emfile = 0
        self.diet_levers = list(diet_levers)      # the levers applied (options.LEVERS order)

    def as_dict(self) -> dict:
        ru = resource.getrusage(resource.RUSAGE_SELF)      # all threads of the process
        return {"accepted": self.accepted, "served": self.served, "errors": self.errors,
                "idle_timeouts": self.idle_timeouts, "emfile": self.emfile,
                "diet_levers": self.diet_levers,
                "cpu_user_s": round(ru.ru_utime, 6), "cpu_sys_s": round(ru.ru_stime, 6)}


class ThreadStats(threading.local):
    """``Stats`` for servers whose procs run on several threads: each thread counts in
    its own attributes (``threading.local``); ``as_dict`` sums every thread's counts,
    those of threads that have ended included.  See "Threads (mul_thread)" above."""
    __slots__ = ("_counts", "_levers")   # a slot of a local is shared by all threads
    COUNTERS = ("accepted", "served", "errors", "idle_timeouts", "emfile")

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
        total: dict = dict.fromkeys(self.COUNTERS, 0)
        for counts in list(self._counts):
            for key in self.COUNTERS:
                total[key] += counts.get(key, 0)
        total["diet_levers"] = self._levers
        ru = resource.getrusage(resource.RUSAGE_SELF)
        total.update(cpu_user_s=round(ru.ru_utime, 6), cpu_sys_s=round(ru.ru_stime, 6))
        return total
