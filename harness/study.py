"""The 2016 study's figures, as data.

Transcribed by hand from the project's account of the study, ``docs/study.md``
(sections "How it was measured" and "The figures"); nothing here is
measured by this repository.  ``reproduce.py`` sets our recorded runs beside these
numbers, so every figure keeps its context (link, hardware, what the study said
about it) and its ratio to the study's raw epoll baseline is computed here, once.

Where the study gave several values for one server (Redis AE at 1000 Mb/s was
"unstable": 37816, 32258, 19659, 19152), all are kept in ``values`` and
``conn_per_s`` is their median, stated as such.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

SOURCE = "docs/study.md (the project's account of the 2016 Events study)"


@dataclass(frozen=True)
class StudyFigure:
    experiment: str          # key shared with reproduction.experiments()
    link: str                # "100mbit" or "1000mbit", our link names
    server: str              # what the study called it
    spec: str                # the spec of ours that corresponds to it
    values: tuple            # conn/s as the study printed them
    note: str = ""
    hardware: str = ""

    @property
    def conn_per_s(self) -> float:
        return float(statistics.median(self.values))


_I3 = "Intel i3-3220 @ 3.30 GHz (4 cores), 3.9 GB RAM, 1000 Mb/s full duplex NIC, two machines"
_100 = "two machines, 100 Mb/s NIC; hardware not recorded"

FIGURES: tuple[StudyFigure, ...] = (
    # 100 Mb/s, preliminary ("no details recorded")
    StudyFigure("100mbit", "100mbit", "Python raw epoll", "raw_epoll", (3200,),
                "preliminary, no details recorded", _100),
    StudyFigure("100mbit", "100mbit", "Events (master)", "master", (2800,),
                "preliminary, no details recorded", _100),
    StudyFigure("100mbit", "100mbit", "Redis AE", "redis_ae", (3800,),
                "preliminary; we substitute c_epoll when redis_ae is not built", _100),
    # thread pool
    StudyFigure("thread_pool", "100mbit", "Events mul_thread (thread pool)", "mul_thread", (800,),
                "locks in many places; each batch waits for its slowest thread", _100),
    # connection merging
    StudyFigure("merging", "100mbit", "Events master, 0.1 s delay before each poll",
                "master:poll_delay=0.1", (80,),
                "the delay did not merge connections", _100),
    # unified proc, 1000 Mb/s
    StudyFigure("1000mbit", "1000mbit", "Python raw epoll", "raw_epoll", (20118,),
                "6,960,000 connections in 346 s", _I3),
    StudyFigure("1000mbit", "1000mbit", "Events without unified proc (master)", "master", (13107,),
                "2,796,201 connections in 213 s", _I3),
    StudyFigure("1000mbit", "1000mbit", "Events with unified proc (alone_proc)", "alone_proc",
                (18125,), "steady over 6,000,000 connections (18017-18126)", _I3),
    StudyFigure("1000mbit", "1000mbit", "Redis AE (C)", "redis_ae", (37816, 32258, 19659, 19152),
                "best but unstable, visible connection loss; median of the four runs", _I3),
)

# The study's raw epoll figure for each link: the denominator of its ratios.  The
# thread-pool and merging experiments were run at 100 Mb/s, so they share the 100 Mb/s one.
BASELINE_BY_LINK = {f.link: f.conn_per_s for f in FIGURES
                    if f.spec == "raw_epoll"}

# The study's qualitative findings, checked by profile.py and reproduce.py.
FINDINGS = {
    "profile": "line_profiler: the main costs are recv, send, register, modify, unregister, close",
    "mul_thread": "the thread pool is slower than master (800/s vs 2800/s at 100 Mb/s); "
                  "a lock operation costs about 1/4 of a send",
    "merging": "a 0.1 s delay before each poll does not merge connections (80/s)",
    "alone_proc": "the unified proc brings Events close to raw epoll (0.90 at 1000 Mb/s)",
    "redis_ae": "Redis AE is fastest but unstable and loses connections",
}


def ratio_to_raw_epoll(fig: StudyFigure) -> float:
    """The study's figure as a ratio to its own raw epoll on the same link."""
    return fig.conn_per_s / BASELINE_BY_LINK[fig.link]


def figures_for(experiment: str) -> list[StudyFigure]:
    return [f for f in FIGURES if f.experiment == experiment]


def lookup(link: str, spec: str) -> StudyFigure | None:
    """The study's figure for one of our specs on one link (redis_ae stands for any C
    server: when we substitute c_epoll, the caller asks for redis_ae)."""
    for f in FIGURES:
        if f.link == link and f.spec == spec:
            return f
    return None
