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
# Recursive (=) so pkg-config runs after the deps stamp installed them.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))
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

.PHONY: all lib test examples test-sse run asan tsan bench install uninstall clean help deps check-examples
.DEFAULT_GOAL := all

all: lib $(BUILD)/evstream-demo

lib: $(LIB_A) $(LIB_SO)

help:
	@echo "make            build the static and shared library (build/)"
	@echo "make run        build and run the demo (main job)"
	@echo "make test       build and run the Criterion suite"
	@echo "make examples   build every example and check its output"
	@echo "make test-sse   serve SSE with examples/sse_server and read it with curl"
	@echo "make asan       run the suite under AddressSanitizer + UBSan"
	@echo "make tsan       run the suite under ThreadSanitizer"
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
# machine from being oversubscribed by the threaded tests.
CRITERION_FLAGS ?= --jobs 2
TEST_WRAP ?=
test: $(TEST_BIN)
	$(TEST_WRAP) $(TEST_BIN) $(CRITERION_FLAGS)

# The benchmark: comparisons with ZeroMQ and nng are compiled in when
# their packages are present (make bench installs them).
BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BIN  := $(BUILD)/evs-bench
BENCH_DEFS = $(shell pkg-config --exists libzmq && echo -DEVS_BENCH_HAVE_ZMQ) \
             $(shell [ -f /usr/include/nng/nng.h ] && echo -DEVS_BENCH_HAVE_NNG)
BENCH_LIBS = $(shell pkg-config --exists libzmq && pkg-config --libs libzmq) \
             $(shell [ -f /usr/include/nng/nng.h ] && echo -lnng)
BENCH_ARGS ?=

$(BENCH_BIN): $(BENCH_SRCS) $(wildcard bench/*.h) $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(BENCH_DEFS) -O2 -o $@ $(BENCH_SRCS) $(LIB_A) $(LDFLAGS_ALL) $(PKG_LIBS) $(BENCH_LIBS) -lm

# build/evs-bench links to the binary so that it runs from a stable path.
bench:
	$(MAKE) DEPS_WHAT=bench BUILD=build/bench build/bench/evs-bench
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

$(BUILD)/evstream-demo: $(BUILD)/examples/demo
	cp $< $@

run: $(BUILD)/evstream-demo
	$(BUILD)/evstream-demo

# Sanitizer builds live in their own build directories.
asan:
	$(MAKE) BUILD=build/asan DEPS_WHAT=sanitizers OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  TEST_WRAP=scripts/run-checked.sh test examples
tsan:
	$(MAKE) BUILD=build/tsan DEPS_WHAT=sanitizers OPT=-O1 \
	  SAN="-fsanitize=thread" EXTRA_CFLAGS="-DCK_USE_CC_BUILTINS=1 -DEVS_TSAN=1" \
	  TSAN_SHIM=1 CRITERION_FLAGS= TEST_WRAP=scripts/run-checked.sh test

$(BUILD)/evstream.pc: Makefile
	@mkdir -p $(@D)
	@printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCDIR)' '' \
	  'Name: evstream' 'Description: in-process publish/subscribe event streaming' \
	  'Version: $(VERSION)' 'Requires.private: $(PKGS)' \
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

-include $(OBJS:.o=.d) $(TOBJS:.o=.d)
