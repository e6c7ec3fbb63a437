"""The constants of the Events API; the values are those of Redis ``ae``.

Flags are plain ints (not ``enum.IntFlag``): they are tested on every event in the
dispatch loop, and an int ``&`` is the cheapest operation Python has for that.
"""
from __future__ import annotations

NONE = 0          # no events registered
READABLE = 1      # fire when the fd is readable
WRITABLE = 2      # fire when the fd is writable
BARRIER = 4       # with WRITABLE: run the writable proc before the readable one

FILE_EVENTS = 1          # process_events(): dispatch file events
TIME_EVENTS = 2          # process_events(): run due time events
ALL_EVENTS = FILE_EVENTS | TIME_EVENTS
DONT_WAIT = 4            # process_events(): poll with a zero timeout, never block
CALL_BEFORE_SLEEP = 8    # process_events(): call the before-sleep hook before polling
CALL_AFTER_SLEEP = 16    # process_events(): call the after-sleep hook after polling

NOMORE = -1       # a time event proc returns this to end the event

__all__ = [
    "NONE", "READABLE", "WRITABLE", "BARRIER",
    "FILE_EVENTS", "TIME_EVENTS", "ALL_EVENTS", "DONT_WAIT",
    "CALL_BEFORE_SLEEP", "CALL_AFTER_SLEEP", "NOMORE",
]
