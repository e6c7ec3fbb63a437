"""Where a Python server's code runs: the spec options ``python=`` and ``compiled`` (issue 25).

The interpreter is half the bill of a Python event loop, so it is a property of a *spec*,
not only of a batch: ``alone_proc:python=pypy3`` and ``alone_proc`` are two rows of one
batch, paired round by round like any two servers.  ``python=NAME`` is a name on PATH, a
path, a pyenv version's binary or one the project built (``python3.13t``, make python-ft),
resolved as harness/procs.py ``resolve_python`` does, once per process; the run record
carries the resolved interpreter, with ``gil`` False on a free-threaded build.  A spec without it runs
on the batch's interpreter (``PYTHON=``/``--python``), else the venv's.

``compiled`` runs a variant on its library compiled by mypyc (``make compiled``,
tools/build_compiled.py): the server starts in ``build/compiled/lib`` with that tree first
on its import path, so the ``.so`` modules there win the import (the NAME@REV mechanism);
``harness`` still comes from the working tree.  A ``.so`` is built for one interpreter ABI,
so a compiled spec on an interpreter with another ABI (PyPy) is refused with one line,
before anything runs; so is a compiled spec when nothing is built ("run make compiled").
The run record carries the tree's manifest: the modules compiled, those left interpreted and
why, the mypy version, the source commit and whether it was dirty.

This module imports nothing of the project: harness/servers/__init__.py calls it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# EVENTS_COMPILED_DIR: another place (the tests point it at an empty or fake tree).
COMPILED_DIR = os.environ.get("EVENTS_COMPILED_DIR") or os.path.join(ROOT, "build", "compiled")


class InterpError(Exception):
    """An interpreter or compiled tree a spec cannot use; the message says what to do."""


_RESOLVED: dict[str, dict] = {}
# why -c and not the environment probe: this runs at parse time for every python= spec,
# so it must be quick and say only what the spec check needs.
_PROBE = ("import sys, sysconfig; print(sys.executable); "
          "print(sys.implementation.name); print(sysconfig.get_config_var('SOABI') or ''); "
          "print('%d.%d.%d' % sys.version_info[:3]); "
          "print(int(getattr(sys, '_is_gil_enabled', lambda: True)()))")
# Interpreters the project builds itself (make python-ft): found by name, like pyenv's.
OWN_BUILDS = (os.path.join(ROOT, "build", "python-ft", "bin"),)


def _candidates(name: str) -> list[str]:
    found = shutil.which(name) if os.sep not in name else (name if os.path.exists(name) else None)
    out = [found] if found else []
    vdir = os.path.join(os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv"), "versions")
    if os.sep not in name:
        out += [p for d in OWN_BUILDS if os.access(p := os.path.join(d, name), os.X_OK)]
    if os.sep not in name and os.path.isdir(vdir):
        for v in sorted(os.listdir(vdir), reverse=True):
            p = os.path.join(vdir, v, "bin", name)
            if os.access(p, os.X_OK):
                out.append(p)
    return out


def resolve(name: str) -> dict:
    """{executable, implementation, soabi, version} of ``name`` (cached); InterpError if it
    is not found or does not run.  A pyenv shim that is on PATH but not enabled fails when
    run: the matching ``~/.pyenv/versions/*/bin/NAME`` is used then."""
    if name in _RESOLVED:
        return _RESOLVED[name]
    tried = _candidates(name)
    for path in tried:
        try:
            r = subprocess.run([path, "-c", _PROBE], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        lines = r.stdout.split("\n")
        if r.returncode == 0 and len(lines) >= 5 and lines[0]:
            # gil: False on a free-threaded build (python3.13t), whose GIL is off by default
            _RESOLVED[name] = {"name": name, "executable": lines[0], "implementation": lines[1],
                               "soabi": lines[2], "version": lines[3], "gil": lines[4] != "0"}
            return _RESOLVED[name]
    if not tried:
        raise InterpError(f"python={name}: interpreter not found (give a name on PATH or a path)")
    raise InterpError(f"python={name}: interpreter does not run (tried {', '.join(tried)})")


def check_name(text: str) -> str:
    """The spec check of ``python=``: the interpreter must exist and run (resolved once)."""
    resolve(text)
    return text


def compiled_tree(part: str = "lib") -> str:
    return os.path.join(COMPILED_DIR, part)


def manifest(part: str = "lib") -> dict | None:
    try:
        with open(os.path.join(compiled_tree(part), "manifest.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def check_compiled(label: str, python: str | None, default_soabi: str, part: str = "lib") -> dict:
    """The manifest of the compiled tree a spec runs on; InterpError (one line, what to do)
    when it is not built or was built for another interpreter ABI than ``python``'s."""
    m = manifest(part)
    if m is None:
        raise InterpError(f"{label}: the compiled libraries are not built: run make compiled")
    soabi = _info(python)["soabi"] if python else default_soabi
    if m.get("soabi") != soabi:
        raise InterpError(f"{label}: build/compiled/{part} was compiled for {m.get('soabi')}, "
                          f"not this interpreter ({soabi or 'no CPython ABI'}); compiled specs "
                          f"run on the CPython they were built for")
    return m


def _info(executable: str) -> dict:
    """What ``resolve`` found for an interpreter already resolved under another name (a
    spec's python= is resolved to its executable), else ``resolve(executable)``."""
    for info in _RESOLVED.values():
        if info["executable"] == executable:
            return info
    return resolve(executable)


def record_of(m: dict) -> dict:
    """What a run record keeps of a compiled tree's manifest."""
    keys = ("part", "compiled", "interpreted", "mypy", "soabi", "source_commit", "source_dirty",
            "source_hash", "built_utc")
    return {k: m.get(k) for k in keys}


def python_for(spec, python: str | None) -> str | None:
    """The interpreter a spec's server runs on: its ``python=``, else the batch's."""
    name = spec.get("python")
    return resolve(name)["executable"] if name else python


def part_of(spec) -> str | None:
    """The compiled tree a spec runs on: "lib" (``compiled`` on a variant: its library),
    "app" (``compiled_app``, or ``compiled`` on raw_epoll: the echo app and the raw epoll
    server compiled too, in a tree with its own copy of harness/), None: interpreted."""
    if spec.get("compiled_app") or (spec.get("compiled") and spec.name == "raw_epoll"):
        return "app"
    return "lib" if spec.get("compiled") else None


def entry(spec, target: str) -> list[str]:
    """How the interpreter starts a server module: ``-m`` needs a code object, which a
    compiled (extension) module has not, so a compiled server module is imported by ``-c``
    and its ``main()`` called (argv after it is the server's, as with ``-m``)."""
    part = part_of(spec)
    if part and os.path.exists(os.path.join(compiled_tree(part), "manifest.json")) and \
            target.replace(".", "/") + ".py" in (manifest(part) or {}).get("compiled", ()):
        return ["-c", f"import sys; sys.argv[0] = {target!r}; import {target} as m; m.main()"]
    return ["-m", target]


def check_spec(spec, python: str | None) -> None:
    """InterpError unless a ``compiled`` spec's tree is built for its interpreter
    (``python``: the one it runs on, python_for's answer)."""
    part = part_of(spec)
    if part:
        if getattr(spec, "commit", None):
            raise InterpError(f"{spec.text}: compiled runs the working tree's library; "
                              f"it does not take @REV")
        import sysconfig
        check_compiled(spec.text, python, sysconfig.get_config_var("SOABI") or "", part)


def path_first(spec) -> str | None:
    """The tree a spec's server imports first and starts in (None: the working tree)."""
    part = part_of(spec)
    return compiled_tree(part) if part else None


def record_config(spec) -> dict:
    """The run record's view of where this spec ran (``config.spec_python``: its python=,
    resolved; ``config.compiled``: the compiled tree's manifest), beside the batch's
    ``config.python``."""
    name = spec.get("python")
    part = part_of(spec)
    m = manifest(part) if part else None
    return {"spec_python": resolve(name) if name else None,
            "compiled": record_of(m) if m else None}


# PyPy's JIT compiles the loop after it has run a while; a run measured before that measures
# the interpreter, not the JIT.  Measured (docs/performance.md, "Interpreters"): this many
# seconds of warm-up at 64 connections in flight reach the steady rate.  Applied only when
# the batch's warm-up is the default one; a warm-up given explicitly is kept.
PYPY_WARMUP = 2.0


def warmup_for(spec, warmup: float, python: str | None, default: float) -> float:
    """The warm-up a run of ``spec`` gets: at least PYPY_WARMUP on PyPy, unless the
    batch's warm-up was given explicitly (is not ``default``)."""
    if warmup != default or spec.server.kind != "python":
        return warmup
    exe = python_for(spec, python)
    if exe and _info(exe)["implementation"] == "pypy":
        return max(warmup, PYPY_WARMUP)
    return warmup
