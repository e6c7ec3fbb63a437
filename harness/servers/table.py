"""The server table's rows and the table itself: a ``Server`` per server the harness can
start (harness/servers/__init__.py declares them in ``SERVERS``), a ``LoopConfig`` per
configuration of a variant's EventLoop the tests run, and ``Table``: the lists everything
else derives from the rows.

Declaring a variant (``variant=True``, its library under variants/ and its server under
harness/servers/) is the whole change: ``Table.variants``, ``default_servers``,
``head_to_head`` and ``loop_configs`` read the rows at each call, so the variant is in
`make compare`'s default servers, in `make help`, in REPORT.md's head-to-head list and in
the conformance and model tests (every configuration on every backend) the moment it is
declared (docs/architecture.md, "How to add a server / a variant / a statistic").
Stdlib only: the server processes import this package too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from harness.servers import options as opts


@dataclass(frozen=True)
class LoopConfig:
    """One configuration of a variant's EventLoop that the conformance suite
    (tests/test_conformance.py) and the model test (tests/test_model.py) run on every
    backend: EventLoop(backend=..., **kwargs) from ``package``."""
    name: str                 # "mul_thread_oneshot"
    package: str = ""         # the library ("variants.mul_thread"; set from its Server)
    kwargs: tuple = ()        # (("pool", "oneshot"),)
    serial: tuple = ()        # kwargs that make a pass run one proc at a time in the poll's
                              # order (ae's pass; the model test): mul_thread's one worker
    asynchronous: bool = False  # procs run on workers after process_events() returns
    unified: bool = False     # one proc per fd (alone_proc), not ae's read + write procs


@dataclass(frozen=True)
class Server:
    name: str
    kind: str                 # "python" or "c"
    target: str               # python module or path of the binary under build/
    doc: str
    options: tuple = ()       # its own options (options.Option) beyond options.COMMON
    variant: bool = False     # one of the Events libraries: tested and compared by default
    requires: tuple = ()      # python modules that must import (e.g. uvloop)
    diet: opts.Diet = opts.ECHO_CORE_DIET   # the diet levers it supports, and why not the others
    reference: bool = False   # compared beside the variants by default (raw_epoll, asyncio...)
    # A variant's library and its loop configurations (the tests run each on every backend):
    package: str = ""         # default variants.<name>
    unified: bool = False     # one proc per fd
    serial: tuple = ()        # LoopConfig.serial of its default configuration
    loop_configs: tuple = ()  # configurations beyond the default one (LoopConfig)
    # Paired comparisons REPORT.md states (a spec, b spec, what): "Head to head".
    head_to_head: tuple = ()



class Table(dict[str, "Server"]):
    """name -> Server, and the lists derived from its rows (read at each call)."""

    def variants(self) -> tuple[str, ...]:
        return tuple(n for n, s in self.items() if s.variant)

    def default_servers(self) -> tuple[str, ...]:
        """What `make compare` runs without SERVERS=: the references and every variant."""
        return tuple(n for n, s in self.items() if s.variant or s.reference)

    def head_to_head(self) -> list[tuple[str, str, str]]:
        """The paired comparisons REPORT.md states, (a, b, what), in the table's order."""
        return [(a, b, what) for s in self.values() for a, b, what in s.head_to_head]

    def loop_configs(self) -> list[LoopConfig]:
        """Every variant's loop configurations, the default one first: what the
        conformance suite and the model test run."""
        out: list[LoopConfig] = []
        for s in self.values():
            if s.variant:
                package = s.package or f"variants.{s.name}"
                out.append(LoopConfig(s.name, package, serial=s.serial, unified=s.unified))
                out += [replace(c, package=c.package or package, serial=c.serial or s.serial,
                                unified=c.unified or s.unified) for c in s.loop_configs]
        return out
