# Thin wrapper: the real build is meson + ninja (meson.build).
#   make run    install what is missing, build, run a demo daemon in the foreground
#   make test   install what is missing, build with ASan+UBSan, run every test
#   make fuzz   run each libFuzzer target for longer (FUZZ_SECONDS, default 300)
#   make bench  benchmarks (bench/)

BUILD      ?= build
TEST_BUILD ?= build-test
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 300

BUILD_PKGS = meson ninja-build pkg-config gcc libc6-dev libssl-dev libevent-dev openssl libcrypt-dev libsqlite3-dev libunbound-dev libidn2-dev libidn-dev
TEST_PKGS  = $(BUILD_PKGS) iproute2 dovecot-core dovecot-lmtpd sqlite3 libcmocka-dev clang libclang-rt-14-dev python3 python3-pytest swaks libnet-ssleay-perl

.PHONY: all build run test fuzz bench deps test-deps clean

all: build

deps:
	@scripts/deps.sh $(BUILD_PKGS)

test-deps:
	@scripts/deps.sh $(TEST_PKGS)

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=release -Dtests=false

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

run: build
	@scripts/demo.sh $(BUILD)/sluice

$(TEST_BUILD)/build.ninja:
	meson setup $(TEST_BUILD) --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false

$(FUZZ_BUILD)/build.ninja:
	CC=clang meson setup $(FUZZ_BUILD) --buildtype=debug -Dfuzz=true -Dtests=false \
		-Db_sanitize=address,undefined -Db_lundef=false

# The release build is compiled too: it is what `make run` uses, and -O3
# with _FORTIFY_SOURCE=3 warns (-Werror) where the debug build does not.
test: test-deps $(BUILD)/build.ninja $(TEST_BUILD)/build.ninja $(FUZZ_BUILD)/build.ninja
	ninja -C $(BUILD)
	ninja -C $(TEST_BUILD)
	ninja -C $(FUZZ_BUILD)
	@scripts/run-tests.sh $(TEST_BUILD) $(FUZZ_BUILD)

fuzz: test-deps $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD)
	@scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

QUICK ?= 0
bench: build
	@QUICK=$(QUICK) bench/run.sh $(BUILD)/sluice
	@QUICK=$(QUICK) bench/abuse.sh $(BUILD)/sluice

clean:
	rm -rf $(BUILD) $(TEST_BUILD) $(FUZZ_BUILD) run
