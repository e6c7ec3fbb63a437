"""Events, variant master: Redis ae's structure (a read proc and a write proc per fd).

See events.py for the design essay and docs/variants.md for the three variants.
"""
from __future__ import annotations

from ..common.constants import *  # noqa: F401,F403
from ..common.constants import __all__ as _constants
from .events import EventLoop

__all__ = ["EventLoop"] + _constants
