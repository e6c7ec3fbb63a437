"""uvloop's echo server: ``asyncio_server``'s Protocol, unchanged, on a uvloop loop.

One file per server keeps the table simple; the code is asyncio_server.py's so the
two differ only in the event loop (libuv instead of asyncio's selector loop).
"""
from __future__ import annotations

from harness.servers import asyncio_server, common

NAME = "uvloop"


def main():
    try:
        import uvloop
    except ImportError as e:
        common.die(f"uvloop is not installed for this Python ({e}): pip install uvloop")
    asyncio_server.serve(NAME, uvloop.new_event_loop)


if __name__ == "__main__":
    main()
