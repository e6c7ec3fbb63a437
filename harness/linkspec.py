"""What a link is, as the user names it: ``loopback`` or a rate (``100mbit``, ``1gbit``),
with an optional one-way delay (``5ms``) and random loss (``1%``), and the name a
run records for it (``100mbit+5ms+loss1%``).  Parsing only: no privilege, no
process, no namespace -- the CLI checks its options with this before any work,
and harness/link.py builds the link it names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ACCEPTED = ("accepted links: 'loopback' (the default), or a rate such as "
            "'1000mbit', '100mbit', '20mbit', '1gbit', '2.5gbit', '500kbit'")
MAX_LOSS = 0.5
MAX_DELAY_S = 10.0


class LinkError(Exception):
    """A one-line, user-facing message: what is missing and what to do."""


@dataclass(frozen=True)
class LinkSpec:
    name: str                    # canonical: "loopback", "100mbit", "1000mbit", "2500mbit"
    rate_mbit: float | None      # None for loopback

    @property
    def emulated(self) -> bool:
        return self.rate_mbit is not None


_UNITS = {"kbit": 1e-3, "mbit": 1.0, "gbit": 1e3}
_RATE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(kbit|mbit|gbit)$", re.IGNORECASE)
MIN_MBIT, MAX_MBIT = 0.1, 100_000.0


def parse(spec: str | None) -> LinkSpec:
    """``loopback`` (or empty) or a rate ``<number>kbit|mbit|gbit``.  Rates are
    named in Mb/s (``1gbit`` -> ``1000mbit``) so the same link always gets the
    same name in the results."""
    text = (spec or "loopback").strip().lower()
    if text == "loopback":
        return LinkSpec("loopback", None)
    m = _RATE_RE.match(text)
    if not m:
        raise LinkError(f"unknown link {spec!r}; {ACCEPTED} (bits per second; "
                        "tc's 'mbps' means megabytes and is not accepted)")
    mbit = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not MIN_MBIT <= mbit <= MAX_MBIT:
        raise LinkError(f"link rate {spec!r} is out of range: use {MIN_MBIT:g}mbit to "
                        f"{MAX_MBIT / 1000:g}gbit; {ACCEPTED}")
    return LinkSpec(f"{mbit:g}mbit", mbit)


def link_name(rate_name: str, delay: str | None, loss: str | None) -> str:
    """The recorded name of a link: ``100mbit``, ``100mbit+5ms``, ``100mbit+5ms+loss1%``."""
    return "+".join([rate_name] + ([delay] if delay else []) + ([f"loss{loss}"] if loss else []))


def as_spec(spec) -> LinkSpec:
    return spec if isinstance(spec, LinkSpec) else parse(spec)


_DELAY_RE = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)$")
_LOSS_RE = re.compile(r"^(\d+(?:\.\d+)?)%$")


def parse_delay(text) -> tuple[str | None, float]:
    """``5ms``, ``100us``, ``0.1ms``, ``1s`` (one way) -> (canonical text, seconds);
    empty or None -> (None, 0.0).  LinkError, one line, otherwise."""
    if text is None or str(text).strip() == "":
        return None, 0.0
    t = str(text).strip().lower()
    m = _DELAY_RE.match(t)
    if not m:
        raise LinkError(f"bad delay {text!r}: write the one-way delay like 5ms, 0.1ms, 100us or 1s")
    sec = float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
    if sec > MAX_DELAY_S:
        raise LinkError(f"delay {text!r} is too long: at most {MAX_DELAY_S:g}s one way")
    return t, sec


def parse_loss(text) -> tuple[str | None, float]:
    """``1%``, ``0.5%`` (random drop, each direction) -> (canonical text, fraction);
    empty or None -> (None, 0.0).  LinkError, one line, otherwise."""
    if text is None or str(text).strip() == "":
        return None, 0.0
    t = str(text).strip()
    m = _LOSS_RE.match(t)
    if not m:
        raise LinkError(f"bad loss {text!r}: write the drop probability per packet as a "
                        "percentage, like 1% or 0.5%")
    frac = float(m.group(1)) / 100
    if frac > MAX_LOSS:
        raise LinkError(f"loss {text!r} is too high: at most {MAX_LOSS:.0%} (TCP barely "
                        "connects beyond that)")
    return t, frac
