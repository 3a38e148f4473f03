# leakguard: the commands a newcomer guesses.
#
#   make test    the one test command: Rust tests of the whole workspace, the Python wheel
#                built and installed into .venv, the Python tests (pytest) against it
#   make lint    rustfmt and clippy (warnings are errors), mypy on the Python package
#   make fmt     format the Rust code
#   make bench   criterion benches against peer crates
#   make fuzz    every fuzz target (fuzz/, cargo-fuzz) for FUZZ_SECONDS each; see FUZZING.md
#   make py-dev  build the extension in place into .venv (maturin develop), for quick iteration
#   make demo    run the README's demo service
#
# Python tools come from requirements-dev.txt into .venv (made with `python3 -m venv`).
# The Prometheus server and promtool (for the fleet scan's test and the /metrics format test)
# are taken from Debian's prometheus package when they are not on PATH; see the `prometheus`
# target. Headless Chromium and chromedriver (for the page's browser test) are Debian's
# chromium and chromium-driver; see the `chromium` target.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
CARGO ?= cargo
VENV := .venv
VENV_BIN := $(CURDIR)/$(VENV)/bin
PY := $(VENV_BIN)/python
# The venv's tools (maturin, pytest, mypy, and prometheus and promtool once fetched) come first.
export PATH := $(VENV_BIN):$(PATH)

PY_CRATE := leakguard-py
WHEEL_DIR := target/wheels
# The Python tests: the package's own, and any at the top level.
PY_TESTS := $(PY_CRATE)/tests $(wildcard tests/python tests/test_*.py)

.PHONY: test cargo-test wheel demo-bin py-test promtool venv lint fmt bench py-dev demo clean-venv stubtest fuzz fuzz-build cargo-fuzz chromium

## test: wheel build + install, cargo tests, Python tests. A cold run takes a few minutes.
test: wheel cargo-test py-test

# The heap-profile test needs jemalloc built with profiling support: a feature of the tests
# crate, so that every other test runs against the default jemalloc build. The fleet scan's
# test (tests/tests/prometheus_fleet.rs) runs the Prometheus server that `prometheus` provides.
cargo-test: prometheus
	$(CARGO) test --workspace
	$(CARGO) test -p leakguard-tests --features profiling --test profile

# A debug wheel: the tests check behaviour, not speed, and a cold debug build is far quicker
# than a release one on two cores. maturin (>= 1.9.4) sets PYO3_BUILD_EXTENSION_MODULE, so
# the module does not link libpython; the wheel is abi3 (CPython >= 3.9).
wheel: venv
	rm -f $(WHEEL_DIR)/leakguard-*.whl
	$(VENV_BIN)/maturin build --manifest-path $(PY_CRATE)/Cargo.toml --interpreter $(PY) --out $(WHEEL_DIR)
	$(PY) -m pip install --quiet --no-index --no-deps --force-reinstall $(WHEEL_DIR)/leakguard-*.whl

# The demo binary that test_exposition.py runs (target/debug/examples/leaky_service).
demo-bin:
	$(CARGO) build --example leaky_service

# pytest exits 5 when it collects no test: that would mean the Python tests went missing,
# so it is an error here, said plainly. Every other non-zero code is passed on as it is.
py-test: venv promtool chromium wheel demo-bin
	@status=0; $(VENV_BIN)/pytest -p no:cacheprovider $(PY_TESTS) || status=$$?; \
	if [ "$$status" -eq 5 ]; then \
		echo "error: pytest collected no tests from $(PY_TESTS)" >&2; exit 1; \
	fi; \
	exit "$$status"

## venv: .venv with the tools of requirements-dev.txt (re-installed when that file changes).
venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

## prometheus: the Prometheus server and promtool (the fleet scan's end-to-end test runs a real
## server, backfilled by promtool; the /metrics format test runs promtool): the ones on PATH,
## else both extracted from Debian's prometheus package into .venv/bin. The package is
## downloaded (about 19 MB), not installed: installing it would start a Prometheus server from
## its postinst, create a system user and pull in ~40 packages; both are static binaries.
.PHONY: prometheus
promtool: prometheus
prometheus: venv
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
		echo "error: prometheus or promtool is not on PATH; install Prometheus and its promtool (Debian: package prometheus)" >&2; \
		exit 1; \
	fi; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	if ! (cd "$$tmp" && apt-get download -qq prometheus 2>/dev/null); then \
		if [ "$$(id -u)" -ne 0 ]; then \
			echo "error: cannot download Debian's prometheus package (run 'apt-get update' as root, or install prometheus and promtool)" >&2; \
			exit 1; \
		fi; \
		apt-get update -qq; \
		(cd "$$tmp" && apt-get download -qq prometheus 2>&1 | grep -v 'unsandboxed as root' || true); \
	fi; \
	dpkg-deb --fsys-tarfile "$$tmp"/prometheus_*.deb | tar -x -C "$$tmp" ./usr/bin/promtool ./usr/bin/prometheus; \
	install -m 0755 "$$tmp/usr/bin/promtool" "$$tmp/usr/bin/prometheus" $(VENV_BIN)/; \
	echo "prometheus: $$($(VENV_BIN)/prometheus --version 2>&1 | head -n 1), with promtool, from Debian's prometheus package, in $(VENV)/bin"

## chromium: headless Chromium and its WebDriver for tests/python/test_ui_browser.py, from
## Debian's chromium and chromium-driver packages when /usr/bin/chromium or /usr/bin/chromedriver
## is missing (CHROMIUM and CHROMEDRIVER point the test elsewhere). Nothing when both are there.
CHROMIUM ?= /usr/bin/chromium
CHROMEDRIVER ?= /usr/bin/chromedriver
export CHROMIUM CHROMEDRIVER
chromium:
	@if [ -x "$(CHROMIUM)" ] && [ -x "$(CHROMEDRIVER)" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null || [ "$$(id -u)" -ne 0 ]; then \
		echo "error: $(CHROMIUM) or $(CHROMEDRIVER) is missing; install Chromium and chromedriver (Debian, as root: apt-get install chromium chromium-driver), or set CHROMIUM and CHROMEDRIVER" >&2; \
		exit 1; \
	fi; \
	install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }; \
	if ! install; then apt-get update -qq && install; fi; \
	if ! [ -x "$(CHROMIUM)" ] || ! [ -x "$(CHROMEDRIVER)" ]; then \
		echo "error: installed Debian's chromium and chromium-driver, but $(CHROMIUM) or $(CHROMEDRIVER) is still missing" >&2; \
		exit 1; \
	fi; \
	echo "chromium: $$($(CHROMIUM) --version 2>/dev/null), $$($(CHROMEDRIVER) --version 2>/dev/null | cut -d' ' -f1-2), from Debian's packages"

## lint: rustfmt, clippy with warnings as errors, mypy --strict on the Python package, its tests
## and the Python benchmarks.
lint: venv
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	$(PY) -m mypy --strict --cache-dir $(VENV)/.mypy_cache $(PY_CRATE)/python/leakguard $(PY_CRATE)/tests benches/python
	$(MAKE) --no-print-directory stubtest

## stubtest: the .pyi stubs against the built extension (run from .venv so that the installed
## package is what is checked). `make test` runs it too, in test_package.py.
stubtest: wheel
	cd $(VENV) && $(PY) -m mypy.stubtest leakguard._leakguard

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench -p leakguard-benches

## py-dev: compile the extension into leakguard-py/python/leakguard/ and install the package
## into .venv in editable mode; Python edits show at once, Rust edits after another py-dev.
py-dev: venv
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV_BIN)/maturin develop --manifest-path $(PY_CRATE)/Cargo.toml

demo:
	$(CARGO) run --release --example leaky_service

## fuzz: build the fuzz targets (fuzz/, a workspace of its own) with cargo-fuzz on the stable
## toolchain (`-s none`: no sanitizer, which needs nightly), then run each for FUZZ_SECONDS.
## New inputs go to fuzz/target/corpus/<target>; the committed seeds in fuzz/corpus are only
## read. A crash stops the run with its input in fuzz/artifacts/<target>/ (see FUZZING.md).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := size env proc_files cgroup_files cli_input endpoint http_raw
CARGO_FUZZ_VERSION := 0.13.2
# -O with -a: optimized, with debug assertions and overflow checks kept on.
FUZZ_FLAGS := -s none -O -a

cargo-fuzz:
	@if ! $(CARGO) fuzz --version 2>/dev/null | grep -q ' $(CARGO_FUZZ_VERSION)$$'; then \
		$(CARGO) install --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION); \
	fi

fuzz-build: cargo-fuzz
	cd fuzz && $(CARGO) fuzz build $(FUZZ_FLAGS)

fuzz: fuzz-build
	@cd fuzz && mkdir -p target/corpus && : > target/fuzz-summary.txt; \
	for t in $(FUZZ_TARGETS); do \
		mkdir -p target/corpus/$$t; \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
		status=0; \
		$(CARGO) fuzz run $(FUZZ_FLAGS) $$t target/corpus/$$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 -rss_limit_mb=1024 \
			> target/fuzz-$$t.log 2>&1 || status=$$?; \
		grep -E '^Done|INITED|ERROR|panicked' target/fuzz-$$t.log || true; \
		if [ "$$status" -ne 0 ]; then tail -n 40 target/fuzz-$$t.log; fi; \
		echo "$$t: $$(grep -E '^Done [0-9]+ runs' target/fuzz-$$t.log || echo 'no summary'), corpus $$(ls target/corpus/$$t | wc -l) inputs, exit $$status" >> target/fuzz-summary.txt; \
		if [ "$$status" -ne 0 ]; then cat target/fuzz-summary.txt; echo "fuzz: $$t failed; the input is in fuzz/artifacts/$$t/" >&2; exit 1; fi; \
	done; \
	cat target/fuzz-summary.txt

clean-venv:
	rm -rf $(VENV)
