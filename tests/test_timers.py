"""Timers.due: the nearest live timer's time, kept up to date by every change.

The loops read ``timers.due`` once per pass instead of calling ``nearest()`` (a Python
call per read), so a stale ``due`` would make a loop sleep past a timer or wake for a
deleted one.  These tests drive the heap through random creates, deletes, reschedules
and timer passes (procs that create and delete timers included) on a fake clock and
check after every step that ``due`` equals what ``nearest()`` computes from the heap.
"""

import random
import threading

import pytest

from variants.common import timers as timers_mod
from variants.common.constants import NOMORE
from variants.common.timers import LockedTimers, Timers


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(timers_mod, "monotonic", c)
    return c


def _make(kind):
    return Timers(None) if kind == "plain" else LockedTimers(None, threading.Lock())


@pytest.mark.parametrize("kind", ["plain", "locked"])
def test_due_follows_creates_and_deletes(clock, kind):
    t = _make(kind)
    assert t.due is None
    a = t.create(50, lambda *a: None)
    assert t.due == pytest.approx(1000.05)
    b = t.create(10, lambda *a: None)
    assert t.due == pytest.approx(1000.01)
    t.create(500, lambda *a: None)
    t.delete(b)                         # the nearest goes: the next live one is due
    assert t.due == pytest.approx(1000.05)
    t.delete(a)
    assert t.due == pytest.approx(1000.5)
    t.clear()
    assert t.due is None


@pytest.mark.parametrize("kind", ["plain", "locked"])
@pytest.mark.parametrize("seed", range(6))
def test_due_equals_nearest_after_every_step(clock, kind, seed):
    rnd = random.Random(seed)
    t = _make(kind)
    ids: list[int] = []

    def proc(loop, id, data):
        # A timer's proc changes the heap too: creates, deletes, reschedules, ends.
        r = rnd.random()
        if r < 0.2:
            ids.append(t.create(rnd.choice([0, 1, 5, 40]), proc))
        elif r < 0.35 and ids:
            victim = rnd.choice(ids)
            if victim in t.live:
                t.delete(victim)
        elif r < 0.6:
            return rnd.choice([0, 3, 20])
        return NOMORE

    for _ in range(400):
        r = rnd.random()
        if r < 0.4:
            ids.append(t.create(rnd.choice([0, 1, 2, 10, 30, 100]), proc))
        elif r < 0.6:
            live = [i for i in ids if i in t.live]
            if live:
                t.delete(rnd.choice(live))
        elif r < 0.8:
            clock.now += rnd.choice([0.0, 0.001, 0.005, 0.02])
        else:
            t.run_due()
        assert t.due == t.nearest()
        if t.live:
            assert t.due == min(ev.when for ev in t.live.values())
        else:
            assert t.due is None
