"""What every running server offers the runner beside its own start and stop.

A server runs as one process (harness/servers/__init__.py, ServerProcess) or as N
processes behind one port (harness/servers/workers.py, Workers); the runner treats both
alike.  Their common part is here, once: the tail of the server's stderr, which its
``stop`` collects into ``stderr_text``, and ``with`` blocks that stop it.

This module imports nothing of the project.
"""

from __future__ import annotations


class Running:
    """A running server: ``stop()`` (each kind its own) fills ``stderr_text``."""
    stderr_text = ""

    def stop(self, timeout: float = 10.0) -> dict | None:
        raise NotImplementedError

    def stderr_tail(self, n: int = 2000) -> str:
        return self.stderr_text[-n:]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
