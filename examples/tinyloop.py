"""A tiny ae-style event loop on ``selectors``: the worked example of "Bring your own loop".

Benchmark it against the variants with one command (README.md):

    python -m harness compare --servers "raw_epoll master loop:examples.tinyloop:EventLoop"

It implements the Events API the shared echo app uses (harness/servers/custom_loop.py):
per-fd read and write procs whose masks accumulate as in Redis ae, one-shot or periodic
time events, ``main()`` and ``stop()``.  It is deliberately plain -- a dict of handlers
and ``selectors.DefaultSelector`` (epoll on Linux) -- so its row shows what a
straightforward loop costs next to raw_epoll and the three variants.
"""

import heapq
import itertools
import selectors
import time

NONE, READABLE, WRITABLE = 0, 1, 2
NOMORE = -1


class EventLoop:
    def __init__(self, setsize=1024):
        self.setsize = setsize
        self._sel = selectors.DefaultSelector()
        self._files = {}                 # fd -> [mask, rproc, wproc, data]
        self._timers = []                # heap of (when, id, proc, data)
        self._ids = itertools.count(1)
        self._stop = False

    # file events: masks accumulate; each bit keeps its own proc (ae's rule)
    def create_file_event(self, fd, mask, proc, data=None):
        if fd >= self.setsize:
            raise ValueError(f"fd {fd} >= setsize {self.setsize}")
        fe = self._files.get(fd)
        if fe is None:
            fe = self._files[fd] = [NONE, None, None, data]
            self._sel.register(fd, self._events(mask))
        else:
            self._sel.modify(fd, self._events(fe[0] | mask))
        fe[0] |= mask
        if mask & READABLE:
            fe[1] = proc
        if mask & WRITABLE:
            fe[2] = proc
        fe[3] = data

    def delete_file_event(self, fd, mask):
        fe = self._files.get(fd)
        if fe is None:
            return
        fe[0] &= ~mask
        if fe[0] == NONE:
            del self._files[fd]
            self._sel.unregister(fd)
        else:
            self._sel.modify(fd, self._events(fe[0]))

    @staticmethod
    def _events(mask):
        return ((selectors.EVENT_READ if mask & READABLE else 0)
                | (selectors.EVENT_WRITE if mask & WRITABLE else 0))

    # time events: proc(loop, id, data) returns the next delay in ms, or NOMORE
    def create_time_event(self, ms, proc, data=None):
        tid = next(self._ids)
        heapq.heappush(self._timers, (time.monotonic() + ms / 1000, tid, proc, data))
        return tid

    def stop(self):
        self._stop = True

    def main(self):
        self._stop = False
        while not self._stop:
            timeout = None
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            for key, ev in self._sel.select(timeout):
                fd = key.fd
                fe = self._files.get(fd)
                if fe is not None and ev & selectors.EVENT_READ and fe[0] & READABLE:
                    fe[1](self, fd, fe[3], READABLE)
                fe = self._files.get(fd)       # the read proc may have closed it
                if fe is not None and ev & selectors.EVENT_WRITE and fe[0] & WRITABLE:
                    fe[2](self, fd, fe[3], WRITABLE)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, tid, proc, data = heapq.heappop(self._timers)
                ms = proc(self, tid, data)
                if ms is not None and ms != NOMORE:
                    heapq.heappush(self._timers, (now + ms / 1000, tid, proc, data))
