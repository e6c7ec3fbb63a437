"""Code shared by the three Events variants: constants, pollers, timers, locks.

Everything here is written once so that ``diff variants/master/events.py
variants/alone_proc/events.py`` shows only the design change between variants.
"""
from __future__ import annotations
