# evstream: a plain Makefile. `make help` lists the targets.
#
# Dependencies come from pkg-config; when one is missing, scripts/deps.sh
# installs it (Debian), so a fresh machine needs no manual step.

VERSION := $(shell sed -n 's/^\#define EVS_VERSION_STRING "\(.*\)"/\1/p' include/evstream.h)
SOVERSION := $(firstword $(subst ., ,$(VERSION)))

CC      ?= cc
PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
DESTDIR ?=
WERROR  ?= 1
BUILD   ?= build
OPT     ?= -O2

PKGS      := ck msgpack jansson
# The NATS bridge (src/nats_bridge.c) is optional: with libnats found it
# is compiled in (-DEVS_HAVE_NATS) and linked, and evstream.pc requires
# it; without, evs_nats_bridge_create returns EVS_ENOTSUP.
NATS_PKG   = $(shell pkg-config --exists libnats 2>/dev/null && echo libnats)
# Recursive (=) so pkg-config runs after the deps stamp installed them.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) $(NATS_PKG)) $(if $(NATS_PKG),-DEVS_HAVE_NATS)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) $(NATS_PKG))
TEST_LIBS  = $(shell pkg-config --libs criterion)
# TSan builds swap Criterion for tests/tsan (see the header there for why).
ifeq ($(TSAN_SHIM),1)
TEST_LIBS  =
TSHIM_CFLAGS := -Itests/tsan
TSHIM_OBJS   = $(BUILD)/tobj/tsan_runner.o
endif

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
ifeq ($(WERROR),1)
WARN    += -Werror
endif
SAN     ?=
CFLAGS_ALL = -std=c11 -D_GNU_SOURCE $(OPT) -g $(WARN) -fPIC -pthread $(SAN) \
             -Iinclude -Isrc $(PKG_CFLAGS) $(EXTRA_CFLAGS) -MMD -MP
LDFLAGS_ALL = -pthread $(SAN) $(EXTRA_LDFLAGS)

SRCS     := $(wildcard src/*.c)
OBJS     := $(SRCS:src/%.c=$(BUILD)/obj/%.o)
TSRCS    := $(wildcard tests/test_*.c)
TOBJS    := $(TSRCS:tests/%.c=$(BUILD)/tobj/%.o)
EXAMPLES := $(patsubst examples/%.c,$(BUILD)/examples/%,$(wildcard examples/*.c))

LIB_A    := $(BUILD)/libevstream.a
LIB_SO   := $(BUILD)/libevstream.so.$(VERSION)
TEST_BIN := $(BUILD)/test-evstream
DEPS_OK  := $(BUILD)/.deps-ok

# The evstream program (cli/): `evstream serve`, the SSE hub, and
# `evstream tail`, its client. It uses the library through <evstream.h>
# only, libmicrohttpd for HTTP, jansson for JSON and libcurl for tail.
CLI_SRCS   := $(wildcard cli/*.c)
CLI_OBJS   := $(CLI_SRCS:cli/%.c=$(BUILD)/cli/%.o)
CLI_BIN    := $(BUILD)/evstream
CLI_CFLAGS  = $(shell pkg-config --cflags libmicrohttpd libcurl)
CLI_LIBS    = $(shell pkg-config --libs libmicrohttpd libcurl)
# The hub, black-box, after the Criterion suite (not under TSan, whose
# slowdown the scripts' time limits do not allow for). test_hub_nats.sh
# starts nats-server; without it it skips, saying so, and in CI
# (CI=true) fails. Every script's last line counts passes, failures and
# skips.
ifneq ($(TSAN_SHIM),1)
HUB_TESTS := tests/test_serve.sh tests/test_tail.sh tests/test_hub_nats.sh
endif

.PHONY: all lib test examples test-sse test-browser run asan tsan bench install uninstall clean help deps check-examples \
        fuzz fuzz-build soak soak-asan soak-tsan coverage
.DEFAULT_GOAL := all

all: lib $(CLI_BIN)

lib: $(LIB_A) $(LIB_SO)

help:
	@echo "make            build the static and shared library (build/)"
	@echo "make run        build and start the SSE hub with its demo feed (main job)"
	@echo "make test       build and run the Criterion suite"
	@echo "make examples   build every example and check its output"
	@echo "make test-sse   serve SSE with examples/sse_server and read it with curl"
	@echo "make test-browser   headless Chromium shows the hub's page receiving events"
	@echo "make asan       run the suite under AddressSanitizer + UBSan"
	@echo "make tsan       run the suite under ThreadSanitizer"
	@echo "make fuzz FUZZ_SECONDS=N   run each libFuzzer harness for N s (clang)"
	@echo "make soak SOAK_SECONDS=N   8-thread soak; soak-asan / soak-tsan under sanitizers"
	@echo "make coverage   line and branch coverage of src/ by the suite (gcovr)"
	@echo "make bench      build and run the benchmark"
	@echo "make install PREFIX=/usr/local DESTDIR=   install headers, libs, evstream.pc"
	@echo "WERROR=0 turns -Werror off."

# Installs missing Debian packages once per build directory.
$(DEPS_OK): scripts/deps.sh
	@mkdir -p $(@D)
	@scripts/deps.sh $(DEPS_WHAT)
	@touch $@
DEPS_WHAT ?= test

deps: $(DEPS_OK)

$(BUILD)/obj/%.o: src/%.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/tobj/%.o: tests/%.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) $(TSHIM_CFLAGS) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/tobj/tsan_runner.o: tests/tsan/runner.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) $(TSHIM_CFLAGS) $(CFLAGS_ALL) -c $< -o $@

$(LIB_A): $(OBJS)
	@rm -f $@
	ar rcs $@ $^

$(LIB_SO): $(OBJS)
	$(CC) -shared -Wl,-soname,libevstream.so.$(SOVERSION) -o $@ $^ $(LDFLAGS_ALL) $(PKG_LIBS)
	ln -sf libevstream.so.$(VERSION) $(BUILD)/libevstream.so.$(SOVERSION)
	ln -sf libevstream.so.$(VERSION) $(BUILD)/libevstream.so

$(TEST_BIN): $(TOBJS) $(TSHIM_OBJS) $(LIB_A)
	$(CC) -o $@ $(TOBJS) $(TSHIM_OBJS) $(LIB_A) $(LDFLAGS_ALL) $(PKG_LIBS) $(TEST_LIBS) -lm

# Criterion runs each test in its own process; --jobs keeps the two-core
# machine from being oversubscribed by the threaded tests. Its summary
# does not count skipped tests, so a TAP report is written too and
# scripts/criterion-skips.sh prints them (and fails on them in CI).
CRITERION_FLAGS ?= --jobs 2
CRITERION_TAP ?= $(BUILD)/criterion.tap
TEST_WRAP ?=
# The hub scripts' subscription windows, multiplied (tests/hub_lib.sh,
# subscribe): test_serve.sh reads streams for fixed windows of 1 to 2 s,
# too short on a loaded two-core machine (2 here, 3 under ASan).
HUB_WINDOW_SCALE ?= $(or $(EVS_TEST_WINDOW_SCALE),2)
test: $(TEST_BIN) $(if $(HUB_TESTS),$(CLI_BIN))
	@rm -f $(BUILD)/criterion.tap
	$(TEST_WRAP) $(TEST_BIN) $(CRITERION_FLAGS) $(if $(CRITERION_TAP),--tap=$(CRITERION_TAP))
	@scripts/criterion-skips.sh $(BUILD)/criterion.tap
	$(foreach t,$(HUB_TESTS),EVS_TEST_WINDOW_SCALE=$(HUB_WINDOW_SCALE) $(t) $(CLI_BIN) &&) true

# The benchmark: comparisons with ZeroMQ and nng are compiled in when
# their packages are present (make bench installs them).
BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BIN  := $(BUILD)/evs-bench
BENCH_DEFS = $(shell pkg-config --exists libzmq && echo -DEVS_BENCH_HAVE_ZMQ) \
             $(shell [ -f /usr/include/nng/nng.h ] && echo -DEVS_BENCH_HAVE_NNG)
BENCH_LIBS = $(shell pkg-config --libs libcurl) \
             $(shell pkg-config --exists libzmq && pkg-config --libs libzmq) \
             $(shell [ -f /usr/include/nng/nng.h ] && echo -lnng)
BENCH_ARGS ?=

$(BENCH_BIN): $(BENCH_SRCS) $(wildcard bench/*.h) $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(BENCH_DEFS) -O2 -o $@ $(BENCH_SRCS) $(LIB_A) $(LDFLAGS_ALL) $(PKG_LIBS) $(BENCH_LIBS) -lm

# build/evs-bench links to the binary so that it runs from a stable path.
bench:
	$(MAKE) DEPS_WHAT=bench BUILD=build/bench build/bench/evs-bench build/bench/evstream
	ln -sf bench/evs-bench build/evs-bench
	build/evs-bench $(BENCH_ARGS)

# Examples that serve HTTP also link libmicrohttpd; the others only the library.
MHD_EXAMPLES := $(BUILD)/examples/sse_server
$(MHD_EXAMPLES): EX_CFLAGS = $(shell pkg-config --cflags libmicrohttpd)
$(MHD_EXAMPLES): EX_LIBS = $(shell pkg-config --libs libmicrohttpd)

$(BUILD)/examples/%: examples/%.c $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(EX_CFLAGS) -o $@ $< $(LIB_A) $(LDFLAGS_ALL) $(PKG_LIBS) $(EX_LIBS)

examples: $(EXAMPLES)
	@scripts/check-examples.sh $(BUILD)/examples

# The SSE server, black-box: curl reads its stream on a loopback port.
test-sse: $(BUILD)/examples/sse_server
	tests/sse_server_test.sh $<

# The evstream program (cli/): `evstream serve`, the SSE hub, and
# `evstream tail`, its client.
$(BUILD)/cli/%.o: cli/%.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(CLI_CFLAGS) -c $< -o $@

$(CLI_BIN): $(CLI_OBJS) $(LIB_A)
	$(CC) -o $@ $(CLI_OBJS) $(LIB_A) $(LDFLAGS_ALL) $(PKG_LIBS) $(CLI_LIBS)

# A real browser: headless Chromium loads the hub's page (CI installs it).
test-browser: $(CLI_BIN)
	tests/test_browser.sh $(CLI_BIN)

run: $(CLI_BIN)
	$(CLI_BIN) serve --demo

# Sanitizer builds live in their own build directories.
# pointer-subtract (with detect_invalid_pointer_pairs) reports a
# subtraction of pointers into different objects, which UBSan misses.
asan:
	$(MAKE) BUILD=build/asan DEPS_WHAT=sanitizers OPT=-O1 \
	  SAN="-fsanitize=address,undefined,pointer-subtract -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  TEST_WRAP="env ASAN_OPTIONS=detect_invalid_pointer_pairs=2 scripts/run-checked.sh" HUB_WINDOW_SCALE=3 test examples
tsan:
	$(MAKE) BUILD=build/tsan DEPS_WHAT=sanitizers OPT=-O1 \
	  SAN="-fsanitize=thread" EXTRA_CFLAGS="-DCK_USE_CC_BUILTINS=1 -DEVS_TSAN=1" \
	  TSAN_SHIM=1 CRITERION_FLAGS= CRITERION_TAP= TEST_WRAP=scripts/run-checked.sh test

# libFuzzer (clang): one harness per parser of outside input,
# tests/fuzz/fuzz_NAME.c, seeded from tests/fuzz/corpus/NAME/ (new
# inputs go to build/fuzz/corpus/NAME, crashes to build/fuzz/crashes/).
# `make fuzz FUZZ_SECONDS=N` builds into build/fuzz and runs each for N s.
FUZZ_SECONDS ?= 30
FUZZ_NAMES   := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS     = $(FUZZ_NAMES:%=$(BUILD)/fuzz_%)
FUZZ_SAN     := -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
                -fno-sanitize-recover=undefined

$(BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(LIB_A)
	$(CC) $(CFLAGS_ALL) -Itests -o $@ $< $(LIB_A) $(LDFLAGS_ALL) -fsanitize=fuzzer $(PKG_LIBS) -lm

fuzz-build: $(FUZZ_BINS)

fuzz:
	$(MAKE) BUILD=build/fuzz DEPS_WHAT=fuzz CC=clang OPT=-O1 SAN="$(FUZZ_SAN)" fuzz-build
	scripts/run-fuzz.sh build/fuzz $(FUZZ_SECONDS) $(FUZZ_NAMES)

# The soak: 8 threads of random publish/subscribe/unsubscribe/close/SSE
# traffic for SOAK_SECONDS, invariants checked at the end (tests/soak.c).
SOAK_SECONDS ?= 30
SOAK_WRAP ?=
$(BUILD)/soak: tests/soak.c $(LIB_A)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LIB_A) $(LDFLAGS_ALL) $(PKG_LIBS) -lm

soak: $(BUILD)/soak
	$(SOAK_WRAP) $(BUILD)/soak $(SOAK_SECONDS)
soak-asan:
	$(MAKE) BUILD=build/asan DEPS_WHAT=sanitizers OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  SOAK_WRAP=scripts/run-checked.sh soak
soak-tsan:
	$(MAKE) BUILD=build/tsan DEPS_WHAT=sanitizers OPT=-O1 \
	  SAN="-fsanitize=thread" EXTRA_CFLAGS="-DCK_USE_CC_BUILTINS=1 -DEVS_TSAN=1" \
	  SOAK_WRAP=scripts/run-checked.sh soak

# Line and branch coverage of src/ by the Criterion suite (gcovr), in
# build/cov: coverage.txt per file, the totals printed. -O0 keeps lines
# countable; WERROR=0 because GCC's -O0 flow analysis warns differently
# (the other builds keep the code warning-free).
coverage:
	@rm -f build/cov/obj/*.gcda build/cov/tobj/*.gcda
	$(MAKE) BUILD=build/cov DEPS_WHAT=coverage OPT=-O0 SAN=--coverage WERROR=0 test
	gcovr --root . --filter 'src/' --object-directory build/cov/obj \
	  --txt build/cov/coverage.txt --print-summary
	@echo "per file: build/cov/coverage.txt"

$(BUILD)/evstream.pc: Makefile
	@mkdir -p $(@D)
	@printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCDIR)' '' \
	  'Name: evstream' 'Description: in-process publish/subscribe event streaming' \
	  'Version: $(VERSION)' 'Requires.private: $(PKGS) $(NATS_PKG)' \
	  'Libs: -L$${libdir} -levstream' 'Libs.private: -pthread' \
	  'Cflags: -I$${includedir}' > $@

install: lib $(BUILD)/evstream.pc
	install -d $(DESTDIR)$(INCDIR) $(DESTDIR)$(LIBDIR)/pkgconfig
	install -m 644 include/evstream.h $(DESTDIR)$(INCDIR)/
	install -m 644 $(LIB_A) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(LIB_SO) $(DESTDIR)$(LIBDIR)/
	ln -sf libevstream.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libevstream.so.$(SOVERSION)
	ln -sf libevstream.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libevstream.so
	install -m 644 $(BUILD)/evstream.pc $(DESTDIR)$(LIBDIR)/pkgconfig/

uninstall:
	rm -f $(DESTDIR)$(INCDIR)/evstream.h $(DESTDIR)$(LIBDIR)/libevstream.* \
	  $(DESTDIR)$(LIBDIR)/pkgconfig/evstream.pc

clean:
	rm -rf build

-include $(OBJS:.o=.d) $(TOBJS:.o=.d) $(CLI_OBJS:.o=.d) $(FUZZ_BINS:=.d) $(BUILD)/soak.d
