# Two commands do everything: `make reports` and `make test`. Each creates .venv when missing.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0
# Keras' cache (downloaded ImageNet files, converted EfficientNet-Lite weights): ~/.keras unless you set KERAS_HOME.
export KERAS_HOME ?= $(HOME)/.keras

.PHONY: test reports bench clean venv test-fast lint fuzz tensorboard serve bench-serve
venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -U pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	# TensorFlow's C++ start-up lines go to the kernel's stderr, not into notebook outputs
	mkdir -p $(VENV)/etc/ipython
	echo 'c.IPKernelApp.capture_fd_output = False' > $(VENV)/etc/ipython/ipython_kernel_config.py
	touch $@

# Tests never download: `weights=auto` uses the Keras cache or EfficientNet-Lite0 ImageNet from its pip package.
test: export FRACTURELIB_OFFLINE := 1
# Test order is shuffled by pytest-randomly with a fixed seed (`make test TEST_ORDER_SEED=N` tries another
# order; `TEST_ORDER_SEED=last` repeats the last one). Notebook cells run in order: they are steps, not tests.
TEST_ORDER_SEED ?= 17
# Test files are spread over TEST_WORKERS processes (pytest-xdist; a file's tests stay in one process, so its
# module fixtures are built once; session fixtures once per process): 2 matches CI's 2 cores;
# `make test TEST_WORKERS=0` runs them all in this process.
TEST_WORKERS ?= 2
test: venv lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -p randomly --randomly-seed=$(TEST_ORDER_SEED) tests
	FRACTURELIB_PROFILE=ci FRACTURELIB_QUIET=1 $(BIN)/python -m pytest -q --nbval-lax --sanitize-with notebooks/sanitize.cfg -p no:cacheprovider -p no:randomly notebooks

# ruff, the layer contract (pyproject's [tool.importlinter]: data < metrics < models < explain < workflow < app),
# and Google-style docstrings (Args/Returns) on every public function
lint: venv
	$(BIN)/ruff check fracturelib tests bench scripts
	$(BIN)/lint-imports --no-cache
	$(BIN)/python scripts/check_docstrings.py --strict

# the property-based tests with many more examples than `make test` gives them (minutes)
fuzz: export FRACTURELIB_OFFLINE := 1
fuzz: venv
	FRACTURELIB_FUZZ_EXAMPLES=2000 $(BIN)/python -m pytest -q -p no:randomly tests -k "propert"

test-fast: venv
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -p no:randomly tests -m "not slow"

reports: venv
	$(BIN)/fracturelib run --profile quick --out reports

# training curves of every run (written by notebooks 02 and 03 into their artifacts folders)
tensorboard: venv
	$(BIN)/tensorboard --logdir reports/artifacts

# the web app on http://127.0.0.1:7860 over the models `make reports` writes (cached: seconds when they exist);
# `make serve HOST=0.0.0.0 PORT=8080` to listen elsewhere. A research tool, not a medical device.
HOST ?= 127.0.0.1
PORT ?= 7860
serve: reports
	GRADIO_ANALYTICS_ENABLED=False $(BIN)/fracturelib serve --models models --host $(HOST) --port $(PORT)

# the web app under load: 8 clients x 25 requests on loopback (tiny models; prints failures, p50/p95, memory)
bench-serve: venv
	$(BIN)/python bench/serve.py

bench: venv
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/reports.py
	$(BIN)/python bench/transfer.py
	$(BIN)/python bench/scan.py

clean:
	rm -rf reports/*.html reports/*.ipynb reports/*/ .pytest_cache
