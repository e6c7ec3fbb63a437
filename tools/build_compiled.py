"""Compile the Events libraries (and, separately, the echo app and the raw epoll server) with
mypyc into build/compiled/ (``make compiled``, issue 25).

Two trees: ``build/compiled/lib`` holds the libraries compiled (spec ``alone_proc:compiled``;
the echo app stays the working tree's, interpreted); ``build/compiled/app`` holds the
libraries, ``harness/servers/common.py`` (the echo app) and ``raw_epoll.py`` compiled, beside
a copy of ``harness/`` (specs ``raw_epoll:compiled``, ``alone_proc:compiled_app``), so that
compiled is compared with compiled as well as with interpreted.  ``counters.py`` stays
interpreted there: its ``Stats`` declares attributes through a computed ``__slots__``, which
mypyc cannot see (AttributeError at run time).

Why a separate tree: a compiled module is a ``.so`` beside its ``.py`` and wins the
import, so the compiled libraries must never land in the working tree (every other run
would silently become a compiled run).  We copy ``variants/`` of the working tree
(uncommitted edits included; the manifest says so) into ``build/compiled/lib/``, run
mypyc there, and the spec option ``compiled`` (``alone_proc:compiled``) starts the server
with that tree first on its import path and as its working directory -- the NAME@REV
mechanism of harness/servers/__init__.py.

What stays interpreted, and why (mypyc 2.x, found by trying):

* every ``__init__.py``: a compiled package ``__init__`` doing ``from ..common.constants
  import *`` fails at import;
* ``variants/common/api_types.py``: Protocol stubs whose methods' bodies are ``...`` fail
  at import when compiled;
* ``variants/common/backends/select.py``: its ``Poller()`` raises SystemError compiled;
* ``variants/ablation/``: it compiles its classes at run time from a template (the
  literal server is not a compiled spec).

Each tree's manifest (``build/compiled/PART/manifest.json``) lists the modules compiled, those left
interpreted with the reason, the mypy version, the interpreter it was built for (a ``.so``
is ABI-specific), the source commit and whether the tree was dirty.  It also keeps a hash of
the sources: a second ``make compiled`` with unchanged sources and the same mypy/interpreter
does nothing.  The build happens in a temporary directory renamed into place at the end, so
a failed or interrupted build never leaves a half tree that a run would pick up.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "build", "compiled")
# The parts: "lib", the libraries (variants/) only; "app", the libraries and the echo
# application with the raw epoll server (harness/servers/common.py, counters.py,
# raw_epoll.py), in a tree holding a copy of harness/ too -- those modules are being
# edited by others while we measure, so the build compiles a snapshot, never the tree.
PARTS = ("lib", "app")
APP_MODULES = ("harness/servers/common.py", "harness/servers/raw_epoll.py")
APP_INTERPRETED = {
    "harness/servers/counters.py": "class Stats declares its attributes by a computed __slots__ "
                                   "(COUNTERS + PARTS), which mypyc cannot see: 'Stats' object has "
                                   "no attribute 'accepted' at run time (a literal __slots__ would "
                                   "fix it; the module is another issue's, left as is)",
}

# path (relative to the tree) -> why it stays interpreted; a directory prefix ends in "/".
INTERPRETED = {
    "variants/ablation/": "compiles its classes at run time from a template (ae.pyt)",
    "variants/common/api_types.py": "Protocol stubs with '...' bodies fail at import when compiled",
    "variants/common/backends/select.py": "its Poller() raises SystemError when compiled",
}
INIT_REASON = ("a compiled package __init__ with 'from ..common.constants import *' "
               "fails at import")


def _why_interpreted(rel: str) -> str | None:
    for key, why in INTERPRETED.items():
        if rel == key or (key.endswith("/") and rel.startswith(key)):
            return why
    return INIT_REASON if os.path.basename(rel) == "__init__.py" else None


def sources(root: str = ROOT, part: str = "lib") -> list[str]:
    """The files to copy (relative paths, sorted): .py files and templates of variants/
    (and of harness/, for the app part), and the mypy configuration."""
    out = ["pyproject.toml"]
    for top in ("variants",) + (("harness",) if part == "app" else ()):
        for d, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(x for x in dirs if x not in ("__pycache__", "loadgen", "delayline"))
            for f in files:
                if f.endswith((".py", ".pyt")):
                    out.append(os.path.relpath(os.path.join(d, f), root))
    return sorted(out)


def plan(files: list[str]) -> tuple[list[str], dict[str, str]]:
    """(modules to compile, {module left interpreted: why}) for these files; of harness/,
    only the app modules are compiled (the rest is the harness, not the server)."""
    compiled, interpreted = [], {}
    for rel in files:
        if not rel.endswith(".py"):
            continue
        if rel.startswith("harness/"):
            if rel in APP_MODULES:
                compiled.append(rel)
            elif rel in APP_INTERPRETED:
                interpreted[rel] = APP_INTERPRETED[rel]
            continue
        why = _why_interpreted(rel)
        if why:
            interpreted[rel] = why
        else:
            compiled.append(rel)
    return compiled, interpreted


def _git(*args: str) -> str:
    try:
        r = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return r.stdout.strip() if r.returncode == 0 else ""


def mypy_version(python: str) -> str:
    r = subprocess.run([python, "-c", "import mypy.version as v; print(v.__version__)"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise SystemExit(f"error: {python} cannot import mypy (mypyc ships with it): "
                         f"install the lint extra (make venv)")
    return r.stdout.strip()


def source_hash(files: list[str], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for rel in files:
        h.update(rel.encode() + b"\0")
        with open(os.path.join(ROOT, rel), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def build(out: str, python: str, force: bool = False, part: str = "lib") -> dict:
    """Build (or reuse) out/PART; return its manifest."""
    files = sources(part=part)
    compiled, interpreted = plan(files)
    mypy = mypy_version(python)
    soabi = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_config_var('SOABI'))"],
                           capture_output=True, text=True, timeout=60).stdout.strip()
    key = source_hash(files, f"{mypy} {soabi} {sorted(INTERPRETED.items())} {APP_MODULES}")
    tree = os.path.join(out, part)
    mpath = os.path.join(tree, "manifest.json")
    if not force and os.path.exists(mpath):
        with open(mpath) as f:
            old = json.load(f)
        if old.get("source_hash") == key and all(
                os.path.exists(os.path.join(tree, m)) for m in old.get("extensions", [])):
            print(f"build/compiled/{part} is up to date ({len(old['compiled'])} modules, "
                  f"mypy {old['mypy']})")
            return old
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, f".{part}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rel in files:
            dst = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, rel), dst)
        mypyc = [python, "-m", "mypyc", *compiled]
        t0 = time.monotonic()
        print(f"mypyc: compiling {len(compiled)} modules ({len(interpreted)} left interpreted)",
              flush=True)
        # why the cwd is the copy: mypyc writes build/ and the .so files relative to it.
        r = subprocess.run(mypyc, cwd=tmp, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
            raise SystemExit(f"error: mypyc failed (exit {r.returncode}); see the output above")
        shutil.rmtree(os.path.join(tmp, "build"), ignore_errors=True)   # C sources, objects
        exts = sorted(os.path.relpath(os.path.join(d, f), tmp)
                      for d, _, fs in os.walk(tmp) for f in fs if f.endswith(".so"))
        manifest = {
            "part": part, "compiled": compiled, "interpreted": interpreted,
            "extensions": exts, "mypy": mypy, "python": python, "soabi": soabi,
            "source_commit": _git("rev-parse", "HEAD") or None,
            "source_dirty": bool(_git("status", "--porcelain", "--", *sorted({f.split("/")[0] for f in compiled}))),
            "source_hash": key, "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.monotonic() - t0, 1),
        }
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")
        old_tree = tree + f".old-{os.getpid()}"
        if os.path.exists(tree):
            os.rename(tree, old_tree)
        os.rename(tmp, tree)
        shutil.rmtree(old_tree, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"build/compiled/{part}: {len(exts)} extension(s) for {len(compiled)} modules, "
          f"mypy {mypy}, {soabi}, {manifest['build_seconds']} s")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=OUT, help="where the compiled trees go (default build/compiled)")
    p.add_argument("--python", default=sys.executable,
                   help="the interpreter to compile for (it must import mypy; default: this one)")
    p.add_argument("--force", action="store_true", help="rebuild even when up to date")
    p.add_argument("--plan", action="store_true", help="print what would be compiled, build nothing")
    p.add_argument("--part", choices=PARTS + ("both",), default="both",
                   help="lib: the libraries; app: the libraries, the echo app and raw epoll")
    a = p.parse_args(argv)
    parts = PARTS if a.part == "both" else (a.part,)
    if a.plan:
        for part in parts:
            compiled, interpreted = plan(sources(part=part))
            print(json.dumps({"part": part, "compiled": compiled, "interpreted": interpreted}, indent=1))
        return 0
    for part in parts:
        build(os.path.abspath(a.out), a.python, a.force, part)
    return 0


if __name__ == "__main__":
    sys.exit(main())
