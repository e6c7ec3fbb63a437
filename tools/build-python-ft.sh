#!/usr/bin/env bash
# Build a free-threaded CPython 3.13 (configure --disable-gil) into build/python-ft/.
#
# Called by `make python-ft`; never by `make test`.  The source is Debian's own
# python3.13 source package (trixie), fetched with apt-get from Debian's archive and
# nothing else: apt gets it through private state directories under build/, so the
# system's apt configuration is not touched.  Only the upstream tarball
# (python3.13_<version>.orig.tar.xz) is used, not Debian's patches; apt checks it against
# the signed Sources index and this script checks it once more against the .dsc.
#
# Not optimized: no --enable-optimizations (PGO would run the test suite under the
# profiler, ~30 minutes more on 2 cores) and no LTO, so this interpreter is slower
# than a distribution's build.  Compare servers on the same interpreter only.
#
# Cached: when build/python-ft/bin/python3.13t exists and runs with the GIL disabled,
# nothing is done.  Build dependencies (headers for ssl, zlib, ctypes' libffi, bz2,
# lzma: what pip and the project need) are installed with apt-get from the system's
# own sources, only those missing, and only as root.
#
# Usage: tools/build-python-ft.sh [PREFIX]      (default: build/python-ft)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${1:-$ROOT/build/python-ft}
mkdir -p "$(dirname "$PREFIX")"
PREFIX=$(cd "$(dirname "$PREFIX")" && pwd)/$(basename "$PREFIX")
WORK=$ROOT/build/python-ft-src          # apt's private state and the downloaded files
SUITE=trixie
PACKAGE=python3.13
EXE=$PREFIX/bin/python3.13t
JOBS=$(nproc 2>/dev/null || echo 2)

say() { printf '[python-ft] %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

works() {
    [ -x "$EXE" ] && "$EXE" -c 'import sys; sys.exit(sys._is_gil_enabled())' 2>/dev/null
}

if works; then
    say "up to date: $EXE ($("$EXE" -c 'import sys; print(sys.version.split()[0])'), GIL disabled)"
    exit 0
fi

START=$SECONDS
TMP=""
cleanup() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        [ -n "$TMP" ] && rm -rf "$TMP"
        # A half-installed prefix would pass for an interpreter next time: remove it.
        if [ -d "$PREFIX" ] && ! works; then rm -rf "$PREFIX"; fi
        printf 'error: building the free-threaded interpreter failed (exit %s); nothing is left in %s\n' \
            "$rc" "$PREFIX" >&2
    else
        [ -n "$TMP" ] && rm -rf "$TMP"
    fi
}
trap cleanup EXIT

# -- tools and build dependencies ------------------------------------------------------
command -v apt-get >/dev/null || die "apt-get not found: this script fetches Debian's $PACKAGE source package"
for tool in gcc make tar xz sha256sum; do
    command -v "$tool" >/dev/null || MISSING_TOOLS="${MISSING_TOOLS:-} $tool"
done
# Headers the interpreter needs for what the project and pip use: ssl and zlib (pip
# installing from PyPI), libffi (ctypes), bz2 and lzma (tarfile, shutil archives).
# Not needed: sqlite3, readline, curses, dbm, tkinter, uuid (those modules are skipped).
DEPS="gcc make xz-utils pkg-config libssl-dev zlib1g-dev libffi-dev libbz2-dev liblzma-dev debian-archive-keyring"
missing=""
for pkg in $DEPS; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    [ "$(id -u)" -eq 0 ] || die "missing build dependencies:$missing; install them (apt-get install$missing) or run as root"
    say "installing missing build dependencies from the system's apt sources:$missing"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
elif [ -n "${MISSING_TOOLS:-}" ]; then
    die "missing tools:${MISSING_TOOLS}"
fi

# -- the source: Debian's python3.13 source package, through private apt state ---------
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial" "$WORK/download"
cat > "$WORK/src.sources" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
APT=(apt-get -q -o "Dir::Etc::SourceList=$WORK/src.sources" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$WORK/lists" -o "Dir::Cache=$WORK/cache"
     -o APT::Sandbox::User=root)
orig=$(ls "$WORK"/download/${PACKAGE}_*.orig.tar.xz 2>/dev/null | head -n1 || true)
if [ -z "$orig" ]; then
    [ "$(id -u)" -eq 0 ] || say "note: not root; apt-get source with private state directories may still work"
    say "fetching the $SUITE source index into $WORK/lists (the system's apt state is not touched)"
    "${APT[@]}" update >"$WORK/apt-update.log" 2>&1 \
        || { cat "$WORK/apt-update.log" >&2; die "apt-get update of the $SUITE deb-src index failed"; }
    say "downloading the $PACKAGE source package (apt checks each file against the signed index)"
    (cd "$WORK/download" && "${APT[@]}" source --download-only "$PACKAGE") >"$WORK/apt-source.log" 2>&1 \
        || { cat "$WORK/apt-source.log" >&2; die "apt-get source --download-only $PACKAGE failed"; }
    orig=$(ls "$WORK"/download/${PACKAGE}_*.orig.tar.xz 2>/dev/null | head -n1 || true)
    [ -n "$orig" ] || die "no ${PACKAGE}_*.orig.tar.xz in $WORK/download after apt-get source"
fi
dsc=$(ls "$WORK"/download/${PACKAGE}_*.dsc | head -n1)
name=$(basename "$orig")
want=$(awk -v f="$name" '/^Checksums-Sha256:/ {s=1; next} /^[^ ]/ {s=0} s && $3 == f {print $1}' "$dsc")
got=$(sha256sum "$orig" | cut -d' ' -f1)
[ -n "$want" ] || die "$name is not listed in $(basename "$dsc")"
[ "$want" = "$got" ] || die "$name: sha256 $got does not match the .dsc's $want"
say "source: $name ($(du -h "$orig" | cut -f1)), sha256 $got matches $(basename "$dsc")"

# -- configure, make, install ----------------------------------------------------------
TMP=$(mktemp -d "$ROOT/build/python-ft-build.XXXXXX")
tar -xJf "$orig" -C "$TMP"
srcdir=$(find "$TMP" -mindepth 1 -maxdepth 1 -type d -name 'Python-*' | head -n1)
[ -n "$srcdir" ] || die "the tarball has no Python-* directory"
say "configure --disable-gil --prefix=$PREFIX (no --enable-optimizations: PGO is too slow here)"
(cd "$srcdir" && ./configure --disable-gil --prefix="$PREFIX" --with-ensurepip=install >"$TMP/configure.log" 2>&1) \
    || { tail -n 30 "$TMP/configure.log" >&2; die "configure failed (log above)"; }
say "make -j$JOBS (several minutes on 2 cores; log: $TMP/make.log while it runs)"
(cd "$srcdir" && make -j"$JOBS" >"$TMP/make.log" 2>&1) \
    || { tail -n 30 "$TMP/make.log" >&2; die "make failed (log above)"; }
grep -A3 'necessary bits to build these optional modules' "$TMP/make.log" | sed 's/^/[python-ft]   /' || true
say "make install into $PREFIX"
rm -rf "$PREFIX"
(cd "$srcdir" && make install >"$TMP/install.log" 2>&1) \
    || { tail -n 30 "$TMP/install.log" >&2; die "make install failed (log above)"; }

# -- check ------------------------------------------------------------------------------
"$EXE" -c 'import ssl, zlib, ctypes, select, socket, threading, json, subprocess, bz2, lzma' \
    || die "$EXE lacks a module the project or pip needs"
works || die "$EXE runs with the GIL enabled"
elapsed=$((SECONDS - START))
say "built $("$EXE" -c 'import sys; print(sys.version.split()[0])') in $((elapsed / 60)) min $((elapsed % 60)) s: $EXE"
say "sys._is_gil_enabled() = $("$EXE" -c 'import sys; print(sys._is_gil_enabled())')"
