"""Delay and loss on an emulated link (``DELAY=5ms`` one way, ``LOSS=1%`` each
direction): ``netem`` under tbf when the kernel has it, else the *delay line*,
``build/delayline`` (harness/delayline/delayline.c, whose header says how it
works) between a TUN device in each namespace.  This module checks which one can
run here, runs the delay line as a child process (READY, STATS on SIGUSR1, a
last STATS on SIGTERM) and turns two of its STATS lines into a run's figures.
harness/link.py decides which mechanism a link uses and records it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import tempfile
import typing
import time

from harness import netns, procfs
from harness.linkspec import LinkError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUN_PATH = "/dev/net/tun"
TUN_TXQUEUELEN = 10000          # the TUN ring the delay line reads from: a burst must fit
_netem_ok: bool | None = None


def delayline_path() -> str:
    # EVENTS_DELAYLINE lets tests substitute a build elsewhere.
    return os.environ.get("EVENTS_DELAYLINE") or os.path.join(ROOT, "build", "delayline")


def netem_available() -> bool:
    """Whether tc can add a netem qdisc here: tried on ``lo`` of a throw-away
    namespace (only trying tells), cached for the process."""
    global _netem_ok
    if _netem_ok is None:
        ns = netns.new_name("netem") + "-p"
        try:
            if netns.run([netns.ip(), "netns", "add", ns], check=False).returncode != 0:
                _netem_ok = False
            else:
                r = netns.run([netns.tc(), "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem",
                          "delay", "1ms"], check=False)
                _netem_ok = r.returncode == 0
        finally:
            netns.run([netns.ip(), "netns", "del", ns], check=False)
    return _netem_ok


def check_delayline(what: str) -> str:
    """The delay line's binary, or LinkError naming what is missing (/dev/net/tun,
    the build) and what to do."""
    path = delayline_path()
    if not os.path.exists(TUN_PATH):
        raise LinkError(f"{what}: this kernel has no netem, and the delay line that replaces it "
                        f"needs {TUN_PATH}, which does not exist here: load the tun module "
                        "(modprobe tun; in a container pass the device through), or run "
                        "without DELAY/LOSS")
    try:
        os.close(os.open(TUN_PATH, os.O_RDWR))       # opening alone creates no device
    except OSError as e:
        raise LinkError(f"{what}: the delay line (no netem here) cannot open {TUN_PATH}: "
                        f"{e.strerror}: run as root, or run without DELAY/LOSS") from None
    if not os.access(path, os.X_OK):
        raise LinkError(f"{what}: this kernel has no netem and the delay line "
                        f"{os.path.relpath(path, ROOT)} is not built: run `make build` "
                        "(needs gcc), or run without DELAY/LOSS")
    return path


class DelayLine:
    """The delay line process of one link: started with its two namespaces' TUN
    devices, asked for its counters (SIGUSR1 -> one STATS line), stopped with
    SIGTERM (its last STATS line is kept in ``final``)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.final: dict | None = None
        self._buf = b""
        self._err: typing.IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def argv(self) -> list[str] | None:
        return list(typing.cast(list, self.proc.args)) if self.proc else None

    def start(self, *, server_ns: str, client_ns: str, server_dev: str, client_dev: str,
              delay_s: float, loss_p: float, seed: int, record: str, timeout: float = 5.0) -> None:
        """Start it between the namespaces (their files under /run/netns) and wait for
        READY; its PID and start time go into the link's ``record`` for the cleanup."""
        argv = [delayline_path(), "--client-ns", client_ns, "--server-ns", server_ns,
                "--client-dev", client_dev, "--server-dev", server_dev,
                "--delay-us", f"{delay_s * 1e6:.3f}", "--loss", repr(loss_p), "--seed", str(seed)]
        self._err = tempfile.TemporaryFile(mode="w+b", prefix="evtlink-delayline-err-")
        with netns.signals_deferred():       # never a delay line we hold no handle of
            try:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=self._err)
            except OSError as e:
                raise LinkError(f"cannot start the delay line {argv[0]}: {e.strerror or e}") from None
        try:
            with open(record) as f:
                rec = json.load(f)
            rec["delayline"] = {"pid": self.proc.pid, "start_ticks": procfs.start_ticks(self.proc.pid)}
            with open(record, "w") as f:
                json.dump(rec, f)
        except (OSError, ValueError):
            pass
        line = self._line(self.proc, "READY ", timeout)
        if line is None:
            raise LinkError(f"the delay line did not start: {self._stderr() or 'no READY line'}")

    def _stderr(self) -> str:
        if self._err is None:
            return ""
        try:
            self._err.seek(0)
            return netns.first_line(self._err.read().decode("utf-8", "replace"))
        except (OSError, ValueError):
            return ""

    def _line(self, proc: subprocess.Popen, prefix: str, timeout: float) -> dict | None:
        """The next line starting with ``prefix`` from the delay line, parsed; None on
        EOF or timeout."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                raw, self._buf = self._buf.split(b"\n", 1)
                text = raw.decode("utf-8", "replace")
                if text.startswith(prefix):
                    try:
                        return json.loads(text[len(prefix):])
                    except ValueError:
                        return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk

    def stats(self) -> dict | None:
        """Its cumulative counters now (SIGUSR1 -> one STATS line); None when not running."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            raise LinkError(f"the delay line exited (status {self.proc.returncode}): "
                            f"{self._stderr() or 'no message'}")
        self.proc.send_signal(signal.SIGUSR1)
        st = self._line(self.proc, "STATS ", 3.0)
        if st is None:
            raise LinkError("the delay line did not answer SIGUSR1 with its counters")
        return st

    def stop(self) -> None:
        dl, self.proc = self.proc, None
        if dl is None:
            return
        try:
            if dl.poll() is None:
                dl.send_signal(signal.SIGTERM)
                self.final = self._line(dl, "STATS ", 3.0)
            try:
                dl.wait(timeout=3)
            except subprocess.TimeoutExpired:
                dl.kill()
                dl.wait()
        finally:
            self.proc = None
            try:
                if dl.stdout is not None:
                    dl.stdout.close()
            except OSError:
                pass
            if self._err is not None:
                self._err.close()
                self._err = None


DL_COUNTERS = ("packets_in", "bytes_in", "packets_out", "bytes_out", "dropped_loss",
                "dropped_queue", "write_errors")


def delayline_delta(a: dict | None, b: dict | None, elapsed: float) -> dict | None:
    """What the delay line did between two of its STATS lines: per direction, its
    packets, bytes and drops by cause, the mean lateness of a packet against its due
    time, and its CPU time (and share of one core)."""
    if not a or not b:
        return None
    out: dict = {}
    for direction in ("client_to_server", "server_to_client"):
        x, y = a[direction], b[direction]
        dd = {k: y[k] - x[k] for k in DL_COUNTERS}
        sent = dd["packets_out"]
        dd["late_mean_us"] = round((y["late_sum_us"] - x["late_sum_us"]) / sent, 3) if sent else None
        dd["late_max_us_cumulative"] = y["late_max_us"]
        dd["max_queued_cumulative"] = y["max_queued"]
        out[direction] = dd
    cpu = (b["cpu_user_s"] + b["cpu_sys_s"]) - (a["cpu_user_s"] + a["cpu_sys_s"])
    out["dropped_loss"] = sum(out[d]["dropped_loss"] for d in ("client_to_server", "server_to_client"))
    out["dropped_other"] = sum(out[d]["dropped_queue"] + out[d]["write_errors"]
                               for d in ("client_to_server", "server_to_client"))
    out["cpu_s"] = round(cpu, 6)
    out["cpu_share"] = round(cpu / elapsed, 4) if elapsed > 0 else None
    out["pid"] = b.get("pid")
    return out
