# leakguard: the commands a newcomer guesses.
#
#   make test    the one test command: Rust tests of the whole workspace, the Python wheel
#                built and installed into .venv, the Python tests (pytest) against it
#   make lint    rustfmt and clippy (warnings are errors), mypy on the Python package
#   make fmt     format the Rust code
#   make bench   criterion benches against peer crates
#   make fuzz    every fuzz target (fuzz/, cargo-fuzz) for FUZZ_SECONDS each; see FUZZING.md
#   make py-dev  build the extension in place into .venv (maturin develop), for quick iteration
#   make py-versions  the cache tests on every other CPython >= 3.9 found (pyenv, python3.X)
#   make wheels  the release wheels (manylinux2014 x86_64/aarch64, musllinux_1_2) and the sdist
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

.PHONY: test cargo-test wheel wheels demo-bin py-test py-versions promtool venv lint fmt bench py-dev demo clean-venv stubtest fuzz fuzz-build cargo-fuzz chromium

## test: wheel build + install, cargo tests, Python tests. A cold run takes a few minutes.
test: wheel cargo-test py-test py-versions

# The heap-profile test needs jemalloc built with profiling support: a feature of the tests
# crate, so that every other test runs against the default jemalloc build. The fleet scan's
# test (tests/tests/prometheus_fleet.rs) runs the Prometheus server that `prometheus` provides.
cargo-test: prometheus
	$(CARGO) test --workspace
	$(CARGO) test -p leakguard-tests --features profiling --test profile

# The test wheel is the one users on older distributions get: manylinux2014 (glibc 2.17),
# linked with zig (maturin --zig; zig from PyPI's ziglang, in .venv), for this machine's
# architecture, checked with auditwheel. A debug build: the tests check behaviour, not speed,
# and a cold debug build is far quicker than a release one on two cores. maturin (>= 1.9.4)
# sets PYO3_BUILD_EXTENSION_MODULE, so the module does not link libpython; the wheel is abi3
# (CPython >= 3.9). The distribution is leakguard-oom (wheel files leakguard_oom-*).
TEST_WHEEL_DIR := target/test-wheel
HOST_TRIPLE = $(shell rustc -vV | sed -n 's/^host: //p')
wheel: venv
	rm -rf $(TEST_WHEEL_DIR)
	$(VENV_BIN)/maturin build --manifest-path $(PY_CRATE)/Cargo.toml --interpreter $(PY) \
		--zig --target $(HOST_TRIPLE) --compatibility manylinux2014 --out $(TEST_WHEEL_DIR)
	$(VENV_BIN)/auditwheel show $(TEST_WHEEL_DIR)/leakguard_oom-*.whl | tee $(TEST_WHEEL_DIR)/auditwheel.txt
	grep -q '"manylinux_2_17_' $(TEST_WHEEL_DIR)/auditwheel.txt || { echo "error: the test wheel is not manylinux2014" >&2; exit 1; }
	$(PY) -m pip install --quiet --no-index --no-deps --force-reinstall $(TEST_WHEEL_DIR)/leakguard_oom-*.whl

## wheels: the wheels users install, release builds, into target/wheels/: manylinux2014
## (glibc 2.17) for x86_64 and aarch64, musllinux_1_2 for x86_64 (Alpine), all linked with zig
## (maturin --zig), each checked with auditwheel show (the build stops unless auditwheel gives
## the wheel the tag it carries); and the sdist (pip builds it with a Rust toolchain and
## nothing else). rustup adds the Rust targets that are missing.
## zig links the musl extension against "libc.so", a name auditwheel does not accept for
## musllinux (Alpine's is libc.musl-x86_64.so.1; musl's loader takes either as itself):
## patchelf renames it and `wheel pack` rewrites the wheel's RECORD.
WHEEL_TARGETS := x86_64-unknown-linux-gnu:manylinux2014:manylinux_2_17_x86_64 aarch64-unknown-linux-gnu:manylinux2014:manylinux_2_17_aarch64 x86_64-unknown-linux-musl:musllinux_1_2:musllinux_1_2_x86_64
wheels: venv
	rm -rf $(WHEEL_DIR)/leakguard_oom-* $(WHEEL_DIR)/musl-tmp
	rustup target add $(foreach t,$(WHEEL_TARGETS),$(word 1,$(subst :, ,$(t))))
	for spec in $(WHEEL_TARGETS); do \
		IFS=: read -r target policy tag <<< "$$spec"; \
		out=$(WHEEL_DIR); case $$target in *musl) out=$(WHEEL_DIR)/musl-tmp;; esac; \
		$(VENV_BIN)/maturin build --release --manifest-path $(PY_CRATE)/Cargo.toml --interpreter $(PY) \
			--zig --target $$target --compatibility $$policy --out $$out; \
		case $$target in *musl) \
			$(VENV_BIN)/wheel unpack -d $$out/unpacked $$out/leakguard_oom-*.whl; \
			$(VENV_BIN)/patchelf --replace-needed libc.so libc.musl-x86_64.so.1 $$out/unpacked/leakguard_oom-*/leakguard/_leakguard.abi3.so; \
			$(VENV_BIN)/wheel pack -d $(WHEEL_DIR) $$out/unpacked/leakguard_oom-*; \
			rm -rf $$out;; \
		esac; \
		wheel=$$(ls $(WHEEL_DIR)/leakguard_oom-*$$tag*.whl); \
		$(VENV_BIN)/auditwheel show "$$wheel" | tee $(WHEEL_DIR)/auditwheel-$$tag.txt; \
		grep -q "\"$$tag\"" $(WHEEL_DIR)/auditwheel-$$tag.txt || { echo "error: auditwheel does not give $$wheel the tag $$tag" >&2; exit 1; }; \
	done
	$(VENV_BIN)/maturin sdist --manifest-path $(PY_CRATE)/Cargo.toml --out $(WHEEL_DIR)
	ls -l $(WHEEL_DIR)/leakguard_oom-*

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

## py-versions: the wheel claims CPython >= 3.9 (abi3); this runs the caches' tests and
## cachetools' own suite (8.0.1 on >= 3.11, 5.5.2 below: see test_cachetools_suite.py) on every
## CPython >= 3.9 found besides the one of .venv (py-test covers that one): pyenv's
## ($$PYENV_ROOT/versions, default ~/.pyenv/versions) and python3.X on PATH, one per minor
## version. Each gets a venv in target/py-versions/3.X with pytest and cachetools from PyPI
## (once) and the test wheel installed from its file. It prints which versions ran, and says
## plainly when it found none besides .venv's (that is not a failure: the machine has one).
PY_VERSION_TESTS := $(PY_CRATE)/tests/test_cache.py $(PY_CRATE)/tests/test_cache_decorators.py $(PY_CRATE)/tests/test_cachetools_suite.py
PY_VERSIONS_DIR := target/py-versions
GETSIZEOF_ORACLE := test_lru_with_getsizeof_matches_cachetools
py-versions: wheel
	@own=$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	declare -A found=(); \
	for cand in "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/*/bin/python3 $$(compgen -c python3. | sort -u); do \
		exe=$$(command -v "$$cand" 2>/dev/null) || continue; \
		ver=$$("$$exe" -c 'import sys; print("%d.%d" % sys.version_info[:2]) if sys.implementation.name == "cpython" and sys.version_info >= (3, 9) else None' 2>/dev/null) || continue; \
		case $$ver in 3.*) ;; *) continue;; esac; \
		[ "$$ver" = "$$own" ] || [ -n "$${found[$$ver]:-}" ] || found[$$ver]=$$exe; \
	done; \
	versions=$$(printf '%s\n' "$${!found[@]}" | sort -t. -k2,2n); \
	if [ -z "$$versions" ]; then \
		echo "py-versions: found no CPython >= 3.9 besides .venv's $$own: the cache tests run on $$own only (py-test)"; \
		exit 0; \
	fi; \
	wheel=$$(ls $(TEST_WHEEL_DIR)/leakguard_oom-*.whl); ran=(); failed=(); \
	for ver in $$versions; do \
		venv=$(PY_VERSIONS_DIR)/$$ver; \
		echo "== py-versions: Python $$ver ($${found[$$ver]})"; \
		if [ ! -e $$venv/.installed ]; then \
			rm -rf $$venv; "$${found[$$ver]}" -m venv $$venv; \
			$$venv/bin/python -m pip install --quiet --disable-pip-version-check "pytest>=8.3,<10" \
				'cachetools==8.0.1; python_version >= "3.11"' 'cachetools==5.5.2; python_version < "3.11"'; \
			touch $$venv/.installed; \
		fi; \
		$$venv/bin/python -m pip install --quiet --disable-pip-version-check --no-index --no-deps --force-reinstall "$$wheel"; \
		deselect=(); \
		if [ "$${ver#3.}" -lt 11 ]; then \
			echo "py-versions: Python $$ver has cachetools 5.5.2 as the oracle: test_cache.py::$(GETSIZEOF_ORACLE) deselected (cachetools 5 evicts for the whole new size when a key gets a larger value, 8 for the difference; leakguard follows 8)"; \
			deselect=(-k "not $(GETSIZEOF_ORACLE)"); \
		fi; \
		if $$venv/bin/python -m pytest -q -p no:cacheprovider "$${deselect[@]}" $(PY_VERSION_TESTS); then ran+=("$$ver"); else failed+=("$$ver"); fi; \
	done; \
	echo "py-versions: the cache tests passed on Python $${ran[*]:-(none)}$${failed:+, FAILED on $${failed[*]}} ($$own, .venv's, is py-test's)"; \
	[ $${#failed[@]} -eq 0 ]

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

## lint: rustfmt, clippy with warnings as errors, mypy --strict on the Python package, its tests,
## the Python benchmarks and the end-to-end tests of tests/python (on their own: both test
## folders have a conftest.py; tests/python imports the package tests' cargo_workspace helper).
lint: venv
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	$(PY) -m mypy --strict --cache-dir $(VENV)/.mypy_cache $(PY_CRATE)/python/leakguard $(PY_CRATE)/tests benches/python
	MYPYPATH=$(PY_CRATE)/tests $(PY) -m mypy --strict --cache-dir $(VENV)/.mypy_cache tests/python
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
